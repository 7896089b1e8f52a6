"""Roll a promoted version out to serving, through the backend chosen by a parameter."""

from kfp import dsl
from kfp.dsl import Artifact, Input

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def deploy_model(
    model_name: str,
    version: str,
    backend: str = "kubernetes",
    registry_uri: str = "s3://closedloop/registry",
    endpoint: str = "",
    namespace: str = "closedloop",
    deployment_name: str = "closedloop",
    timeout_seconds: float = 600.0,
    retry_failed: bool = False,
    gate: Input[Artifact] = None,
) -> str:
    """Serve *version* and return once the serving side answers with it.

    Args:
        model_name: Registered model name.
        version: The promoted version.
        backend: ``local``: model servers on this machine serve ``champion`` and swap to
            a promoted version by themselves; with ``endpoint`` set, wait until that
            server answers with *version*. ``kubernetes``: create the SeldonDeployment
            (model + drift sidecar) pinned to *version*, or patch only the fields that
            carry the version in the live one; wait until its Deployments have rolled
            out; roll back on failure. ``none``: do nothing.
        registry_uri: The model registry the servers load from.
        endpoint: Local backend: the model server's URL to verify (empty: no check).
        namespace: Kubernetes backend: the SeldonDeployment's namespace.
        deployment_name: Kubernetes backend: the SeldonDeployment's name.
        timeout_seconds: Longest wait for the rollout.
        retry_failed: Kubernetes backend: roll out a version whose earlier rollout here
            failed (by default such a version is refused, so a retried step does not
            repeat a failed rollout).
        gate: Kubernetes backend: the gate's passed decision. Given, the champion
            pointer moves to *version* once it serves, and not at all when the rollout
            fails, so the registry never names a champion the cluster does not serve.

    Returns:
        One line saying what serves where.
    """
    import time
    from dataclasses import replace

    if backend == "none":
        return f"{model_name} {version}: not deployed (backend none)"
    if backend == "kubernetes":
        import json
        from pathlib import Path

        from closedloop.deploy.kubernetes import KubernetesDeployer, SeldonDeployer
        from closedloop.deploy.promotion import roll_out_then_promote
        from closedloop.deploy.seldon import BASE_CONFIG
        from closedloop.registry import Registry
        from closedloop.storage import Store

        verdict = {} if gate is None else json.loads(Path(gate.path).read_text())
        if gate is not None and not verdict.get("passed"):
            raise ValueError(
                f"refusing to roll out {model_name} {version}: the gate rejected it "
                f"({verdict.get('reason')})"
            )
        config = replace(
            BASE_CONFIG, name=deployment_name, namespace=namespace, registry_uri=registry_uri
        )
        deployer = SeldonDeployer(
            config,
            KubernetesDeployer(namespace, timeout_seconds=timeout_seconds),
            retry_failed=retry_failed,
        )
        if gate is None:
            info = deployer.deploy(model_name, version)
            print(info.detail)
            return f"{model_name} {info.serving_version} serves in {namespace}/{deployment_name}"
        registry = Registry(Store(), registry_uri)
        result = roll_out_then_promote(
            deployer, registry, model_name, version, str(verdict["reason"])
        )
        print(result.detail)
        return (
            f"{model_name} {result.served_version} serves in {namespace}/{deployment_name} "
            "and is the champion"
        )
    if backend != "local":
        raise ValueError(f"unknown deploy backend {backend!r}: use local, kubernetes or none")
    if not endpoint:
        return f"{model_name} {version}: local servers serving 'champion' pick it up by themselves"
    import requests

    def served_version(body: object) -> str:
        # /health/status carries the served version somewhere in the wrapper's envelope.
        if isinstance(body, dict):
            if "model_version" in body:
                return str(body["model_version"])
            return next((v for v in map(served_version, body.values()) if v), "")
        if isinstance(body, list):
            return next((v for v in map(served_version, body) if v), "")
        return ""

    deadline = time.monotonic() + timeout_seconds
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen = served_version(
                requests.get(f"{endpoint.rstrip('/')}/health/status", timeout=5).json()
            )
        except (OSError, ValueError):
            seen = "unreachable"
        if seen == version:
            return f"{model_name} {version} serves at {endpoint}"
        time.sleep(2)
    raise TimeoutError(
        f"{endpoint} still serves {seen or 'an unknown version'} after {timeout_seconds:.0f}s, not {version}"
    )
