"""The one interface every deploy backend implements.

A backend puts a registered model version behind a model server: locally a
``seldon-core-microservice`` process (:class:`closedloop.deploy.local.LocalDeployer`),
in a cluster a SeldonDeployment. Callers (the deploy pipeline step, the CLI, the
retrain loop) hold a :class:`Deployer` and never branch on the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class DeploymentInfo:
    """Where a model is served and whether it answers.

    Attributes:
        backend: ``local`` or ``kubernetes``.
        model_name: Registered model name.
        requested_version: What was asked for: ``champion`` or ``v<N>``.
        serving_version: The version answering requests, when known.
        url: Base URL of the prediction API (``/api/v1.0/predictions`` below it).
        ready: Whether the server reports ready.
        detail: One line about the state (why it is not ready, what changed).
    """

    backend: str
    model_name: str
    requested_version: str
    serving_version: str | None
    url: str | None
    ready: bool
    detail: str = ""


@runtime_checkable
class Deployer(Protocol):
    """Serve a registered model version, report on it, take it down."""

    def deploy(self, model_name: str, version: str) -> DeploymentInfo:
        """Serve *version* (``champion`` or ``v<N>``) of *model_name*; return once it answers.

        Raises:
            closedloop.deploy.DeployError: The version could not be served; whatever
                served before keeps serving where the backend allows it.
        """
        ...

    def status(self) -> DeploymentInfo:
        """Report what is served now.

        Raises:
            closedloop.deploy.DeployError: Nothing is deployed, or the backend cannot
                be reached.
        """
        ...

    def teardown(self) -> None:
        """Stop serving and release what :meth:`deploy` created (idempotent)."""
        ...
