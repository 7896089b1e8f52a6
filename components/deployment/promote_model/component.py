"""Make a registered version the champion (run only after a passed gate)."""

from kfp import dsl
from kfp.dsl import Artifact, Input

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def promote_model(
    registry_uri: str,
    model_name: str,
    version: str,
    gate: Input[Artifact],
    backend: str = "local",
) -> str:
    """Move the champion pointer to *version* and record the move.

    Model servers serving ``champion`` pick the new version up without a restart. On
    Kubernetes the pointer must not name a version the cluster does not serve yet: with
    ``backend="kubernetes"`` this step only checks the gate, and the deploy step moves
    the pointer once the rollout serves the version.

    Args:
        registry_uri: The model registry (``s3://bucket/prefix`` or a local directory).
        model_name: Registered model name.
        version: The version to promote.
        gate: The gate's decision (JSON); it must say passed, and its reason is kept in
            the pointer and its history.
        backend: The run's deploy backend (``local``, ``kubernetes``, ``none``).

    Returns:
        The previous champion's version ("" if there was none).
    """
    import json
    from pathlib import Path

    from closedloop.registry import Registry
    from closedloop.storage import Store

    verdict = json.loads(Path(gate.path).read_text())
    if not verdict.get("passed"):
        raise ValueError(
            f"refusing to promote {model_name} {version}: the gate rejected it ({verdict.get('reason')})"
        )
    if backend == "kubernetes":
        print(f"{model_name} {version}: the deploy step promotes it once the cluster serves it")
        return ""
    pointer = Registry(Store(), registry_uri).promote(model_name, version, str(verdict["reason"]))
    print(f"{model_name}: champion {pointer.previous or '(none)'} -> {pointer.version}")
    return pointer.previous or ""
