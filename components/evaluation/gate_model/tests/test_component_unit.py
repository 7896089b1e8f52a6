"""gate_model called directly against a real S3 registry (SeaweedFS)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import joblib
from closedloop.components.conftest import Prepared, artifact_in, artifact_out, dataset_in
from closedloop.components.evaluation.gate_model.component import gate_model
from kfp import dsl

from closedloop.registry import Lineage, Registry
from closedloop.registry.layout import MODEL_FILE, SCHEMA_FILE
from closedloop.storage import Store


@dataclass(frozen=True)
class Gate:
    """What one gate call produced."""

    decision: str
    passed: bool
    reason: str
    champion_version: str
    record: dict


def run(prepared: Prepared, out: Path, registry_uri: str, **kwargs: object) -> tuple:
    verdict = artifact_out(dsl.Markdown, out, "verdict")
    decision = artifact_out(dsl.Artifact, out, "decision")
    output = gate_model.python_func(
        model=artifact_in(dsl.Model, prepared.model),
        holdout=dataset_in(prepared.holdout),
        schema=artifact_in(dsl.Artifact, prepared.schema),
        registry_uri=registry_uri,
        model_name="fraud",
        verdict=verdict,
        decision=decision,
        bootstrap_rounds=200,
        **kwargs,
    )
    record = json.loads(Path(decision.path).read_text())
    assert decision.metadata["passed"] is record["passed"]
    # The single output a dsl.If tests agrees with the recorded decision.
    assert output == ("promote" if record["passed"] else "reject")
    result = Gate(
        decision=output,
        passed=record["passed"],
        reason=record["reason"],
        champion_version=record["champion_version"],
        record=record,
    )
    return result, Path(verdict.path).read_text()


def register_champion(store: Store, registry_uri: str, prepared: Prepared, model: Path) -> str:
    source = prepared.root / f"version-{model.stem}"
    source.mkdir(exist_ok=True)
    shutil.copyfile(model, source / MODEL_FILE)
    shutil.copyfile(prepared.schema, source / SCHEMA_FILE)
    registry = Registry(store, registry_uri)
    manifest = registry.register("fraud", source, Lineage("s3://x/data.parquet", "00"))
    registry.promote("fraud", manifest.version, "test champion")
    return manifest.version


def weak_model(prepared: Prepared, directory: Path) -> Path:
    """A weak model, one shallow tree on the prepared features; return its file."""
    from closedloop.components._runtime import fit_on_features

    from closedloop.ml.train import ModelConfig

    weak = fit_on_features(
        joblib.load(prepared.features),
        prepared.frame("train"),
        prepared.input_schema(),
        ModelConfig("xgboost", {"n_estimators": 1, "max_depth": 1, "n_jobs": 1}, seed=0),
    )
    joblib.dump(weak, directory / "weak.joblib")
    return directory / "weak.joblib"


def test_first_model_is_accepted_on_thresholds(
    prepared: Prepared, tmp_path: Path, s3_env: dict[str, str], bucket: str
) -> None:
    result, verdict = run(prepared, tmp_path, f"s3://{bucket}/registry")
    assert result.decision == "promote"
    assert result.passed is True
    assert result.champion_version == ""
    assert "no champion" in result.reason
    assert verdict.startswith("# Gate: challenger vs champion (none)")
    assert "**Gate: PASSED**" in verdict


def test_first_model_policy_reject(
    prepared: Prepared, tmp_path: Path, s3_env: dict[str, str], bucket: str
) -> None:
    result, verdict = run(prepared, tmp_path, f"s3://{bucket}/registry", first_model="reject")
    assert (result.decision, result.passed) == ("reject", False)
    assert "rejects a first model" in result.reason
    assert "**Gate: REJECTED**" in verdict


def test_threshold_failure_names_the_metric(
    prepared: Prepared, tmp_path: Path, s3_env: dict[str, str], bucket: str
) -> None:
    result, _ = run(prepared, tmp_path, f"s3://{bucket}/registry", min_primary_metric=0.999)
    assert (result.decision, result.passed) == ("reject", False)
    assert "roc_auc" in result.reason and "below the required minimum 0.9990" in result.reason


def test_the_champion_itself_is_no_improvement(
    prepared: Prepared, tmp_path: Path, s3_env: dict[str, str], bucket: str, s3_store: Store
) -> None:
    registry_uri = f"s3://{bucket}/registry"
    version = register_champion(s3_store, registry_uri, prepared, prepared.model)
    result, verdict = run(prepared, tmp_path, registry_uri)
    assert result.champion_version == version == "v1"
    assert (result.decision, result.passed) == ("reject", False)
    assert "improvement +0.0000 does not exceed" in result.reason
    assert f"champion {version}" in verdict


def test_a_much_better_challenger_passes(
    prepared: Prepared, tmp_path: Path, s3_env: dict[str, str], bucket: str, s3_store: Store
) -> None:
    weak = weak_model(prepared, tmp_path)  # a weak champion: one shallow tree
    registry_uri = f"s3://{bucket}/registry"
    register_champion(s3_store, registry_uri, prepared, weak)
    result, verdict = run(prepared, tmp_path / "gate", registry_uri, min_primary_metric=0.5)
    assert result.champion_version == "v1"
    assert (result.decision, result.passed) == ("promote", True), result.reason
    assert "improves roc_auc" in result.reason and "bootstrap p" in result.reason
    assert "p-value (paired bootstrap)" in verdict
    assert result.record["champion_metric"] < result.record["challenger_metric"]
    assert result.record["p_value"] < 0.05


def test_a_threshold_the_champion_misses_too_is_an_alert(
    prepared: Prepared, tmp_path: Path, s3_env: dict[str, str], bucket: str, s3_store: Store
) -> None:
    weak = weak_model(prepared, tmp_path)
    registry_uri = f"s3://{bucket}/registry"
    register_champion(s3_store, registry_uri, prepared, weak)
    # Neither model reaches 0.999: the floor alerts, the comparison decides.
    result, verdict = run(prepared, tmp_path / "gate", registry_uri, min_primary_metric=0.999)
    assert (result.decision, result.passed) == ("promote", True), result.reason
    (alert,) = result.record["alerts"]
    assert "below the required minimum 0.9990" in alert and "champion misses it too" in alert
    assert "**Alerts**" in verdict


def test_a_threshold_the_champion_meets_still_rejects(
    prepared: Prepared, tmp_path: Path, s3_env: dict[str, str], bucket: str, s3_store: Store
) -> None:
    weak = weak_model(prepared, tmp_path)
    registry_uri = f"s3://{bucket}/registry"
    register_champion(s3_store, registry_uri, prepared, prepared.model)
    # The weak model challenges the prepared champion, which meets the floor.
    weak_challenger = Prepared(**{**prepared.__dict__, "model": weak})
    result, _ = run(weak_challenger, tmp_path / "gate", registry_uri, min_primary_metric=0.8)
    assert (result.decision, result.passed) == ("reject", False)
    assert "which the champion meets" in result.reason
    assert result.record["alerts"] == []
