"""Pure ML library: schema, validation, cleaning, features, split, train, tune, evaluate.

Also explanations and the deployment gate. Plain typed functions and small frozen
dataclasses that know nothing of KFP, S3 or HTTP. Import the submodules directly: this
package imports none of them, so the model server can load ``closedloop.ml.schema``,
``closedloop.ml.features`` and ``closedloop.ml.explain`` without pulling in pandera or
matplotlib.
"""
