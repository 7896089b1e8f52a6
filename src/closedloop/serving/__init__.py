"""The model server: Seldon Core's python wrapper running :mod:`closedloop.serving.model`.

Submodules are imported on their own: :mod:`closedloop.serving.model` needs the
serving environment (seldon-core, protobuf 5), while
:mod:`closedloop.serving.messages` and :mod:`closedloop.serving.request_logger` also
load in the pipeline environment. Nothing here may import kfp.
"""
