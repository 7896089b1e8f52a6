"""promote_model called directly against a real S3 registry (SeaweedFS)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from closedloop.components.conftest import artifact_in
from closedloop.components.deployment.promote_model.component import promote_model
from kfp import dsl

from closedloop.registry import Lineage, Registry, VersionNotFoundError
from closedloop.storage import Store


@pytest.fixture()
def registry(s3_env: dict[str, str], bucket: str, tmp_path: Path) -> Registry:
    registry = Registry(Store(), f"s3://{bucket}/registry")
    for n in (1, 2):
        source = tmp_path / f"v{n}"
        source.mkdir()
        (source / "model.joblib").write_bytes(f"model {n}".encode())
        registry.register("fraud", source, Lineage(f"s3://d/{n}.parquet", f"{n:064d}"))
    return registry


def gate(tmp: Path, reason: str, passed: bool = True) -> dsl.Artifact:
    """A gate decision as gate_model writes it."""
    path = tmp / f"gate-{abs(hash(reason))}.json"
    path.write_text(json.dumps({"passed": passed, "reason": reason, "champion_version": ""}))
    return artifact_in(dsl.Artifact, path)


def test_promotes_and_reports_the_previous_champion(
    registry: Registry, s3_store: Store, tmp_path: Path
) -> None:
    previous = promote_model.python_func(
        registry_uri=registry.root,
        model_name="fraud",
        version="v1",
        gate=gate(tmp_path, "first model"),
    )
    assert previous == ""
    pointer = registry.champion("fraud")
    assert (pointer.version, pointer.previous, pointer.reason) == ("v1", None, "first model")

    previous = promote_model.python_func(
        registry_uri=registry.root,
        model_name="fraud",
        version="v2",
        gate=gate(tmp_path, "better by +0.02"),
    )
    assert previous == "v1"
    pointer = registry.champion("fraud")
    assert (pointer.version, pointer.previous, pointer.reason) == ("v2", "v1", "better by +0.02")
    assert registry.resolve("fraud", "champion") == "v2"
    # Every move is kept for audit.
    assert len(s3_store.list(f"{registry.root}/models/fraud/history")) == 2
    moves = registry.champion_history("fraud")
    assert [(m.version, m.previous) for m in moves] == [("v1", None), ("v2", "v1")]


def test_an_unknown_version_is_refused(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(VersionNotFoundError, match="no version 'v9'"):
        promote_model.python_func(
            registry_uri=registry.root,
            model_name="fraud",
            version="v9",
            gate=gate(tmp_path, "typo"),
        )
    assert registry.champion("fraud") is None


def test_a_rejected_version_is_never_promoted(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="refusing to promote fraud v2: the gate rejected it"):
        promote_model.python_func(
            registry_uri=registry.root,
            model_name="fraud",
            version="v2",
            gate=gate(tmp_path, "not significant.", passed=False),
        )
    assert registry.champion("fraud") is None


def test_on_kubernetes_the_pointer_waits_for_the_rollout(
    registry: Registry, s3_store: Store, tmp_path: Path
) -> None:
    """The deploy step moves the pointer once the cluster serves the version
    (closedloop.deploy.promotion), so a failed rollout leaves the registry true."""
    registry.promote("fraud", "v1", "first model")
    previous = promote_model.python_func(
        registry_uri=registry.root,
        model_name="fraud",
        version="v2",
        gate=gate(tmp_path, "better"),
        backend="kubernetes",
    )
    assert previous == ""
    assert registry.champion("fraud").version == "v1"


def test_on_kubernetes_a_rejected_gate_is_still_refused(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gate rejected"):
        promote_model.python_func(
            registry_uri=registry.root,
            model_name="fraud",
            version="v2",
            gate=gate(tmp_path, "worse", passed=False),
            backend="kubernetes",
        )
