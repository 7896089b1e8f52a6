"""Move the champion pointer only once the cluster serves the new version.

Promoting first and deploying second leaves the registry's champion pointing at a
version the cluster does not serve whenever the rollout fails and is rolled back. The
deploy step of a Kubernetes run calls :func:`roll_out_then_promote` instead: the
pointer moves after the rollout succeeded, and not at all otherwise.
"""

from __future__ import annotations

from typing import Any, Protocol

from closedloop.deploy import DeployError
from closedloop.deploy.kubernetes import RolloutResult, SeldonDeployer


class ChampionRegistry(Protocol):
    """The part of :class:`closedloop.registry.Registry` this needs."""

    def promote(self, model_name: str, version: str, reason: str) -> Any:
        """Point the champion at *version* and record why."""
        ...


def roll_out_then_promote(
    deployer: SeldonDeployer,
    registry: ChampionRegistry,
    model_name: str,
    version: str,
    reason: str,
) -> RolloutResult:
    """Roll *version* out; if and only if it then serves, make it the champion.

    Args:
        deployer: The SeldonDeployment to roll out to.
        registry: Where the champion pointer lives.
        model_name: Registered model name.
        version: The version that passed the gate.
        reason: Why it is promoted (the gate's reason), kept with the pointer.

    Returns:
        The rollout's result; the pointer was moved.

    Raises:
        closedloop.deploy.DeployError: The rollout failed (the error's ``result`` says
            what serves); the pointer was not moved.
    """
    result = deployer.roll_out(model_name, version)
    if not result.succeeded:
        raise DeployError(
            f"{model_name} {version} does not serve after its rollout ({result.detail}); "
            "the champion pointer was not moved"
        )
    registry.promote(model_name, version, reason)
    return result
