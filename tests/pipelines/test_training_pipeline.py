"""The whole training pipeline under kfp.local against a real S3 (SeaweedFS).

Three runs, the fewest that show the loop (a run costs one to two minutes on two
cores): a first model on clean data, a second on concept-drifted data judged against
the first, and a run on data without its target column that must stop early.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import joblib
import pandas as pd
import pytest

import closedloop
from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.local.pipelines import PipelineRun, PipelineRunError, run_pipeline
from closedloop.local.s3 import LocalS3
from closedloop.ml.ingest import ingest
from closedloop.ml.schema import InputSchema, check_frame
from closedloop.ml.train import predict_scores
from closedloop.registry import ChampionPointer, Manifest, Registry
from closedloop.registry.layout import (
    DETECTOR_DIR,
    EXPLANATION_FILE,
    METRICS_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    SCHEMA_FILE,
)
from closedloop.storage import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "fraud"
ROWS = 3000
ARGUMENTS = {
    "model_name": MODEL,
    "n_candidates": 2,
    "model_kinds": "xgboost,logistic_regression",
    "seed": 0,
    "deploy_backend": "none",
}


@dataclass(frozen=True)
class Run:
    """One pipeline run and the registry right after it."""

    run: PipelineRun
    data_uri: str
    versions: list[str]
    champion: ChampionPointer | None


@dataclass(frozen=True)
class Loop:
    """Where the runs of this module read and write."""

    server: LocalS3
    store: Store
    bucket: str
    registry: Registry
    workdir: Path


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def loop(s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """A bucket and registry on the session's SeaweedFS, its settings in the environment.

    kfp.local's subprocesses inherit this process's environment: that is how the
    components' ``Store()`` reaches the server.
    """
    store = s3_server.store()
    bucket = "training-pipeline"
    store.ensure_bucket(bucket)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.settings().to_env().items():
            mp.setenv(key, value)
        yield Loop(
            server=s3_server,
            store=store,
            bucket=bucket,
            registry=Registry(store, f"s3://{bucket}/registry"),
            workdir=tmp_path_factory.mktemp("training-pipeline"),
        )


def _train(loop: Loop, name: str, frame: pd.DataFrame) -> Run:
    data_uri = f"s3://{loop.bucket}/raw/{name}/transactions.parquet"
    loop.store.write_bytes(data_uri, _parquet(frame))
    run = run_pipeline(
        "training",
        {**ARGUMENTS, "data_uri": data_uri, "registry_uri": loop.registry.root},
        loop.workdir / name,
    )
    return Run(run, data_uri, loop.registry.versions(MODEL), loop.registry.champion(MODEL))


@pytest.fixture(scope="module")
def first(loop: Loop) -> Run:
    """A first model, on clean data, into an empty registry."""
    return _train(loop, "first", generate_transactions(ROWS, seed=0))


@pytest.fixture(scope="module")
def second(loop: Loop, first: Run) -> Run:
    """A second model on data whose fraud mechanism changed entirely."""
    return _train(loop, "drifted", generate_transactions(ROWS, seed=1, concept_drift=1.0))


def _manifest(loop: Loop, version: str) -> Manifest:
    return loop.registry.manifest(MODEL, version)


# -- the first run --------------------------------------------------------------------
def test_first_run_registers_v1_with_every_artifact(loop: Loop, first: Run, tmp_path: Path) -> None:
    assert first.versions == ["v1"]
    manifest = _manifest(loop, "v1")
    paths = {entry.path for entry in manifest.files}
    for name in (MODEL_FILE, SCHEMA_FILE, REFERENCE_FILE, METRICS_FILE, EXPLANATION_FILE):
        assert name in paths, name
    assert any(p.startswith(f"{DETECTOR_DIR}/") for p in paths)
    # Every file matches its digest, and the model serves predictions.
    local = loop.registry.fetch(MODEL, "v1", tmp_path)
    schema = InputSchema.from_json((local.path / SCHEMA_FILE).read_text())
    assert schema.target == DEFAULT_TARGET
    rows = generate_transactions(200, seed=9)
    scores = predict_scores(joblib.load(local.path / MODEL_FILE), rows, schema)
    assert scores.shape == (200,)
    # Trained on data without a missing value, it still serves a schema with the fitted
    # cleaning: every column has a fill, so a missing value is served as training did.
    assert all(spec.fill is not None for spec in schema.columns)
    assert schema.column("amount").clip is not None
    gap = check_frame([[None] * len(schema.columns)], schema).frame
    assert gap.notna().all().all()
    metrics = json.loads((local.path / METRICS_FILE).read_text())["metrics"]
    assert metrics["roc_auc"] > 0.7
    assert dict(manifest.metrics) == pytest.approx(metrics)
    explanation = json.loads((local.path / EXPLANATION_FILE).read_text())
    assert {n for n, _ in explanation["importances"]} == set(schema.feature_names)
    assert len(pd.read_parquet(local.path / REFERENCE_FILE)) > 0


def test_first_run_records_the_lineage(loop: Loop, first: Run) -> None:
    lineage = _manifest(loop, "v1").lineage
    assert lineage.dataset_uri == first.data_uri
    assert lineage.dataset_sha256 == ingest(first.data_uri, loop.store).sha256
    assert lineage.code_version.startswith(closedloop.__version__)
    assert lineage.run_id.startswith("closedloop-training-")
    assert first.run.root.name == "first" and (first.run.root / lineage.run_id).is_dir()
    parameters = lineage.parameters
    assert parameters["seed"] == 0
    assert parameters["engineer_features"] is True
    assert parameters["model_config"]["kind"] in ("xgboost", "logistic_regression")
    assert parameters["gate_passed"] is True
    assert "no champion" in parameters["gate_reason"]
    assert lineage.parent_version is None


def test_first_model_becomes_champion(first: Run) -> None:
    assert "promote-model" in first.run.tasks_succeeded, (
        f"the gate passed but promote-model never ran; tasks: {first.run.tasks_succeeded}"
    )
    assert first.champion is not None
    assert first.champion.version == "v1"
    assert first.champion.previous is None
    assert "no champion" in first.champion.reason


# -- the second run, on concept-drifted data ------------------------------------------
def test_drifted_run_registers_v2_with_the_gate_decision(
    loop: Loop, first: Run, second: Run
) -> None:
    assert second.versions == ["v1", "v2"]
    lineage = _manifest(loop, "v2").lineage
    assert lineage.dataset_uri == second.data_uri
    assert lineage.dataset_sha256 != _manifest(loop, "v1").lineage.dataset_sha256
    passed = lineage.parameters["gate_passed"]
    reason = lineage.parameters["gate_reason"]
    assert isinstance(passed, bool)
    assert reason.endswith(".") and len(reason) > 20
    # The gate compared against whatever was champion when it ran.
    assert lineage.parent_version == (first.champion.version if first.champion else None)
    if first.champion is not None:
        assert ("improves" in reason) == passed, reason
    # v1 is untouched by the second run.
    assert _manifest(loop, "v1").lineage.dataset_uri == first.data_uri


def test_champion_moves_iff_the_gate_passed(loop: Loop, first: Run, second: Run) -> None:
    lineage = _manifest(loop, "v2").lineage
    before = first.champion.version if first.champion else None
    after = second.champion.version if second.champion else None
    if lineage.parameters["gate_passed"]:
        assert after == "v2", (
            f"gate passed ({lineage.parameters['gate_reason']}) yet champion is {after}"
        )
        assert second.champion.previous == before
        assert second.champion.reason == lineage.parameters["gate_reason"]
    else:
        assert after == before, f"gate rejected v2 yet champion moved {before} -> {after}"
        assert "promote-model" not in second.run.tasks_succeeded


# -- bad input ------------------------------------------------------------------------
def test_data_without_its_target_stops_before_anything_is_registered(
    loop: Loop, tmp_path: Path
) -> None:
    # kfp 2.17's local runner honours retryPolicy: validate-data is network-bound (3
    # retries, 30 s backoff doubling), so this deterministic failure costs ~4 minutes.
    registry = Registry(loop.store, f"s3://{loop.bucket}/bad-input-registry")
    data_uri = f"s3://{loop.bucket}/raw/no-target/transactions.parquet"
    frame = generate_transactions(500, seed=2).drop(columns=[DEFAULT_TARGET])
    loop.store.write_bytes(data_uri, _parquet(frame))
    with pytest.raises(PipelineRunError) as err:
        run_pipeline(
            "training",
            {**ARGUMENTS, "data_uri": data_uri, "registry_uri": registry.root},
            tmp_path,
        )
    message = str(err.value)
    assert "validate-data" in message
    assert f"target column {DEFAULT_TARGET!r}" in message
    assert data_uri in message
    assert registry.versions(MODEL) == []
    assert registry.champion(MODEL) is None
    assert loop.store.list(registry.root) == []
