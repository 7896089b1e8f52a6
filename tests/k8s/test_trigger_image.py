"""The trigger's retraining runs follow the component image the deployment rewrote.

The trigger reads ``CLOSEDLOOP_COMPONENT_IMAGE`` from its pod template's ``image``
annotation (Downward API) and ``CLOSEDLOOP_IMAGE_PULL_SECRETS`` from the ConfigMap
``closedloop-kfp`` (see manifests/base/trigger.yaml). These tests render the overlays
with the real kustomize, resolve the trigger container's environment as the kubelet
would, and hand it to the CLI's own parsing, so what is checked is the value the
trigger would submit runs with.

Skaffold is not installed here; :func:`skaffold_retag` restates the rule its
kubectl/kustomize deployers apply after rendering (GoogleContainerTools/skaffold
``pkg/skaffold/kubernetes/manifest/images.go`` and ``visitor.go``: in an allowed kind
such as ``Deployment.apps``, whose default image selector is ``.*``, every key named
``image``, at any depth, whose repository is a built artifact gets the built tag;
references by digest are left alone).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from closedloop import images
from closedloop.cli.trigger import component_image_of, image_pull_secrets_of

COMPONENT = images.DEFAULT_COMPONENT_IMAGE.rsplit(":", 1)[0]
ANNOTATION = re.compile(r"metadata\.annotations\['([^']+)'\]")
# Kinds whose every `image` key skaffold rewrites by default (TransformAllowlist).
SKAFFOLD_KINDS = {"Pod", "Deployment", "DaemonSet", "ReplicaSet", "StatefulSet", "Job", "CronJob"}


def _trigger(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "closedloop-trigger"
    ]
    return found


def trigger_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The trigger container's environment as the kubelet would set it (Secrets left out)."""
    pod = _trigger(docs)["spec"]["template"]
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "trigger"]
    config_maps = {
        d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"
    }
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        source = entry.get("valueFrom") or {}
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in source:
            match = ANNOTATION.fullmatch(source["fieldRef"]["fieldPath"])
            if match:  # the Downward API gives "" for a missing annotation
                annotations = pod["metadata"].get("annotations") or {}
                env[entry["name"]] = annotations.get(match.group(1), "")
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = config_maps.get(ref["name"])
            assert data is not None or ref.get("optional"), f"no ConfigMap {ref['name']}"
            if data is not None and ref["key"] in data:
                env[entry["name"]] = data[ref["key"]]
            else:
                assert ref.get("optional"), f"ConfigMap {ref['name']} lacks {ref['key']}"
    return env


def configured_image(docs: list[dict[str, Any]]) -> str | None:
    """The component image the trigger would submit runs with."""
    return component_image_of(None, trigger_env(docs))


def rewritten(reference: str, entries: list[dict[str, str]]) -> str:
    """Apply a kustomization's ``images:`` entries to *reference* (name:tag, no digest)."""
    name, tag = reference.rsplit(":", 1)
    for entry in entries:
        if entry["name"] == name:
            new_name = entry.get("newName", name)
            if "digest" in entry:
                return f"{new_name}@{entry['digest']}"
            return f"{new_name}:{entry.get('newTag', tag)}"
    return reference


def overlay_images(k8s: SimpleNamespace, overlay: str) -> list[dict[str, str]]:
    path = k8s.repo / "manifests" / overlay / "kustomization.yaml"
    return yaml.safe_load(path.read_text()).get("images") or []


def skaffold_retag(docs: list[dict[str, Any]], built: dict[str, str]) -> list[dict[str, Any]]:
    """What skaffold's image replacement does to rendered manifests (see the module doc)."""

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "image" and isinstance(value, str):
                    repository = re.sub(r":[^:/]+$", "", value)
                    if "@" not in value and repository in built:
                        node[key] = built[repository]
                else:
                    visit(value)

    out = copy.deepcopy(docs)
    for doc in out:
        if doc["kind"] in SKAFFOLD_KINDS:
            visit(doc)
    return out


def extend(k8s: SimpleNamespace, tmp_path: Path, overlay: str, extra: dict[str, Any]) -> Path:
    """A kustomization on top of *overlay* with *extra* fields."""
    target = tmp_path / overlay.replace("/", "-")
    target.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize refuses an absolute path to a directory of resources.
        "resources": [os.path.relpath(k8s.repo / "manifests" / overlay, target)],
        **extra,
    }
    (target / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return target


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_the_trigger_uses_the_overlays_component_image(
    rendered: dict[str, list[dict]], k8s: SimpleNamespace, overlay: str
) -> None:
    expected = rewritten(images.DEFAULT_COMPONENT_IMAGE, overlay_images(k8s, overlay))
    assert configured_image(rendered[overlay]) == expected
    assert image_pull_secrets_of(None, trigger_env(rendered[overlay])) == ()


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"newName": "registry.example/ml/component", "newTag": "3f2a9c1"}, None),
        ({"newTag": "0.2.0"}, f"{COMPONENT}:0.2.0"),
        ({"digest": "sha256:" + "a" * 64}, f"{COMPONENT}@sha256:{'a' * 64}"),
    ],
)
def test_images_rewriting_reaches_the_trigger(
    k8s: SimpleNamespace,
    tmp_path: Path,
    overlay: str,
    entry: dict[str, str],
    expected: str | None,
) -> None:
    extra = {"images": [{"name": COMPONENT, **entry}]}
    docs = k8s.kustomize(extend(k8s, tmp_path, overlay, extra))
    assert configured_image(docs) == (expected or "registry.example/ml/component:3f2a9c1")
    # Only the component image moved: the trigger itself still runs the monitor image.
    (container,) = _trigger(docs)["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("ghcr.io/closedloop/closedloop-monitor:")


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_skaffolds_tags_reach_the_trigger(
    rendered: dict[str, list[dict]], k8s: SimpleNamespace, overlay: str
) -> None:
    skaffold = yaml.safe_load((k8s.repo / "skaffold.yaml").read_text())
    artifacts = {a["image"] for a in skaffold["build"]["artifacts"]}
    assert COMPONENT in artifacts, "skaffold builds the component image"
    built = {name: f"{name}:v0.1.0-7-g3f2a9c1" for name in artifacts}
    docs = skaffold_retag(rendered[overlay], built)
    assert configured_image(docs) == built[COMPONENT]
    (container,) = _trigger(docs)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == built["ghcr.io/closedloop/closedloop-monitor"]


def test_skaffold_rule_needs_the_key_image(rendered: dict[str, list[dict]]) -> None:
    """The check above can fail: under another annotation key skaffold would not retag."""
    docs = copy.deepcopy(rendered["overlays/dev"])
    annotations = _trigger(docs)["spec"]["template"]["metadata"]["annotations"]
    annotations["closedloop.io/component-image"] = annotations.pop("image")
    built = {COMPONENT: f"{COMPONENT}:v9"}
    retagged = skaffold_retag(docs, built)
    moved = _trigger(retagged)["spec"]["template"]["metadata"]["annotations"]
    assert moved["closedloop.io/component-image"] == images.DEFAULT_COMPONENT_IMAGE
    assert configured_image(retagged) is None


def test_pull_secrets_come_from_the_kfp_config_map(k8s: SimpleNamespace, tmp_path: Path) -> None:
    patch = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "closedloop-kfp"},
        "data": {"imagePullSecrets": "regcred, mirror-cred"},
    }
    extra = {"patches": [{"patch": yaml.safe_dump(patch)}]}
    docs = k8s.kustomize(extend(k8s, tmp_path, "overlays/prod", extra))
    assert image_pull_secrets_of(None, trigger_env(docs)) == ("regcred", "mirror-cred")
