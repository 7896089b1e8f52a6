"""skaffold.yaml against skaffold's published v4beta14 JSON schema (no skaffold binary here)."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import yaml

from closedloop import images


@pytest.fixture(scope="module")
def skaffold(k8s: SimpleNamespace) -> dict[str, Any]:
    return yaml.safe_load((k8s.repo / "skaffold.yaml").read_text())


@pytest.fixture(scope="module")
def validator(k8s: SimpleNamespace) -> jsonschema.Draft7Validator:
    schema = json.loads((k8s.data / "skaffold-v4beta14.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_skaffold_yaml_matches_the_schema(
    skaffold: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    assert skaffold["apiVersion"] == "skaffold/v4beta14"
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(skaffold)]
    assert not errors, "\n".join(errors)


def test_the_schema_rejects_a_misspelt_field(
    skaffold: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    broken = copy.deepcopy(skaffold)
    broken["build"]["artifacts"][0]["docker"]["dockerFile"] = "images/component/Dockerfile"
    assert list(validator.iter_errors(broken))


def test_builds_the_three_images_from_images(
    skaffold: dict[str, Any], k8s: SimpleNamespace
) -> None:
    artifacts = {a["image"]: a for a in skaffold["build"]["artifacts"]}
    expected = {
        ref.rsplit(":", 1)[0]: name
        for ref, name in (
            (images.DEFAULT_COMPONENT_IMAGE, "component"),
            (images.DEFAULT_SERVING_IMAGE, "serving"),
            (images.DEFAULT_MONITOR_IMAGE, "monitor"),
        )
    }
    assert set(artifacts) == set(expected)
    for image, name in expected.items():
        artifact = artifacts[image]
        assert artifact["context"] == "."
        dockerfile = artifact["docker"]["dockerfile"]
        assert dockerfile == f"images/{name}/Dockerfile"
        assert (k8s.repo / dockerfile).is_file()


def test_deploys_overlays_with_kustomize(skaffold: dict[str, Any], k8s: SimpleNamespace) -> None:
    assert skaffold["manifests"]["kustomize"]["paths"] == ["manifests/overlays/dev"]
    assert "kubectl" in skaffold["deploy"]
    profiles = {p["name"]: p for p in skaffold["profiles"]}
    assert set(profiles) == {"dev", "prod"}
    for name, profile in profiles.items():
        (path,) = profile["manifests"]["kustomize"]["paths"]
        assert path == f"manifests/overlays/{name}"
        assert (k8s.repo / path / "kustomization.yaml").is_file()
    allowed = {entry["groupKind"] for entry in skaffold["resourceSelector"]["allow"]}
    assert "SeldonDeployment.machinelearning.seldon.io" in allowed
