"""Roll a promoted version out to serving, through the backend chosen by a parameter."""

from kfp import dsl

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def deploy_model(
    model_name: str,
    version: str,
    backend: str = "local",
    registry_uri: str = "s3://closedloop/registry",
    endpoint: str = "",
    namespace: str = "closedloop",
    deployment_name: str = "closedloop",
    timeout_seconds: float = 600.0,
) -> str:
    """Serve *version* and return once the serving side answers with it.

    Args:
        model_name: Registered model name.
        version: The promoted version.
        backend: ``local``: model servers on this machine serve ``champion`` and swap to
            a promoted version by themselves; with ``endpoint`` set, wait until that
            server answers with *version*. ``kubernetes``: create or patch the
            SeldonDeployment (model + drift sidecar) pinned to *version*, wait until it is
            Available, roll back to the previous spec on failure. ``none``: do nothing.
        registry_uri: The model registry the servers load from.
        endpoint: Local backend: the model server's URL to verify (empty: no check).
        namespace: Kubernetes backend: the SeldonDeployment's namespace.
        deployment_name: Kubernetes backend: the SeldonDeployment's name.
        timeout_seconds: Longest wait for the rollout.

    Returns:
        One line saying what serves where.
    """
    import time
    from dataclasses import replace

    if backend == "none":
        return f"{model_name} {version}: not deployed (backend none)"
    if backend == "kubernetes":
        from closedloop.deploy.kubernetes import KubernetesDeployer, SeldonDeployer
        from closedloop.deploy.seldon import BASE_CONFIG

        config = replace(
            BASE_CONFIG, name=deployment_name, namespace=namespace, registry_uri=registry_uri
        )
        deployer = SeldonDeployer(
            config, KubernetesDeployer(namespace, timeout_seconds=timeout_seconds)
        )
        info = deployer.deploy(model_name, version)
        print(info.detail)
        return f"{model_name} {info.serving_version} serves in {namespace}/{deployment_name}"
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
