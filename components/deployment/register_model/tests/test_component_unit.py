"""register_model called directly against a real S3 registry (SeaweedFS)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from closedloop.components.conftest import FAST_CONFIG, Prepared, artifact_in, dataset_in
from closedloop.components.deployment.register_model.component import register_model
from kfp import dsl

from closedloop.registry import Registry
from closedloop.registry.layout import (
    EXPLANATION_FILE,
    METRICS_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    SCHEMA_FILE,
)
from closedloop.storage import Store, sha256_file

DATASET_SHA = "5e" * 32


def gate_file(
    tmp: Path,
    passed: bool = True,
    reason: str = "there is no champion and the challenger meets every threshold.",
    champion_version: str = "",
) -> dsl.Artifact:
    """A gate decision as gate_model writes it."""
    path = tmp / f"gate-{uuid.uuid4().hex[:8]}.json"
    record = {"passed": passed, "reason": reason, "champion_version": champion_version}
    path.write_text(json.dumps(record))
    return artifact_in(dsl.Artifact, path)


def run(prepared: Prepared, registry_uri: str, **kwargs: object) -> str:
    arguments = {
        "model": artifact_in(dsl.Model, prepared.model),
        "schema": artifact_in(dsl.Artifact, prepared.schema),
        "detector": artifact_in(dsl.Artifact, prepared.detector),
        "reference": dataset_in(prepared.reference),
        "evaluation": artifact_in(dsl.Artifact, prepared.evaluation),
        "explanation": artifact_in(dsl.Artifact, prepared.explanation),
        "dataset": dataset_in(
            prepared.raw, source="s3://landing/fraud/2026-11.parquet", sha256=DATASET_SHA
        ),
        "registry_uri": registry_uri,
        "model_name": "fraud",
        "config": json.dumps(FAST_CONFIG),
        "gate": gate_file(prepared.root),
        "run_id": "closedloop-training-run-1",
        "seed": 7,
        "engineer": True,
    }
    arguments.update(kwargs)
    return register_model.python_func(**arguments)


@pytest.fixture()
def registry(s3_env: dict[str, str], bucket: str) -> Registry:
    return Registry(Store(), f"s3://{bucket}/registry")


def test_registers_every_artifact_with_digests(
    prepared: Prepared, registry: Registry, tmp_path: Path
) -> None:
    version = run(prepared, registry.root)
    assert version == "v1"
    assert registry.versions("fraud") == ["v1"]
    manifest = registry.manifest("fraud", "v1")
    paths = {entry.path for entry in manifest.files}
    assert {MODEL_FILE, SCHEMA_FILE, REFERENCE_FILE, METRICS_FILE, EXPLANATION_FILE} <= paths
    detector_files = {p for p in paths if p.startswith("detector/")}
    on_disk = {
        "detector/" + p.relative_to(prepared.detector).as_posix()
        for p in prepared.detector.rglob("*")
        if p.is_file()
    }
    assert detector_files == on_disk and detector_files
    assert manifest.file(MODEL_FILE).sha256 == sha256_file(prepared.model)
    assert manifest.file(EXPLANATION_FILE).sha256 == sha256_file(prepared.explanation)
    # fetch() verifies every digest against the manifest.
    fetched = registry.fetch("fraud", "v1", tmp_path / "v1")
    assert (fetched.path / MODEL_FILE).read_bytes() == prepared.model.read_bytes()
    evaluation = json.loads(prepared.evaluation.read_text())
    assert json.loads((fetched.path / METRICS_FILE).read_text()) == evaluation
    assert dict(manifest.metrics) == pytest.approx(evaluation["metrics"])


def test_records_the_lineage(prepared: Prepared, registry: Registry) -> None:
    run(prepared, registry.root)
    lineage = registry.manifest("fraud", "v1").lineage
    assert lineage.dataset_uri == "s3://landing/fraud/2026-11.parquet"
    assert lineage.dataset_sha256 == DATASET_SHA
    assert lineage.run_id == "closedloop-training-run-1"
    assert lineage.parent_version is None
    assert lineage.code_version.startswith("0.1.0")
    assert lineage.parameters == {
        "model_config": FAST_CONFIG,
        "seed": 7,
        "engineer_features": True,
        "gate_passed": True,
        "gate_reason": "there is no champion and the challenger meets every threshold.",
    }


def test_every_run_gets_a_new_immutable_version(prepared: Prepared, registry: Registry) -> None:
    first = run(prepared, registry.root)
    second = run(
        prepared,
        registry.root,
        gate=gate_file(prepared.root, passed=False, reason="not better.", champion_version="v1"),
    )
    assert (first, second) == ("v1", "v2")
    assert registry.versions("fraud") == ["v1", "v2"]
    v2 = registry.manifest("fraud", "v2")
    assert v2.lineage.parent_version == "v1"
    assert v2.lineage.parameters["gate_passed"] is False
    assert v2.lineage.parameters["gate_reason"] == "not better."
    assert registry.manifest("fraud", "v1").lineage.parameters["gate_passed"] is True
    # Registering never promotes.
    assert registry.champion("fraud") is None


def test_a_version_without_its_dataset_digest_falls_back_to_the_uri(
    prepared: Prepared, registry: Registry
) -> None:
    run(prepared, registry.root, dataset=dataset_in(prepared.raw))
    lineage = registry.manifest("fraud", "v1").lineage
    assert lineage.dataset_uri == str(prepared.raw)
    assert lineage.dataset_sha256 == ""


def test_stores_the_quality_baseline_beside_the_model(
    prepared: Prepared, registry: Registry, tmp_path: Path
) -> None:
    from closedloop.quality import QUALITY_BASELINE_FILE, QualityBaseline

    evaluation = json.loads(prepared.evaluation.read_text())
    baseline = {"schema_version": 1, "task": "classification", "n_classes": 2,
                "metrics": {"roc_auc": 0.9}, "losses": [0.1, 0.2], "n_rows": 2}  # fmt: skip
    with_baseline = tmp_path / "evaluation.json"
    with_baseline.write_text(json.dumps({**evaluation, "quality_baseline": baseline}))
    run(prepared, registry.root, evaluation=artifact_in(dsl.Artifact, with_baseline))
    fetched = registry.fetch("fraud", "v1", tmp_path / "v1")
    back = QualityBaseline.from_json((fetched.path / QUALITY_BASELINE_FILE).read_bytes())
    assert back.metrics == {"roc_auc": 0.9} and list(back.losses) == [0.1, 0.2]
    # metrics.json stays the evaluation itself.
    assert json.loads((fetched.path / METRICS_FILE).read_text()) == evaluation
