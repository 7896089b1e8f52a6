"""Deployment backends: where a registered model version gets served.

``closedloop.deploy.seldon`` builds the SeldonDeployment resource as plain data (no
Kubernetes client needed); ``closedloop.deploy.kubernetes`` applies it to a cluster and
imports the ``kubernetes`` package only when it talks to the API server.
"""

from __future__ import annotations

from closedloop.errors import ClosedLoopError


class DeployError(ClosedLoopError):
    """Base class of every deployment failure, whatever the backend.

    Messages say what failed and what to do about it, in one line, so a CLI or a KFP
    step can print them as they are.
    """
