"""Offline checks of manifests/: rendering, schemas, Pod Security, secrets, wiring."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import yaml

from closedloop import images
from closedloop.deploy import seldon
from closedloop.drift.policy import DriftPolicy

# Oldest Kubernetes we support (and kubernetes-validate still ships) and the newest it has.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
CRD_KINDS = {"SeldonDeployment", "PodMonitor", "ServiceMonitor"}


def _core_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] not in CRD_KINDS]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


# (a) every kustomize entry point renders -------------------------------------------------


def test_every_overlay_renders_the_expected_kinds(rendered: dict[str, list[dict]]) -> None:
    expected = {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "SeldonDeployment",
        "Deployment",
        "Service",
        "NetworkPolicy",
    }
    for name, docs in rendered.items():
        kinds = {doc["kind"] for doc in docs}
        assert expected <= kinds, f"{name} lacks {sorted(expected - kinds)}"
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == "closedloop", doc["metadata"]
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "closedloop"


def test_overlays_use_kustomize_v5_fields_only(k8s: SimpleNamespace) -> None:
    deprecated = {"patchesStrategicMerge", "patchesJson6902", "commonLabels", "bases", "vars"}
    for path in (k8s.repo / "manifests").rglob("kustomization.yaml"):
        used = deprecated & set(yaml.safe_load(path.read_text()))
        assert not used, f"{path} uses deprecated kustomize fields {sorted(used)}"


def test_every_kustomization_is_rendered(
    rendered: dict[str, list[dict]], k8s: SimpleNamespace
) -> None:
    manifests = k8s.repo / "manifests"
    found = {
        str(path.parent.relative_to(manifests)) for path in manifests.rglob("kustomization.yaml")
    }
    assert found == set(rendered)


def test_a_broken_patch_fails_the_render(k8s: SimpleNamespace, tmp_path: Path) -> None:
    overlay = tmp_path / "broken"
    overlay.mkdir()
    base = k8s.repo / "manifests" / "base"
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(base)],
                "patches": [
                    {
                        "target": {"kind": "SeldonDeployment", "name": "closedloop"},
                        "patch": "- op: test\n  path: /spec/predictors/0/name\n  value: nope\n",
                    }
                ],
            }
        )
    )
    with pytest.raises(AssertionError, match="kubectl kustomize"):
        k8s.kustomize(overlay)


# (b) core kinds pass kubernetes-validate --strict -----------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_kinds_pass_strict_kubernetes_validation(
    rendered: dict[str, list[dict]], version: str
) -> None:
    failures = []
    for name, docs in rendered.items():
        for doc in _core_docs(docs):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = "/".join(map(str, error.path))
                failures.append(f"{name} {doc['kind']}/{doc['metadata']['name']}: {path}: {error}")
    assert not failures, "\n".join(failures)


def test_strict_validation_rejects_an_unknown_field(rendered: dict[str, list[dict]]) -> None:
    trigger = copy.deepcopy(_one(rendered["base"], "Deployment", "closedloop-trigger"))
    trigger["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(trigger, K8S_VERSIONS[-1], strict=True)


# (c) rendered SeldonDeployments against the CRD ---------------------------------------------


def test_rendered_seldon_deployments_match_the_crd(
    rendered: dict[str, list[dict]], validate_seldon: Any
) -> None:
    for name, docs in rendered.items():
        (sdep,) = _by_kind(docs, "SeldonDeployment")
        assert validate_seldon(sdep) == [], name


def test_prod_overlay_scales_up(rendered: dict[str, list[dict]]) -> None:
    base = _one(rendered["base"], "SeldonDeployment", "closedloop")["spec"]["predictors"][0]
    prod = _one(rendered["overlays/prod"], "SeldonDeployment", "closedloop")["spec"]["predictors"][
        0
    ]
    base_hpa, prod_hpa = base["componentSpecs"][0]["hpaSpec"], prod["componentSpecs"][0]["hpaSpec"]
    assert prod_hpa["minReplicas"] > base_hpa["minReplicas"]
    assert prod_hpa["maxReplicas"] > base_hpa["maxReplicas"]
    base_model = base["componentSpecs"][0]["spec"]["containers"][0]
    prod_model = prod["componentSpecs"][0]["spec"]["containers"][0]
    assert seldon.parse_quantity(prod_model["resources"]["requests"]["cpu"]) > (
        seldon.parse_quantity(base_model["resources"]["requests"]["cpu"])
    )
    workers = {env["name"]: env.get("value") for env in prod_model["env"]}["GUNICORN_WORKERS"]
    assert int(workers) > 1
    trigger = _one(rendered["overlays/prod"], "Deployment", "closedloop-trigger")
    assert trigger["spec"]["replicas"] >= 2
    assert _one(rendered["overlays/prod"], "PodDisruptionBudget", "closedloop-trigger")


# (d) restricted Pod Security on every pod template ------------------------------------------


def test_every_pod_template_meets_the_restricted_profile(
    rendered: dict[str, list[dict]], k8s: SimpleNamespace
) -> None:
    problems, checked = [], 0
    for name, docs in rendered.items():
        for doc in docs:
            for where, spec, in_seldon in k8s.pod_specs(doc):
                checked += 1
                problems += k8s.restricted_violations(
                    spec, f"{name} {where}", container_level=in_seldon
                )
    assert checked >= 5
    assert not problems, "\n".join(problems)


def test_every_container_is_hardened_and_sized(
    rendered: dict[str, list[dict]], k8s: SimpleNamespace
) -> None:
    problems = []
    for name, docs in rendered.items():
        for doc in docs:
            for where, spec, _ in k8s.pod_specs(doc):
                if spec.get("automountServiceAccountToken") is not False:
                    problems.append(f"{name} {where}: mounts a Kubernetes API token")
                for container in k8s.all_containers(spec):
                    at = f"{name} {where} {container['name']}"
                    if container["securityContext"].get("readOnlyRootFilesystem") is not True:
                        problems.append(f"{at}: root filesystem is writable")
                    for bound in ("requests", "limits"):
                        got = set((container.get("resources") or {}).get(bound) or {})
                        if not {"cpu", "memory"} <= got:
                            problems.append(f"{at}: {bound} lack cpu or memory")
                    for probe in ("readinessProbe", "livenessProbe"):
                        if probe not in container:
                            problems.append(f"{at}: no {probe}")
                    if ":" not in container["image"] or container["image"].endswith(":latest"):
                        problems.append(f"{at}: image {container['image']} is not pinned")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_privileged_pod(k8s: SimpleNamespace) -> None:
    bad = {
        "hostNetwork": True,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [
            {"name": "c", "image": "x:1", "securityContext": {"privileged": True, "runAsUser": 0}}
        ],
    }
    problems = "\n".join(k8s.restricted_violations(bad, "bad"))
    for expected in (
        "hostNetwork",
        "hostPath",
        "privileged",
        "allowPrivilegeEscalation",
        "drop lacks ALL",
        "runAsNonRoot",
        "runAsUser is 0",
        "seccompProfile",
    ):
        assert expected in problems


def test_namespace_enforces_baseline_and_audits_restricted(
    rendered: dict[str, list[dict]],
) -> None:
    for docs in rendered.values():
        labels = _one(docs, "Namespace", "closedloop")["metadata"]["labels"]
        # restricted cannot be enforced: Seldon's injected executor container lacks
        # capabilities.drop and seccomp (SeldonIO/seldon-core#5481); see namespace.yaml.
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
        assert labels["pod-security.kubernetes.io/warn"] == "restricted"
        assert labels["pod-security.kubernetes.io/audit"] == "restricted"


# (f) no literal secret in any manifest --------------------------------------------------------

SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL", re.I)
SECRET_TEXT = [
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(
        r"(?i)(secret|password|passwd|token)[\w-]*[ \t]*[:=][ \t]*['\"]?[A-Za-z0-9/+=]{16,}"
    ),
]


def _literal_secrets(docs: list[dict[str, Any]], k8s: SimpleNamespace) -> list[str]:
    problems = []
    for doc in docs:
        ref = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Secret":
            problems.append(f"{ref}: Secrets are created by the user, never committed")
        for where, spec, _ in k8s.pod_specs(doc):
            for container in k8s.all_containers(spec):
                for env in container.get("env") or []:
                    name = env["name"]
                    is_path = name.endswith(("_PATH", "_FILE", "_DIR"))
                    if "value" in env and SECRET_NAME.search(name) and not is_path:
                        problems.append(f"{where} {container['name']}: {name} has a literal value")
                    aws_credential = name.startswith("AWS_") and name.endswith(("_KEY", "_KEY_ID"))
                    if aws_credential and "secretKeyRef" not in env.get("valueFrom", {}):
                        problems.append(f"{where}: {name} does not come from a secretKeyRef")
    return problems


def test_no_literal_secret_in_rendered_manifests(
    rendered: dict[str, list[dict]], k8s: SimpleNamespace
) -> None:
    problems = []
    for name, docs in rendered.items():
        problems += [f"{name} {p}" for p in _literal_secrets(docs, k8s)]
    assert not problems, "\n".join(problems)


def test_no_secret_material_in_committed_files(k8s: SimpleNamespace) -> None:
    files = [
        *(k8s.repo / "manifests").rglob("*"),
        *(k8s.repo / "images").rglob("*"),
        k8s.repo / "skaffold.yaml",
        k8s.repo / ".dockerignore",
    ]
    problems = []
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text()
        for pattern in SECRET_TEXT:
            problems += [f"{path}: {m.group(0)[:40]}" for m in pattern.finditer(text)]
        if path.name == "kustomization.yaml" and "secretGenerator" in yaml.safe_load(text):
            problems.append(f"{path}: secretGenerator commits secret values")
    assert not problems, "\n".join(problems)


def test_the_secret_checks_catch_a_leak(rendered: dict[str, list[dict]], k8s: SimpleNamespace):
    trigger = copy.deepcopy(_one(rendered["base"], "Deployment", "closedloop-trigger"))
    env = trigger["spec"]["template"]["spec"]["containers"][0]["env"]
    env.append(
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    )
    leak = {"kind": "Secret", "metadata": {"name": "s3"}, "stringData": {"key": "v"}}
    problems = "\n".join(_literal_secrets([trigger, leak], k8s))
    assert "has a literal value" in problems
    assert "does not come from a secretKeyRef" in problems
    assert "Secrets are created by the user" in problems
    assert SECRET_TEXT[2].search("aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCY")


# wiring: the names the pieces use for each other agree ----------------------------------------


def test_serving_and_trigger_agree_on_names(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["overlays/dev"]
    sdep = _one(docs, "SeldonDeployment", "closedloop")
    spec = sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]
    _one(docs, "ServiceAccount", spec["serviceAccountName"])
    sidecar = next(c for c in spec["containers"] if c["name"] == seldon.SIDECAR_CONTAINER)
    args = sidecar["args"]
    trigger_url = args[args.index("--trigger-url") + 1]
    service = _one(docs, "Service", "closedloop-trigger")
    assert (
        trigger_url
        == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/"
    )
    policy_volume = next(v for v in spec["volumes"] if "configMap" in v)
    policy = _one(docs, "ConfigMap", policy_volume["configMap"]["name"])
    text = policy["data"][seldon.POLICY_FILE]
    # Every knob is spelled out for the operator, and the file is a policy the services accept.
    assert set(yaml.safe_load(text)) == {f.name for f in dataclasses.fields(DriftPolicy)}
    DriftPolicy.from_json(text)
    trigger = _one(docs, "Deployment", "closedloop-trigger")["spec"]["template"]["spec"]
    trigger_args = trigger["containers"][0]["args"]
    assert trigger_args[trigger_args.index("--policy") + 1] == args[args.index("--policy") + 1]
    assert (
        trigger_args[trigger_args.index("--registry-uri") + 1]
        == (args[args.index("--registry-uri") + 1])
    )
    s3 = _one(docs, "ConfigMap", "closedloop-s3-settings")["data"]["endpoint"]
    store = _one(docs, "Service", "closedloop-s3")
    assert s3 == f"http://{store['metadata']['name']}.closedloop.svc.cluster.local:8333"


def test_network_policies_default_deny_and_open_only_declared_ports(
    rendered: dict[str, list[dict]],
) -> None:
    for name, docs in rendered.items():
        policies = {p["metadata"]["name"]: p["spec"] for p in _by_kind(docs, "NetworkPolicy")}
        deny = policies["default-deny-all"]
        assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
        assert "ingress" not in deny and "egress" not in deny
        serving_ports = {
            p["port"] for rule in policies["model-server"]["ingress"] for p in rule["ports"]
        }
        # the sidecar's CloudEvents port must stay private to the pod
        assert seldon.SeldonDeploymentConfig().sidecar_port not in serving_ports, name
        assert 8000 in serving_ports


def test_deployer_rbac_is_namespaced_and_minimal(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["base"]
    assert not _by_kind(docs, "ClusterRole") and not _by_kind(docs, "ClusterRoleBinding")
    rule, deployments = _one(docs, "Role", "closedloop-deployer")["rules"]
    assert rule["apiGroups"] == ["machinelearning.seldon.io"]
    assert rule["resources"] == ["seldondeployments"]
    assert set(rule["verbs"]) == {"get", "list", "watch", "create", "patch"}
    # The rollout wait lists the operator-owned Deployments, nothing more.
    assert deployments == {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]}
    trigger_rules = _one(docs, "Role", "closedloop-trigger")["rules"]
    assert {g for r in trigger_rules for g in r["apiGroups"]} == {"pipelines.kubeflow.org"}
    accounts = {sa["metadata"]["name"]: sa for sa in _by_kind(docs, "ServiceAccount")}
    assert accounts["closedloop-serving"]["automountServiceAccountToken"] is False
    assert accounts["closedloop-trigger"]["automountServiceAccountToken"] is False


def test_manifests_use_the_image_constants(rendered: dict[str, list[dict]], k8s) -> None:
    names = {
        ref.rsplit(":", 1)[0]
        for ref in (images.DEFAULT_SERVING_IMAGE, images.DEFAULT_MONITOR_IMAGE)
    }
    used = set()
    for doc in rendered["base"]:
        for _, spec, _ in k8s.pod_specs(doc):
            used |= {c["image"] for c in k8s.all_containers(spec)}
    assert used == {images.DEFAULT_SERVING_IMAGE, images.DEFAULT_MONITOR_IMAGE}
    assert {ref.rsplit(":", 1)[0] for ref in used} == names
