"""assemble_training_data called directly: reference rows, the feedback archive and the champion on S3."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from closedloop.components.conftest import (
    TARGET,
    Prepared,
    artifact_out,
    parquet_bytes,
    publish_prepared,
)
from closedloop.components.data_processing.assemble_training_data.component import (
    assemble_training_data,
)
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.drift.sidecar.archive import FeedbackArchive
from closedloop.registry import Registry
from closedloop.storage import Store


def archive_feedback(
    store: Store, archive_uri: str, prepared: Prepared, frame: pd.DataFrame, at: float, tag: str
) -> None:
    archive = FeedbackArchive(store, archive_uri, "fraud", prepared.input_schema())
    features = frame.drop(columns=[TARGET])
    archive.add(
        features,
        frame[TARGET],
        event_id=tag,
        event_source="test",
        model_version="v1",
        received_at=at,
    )
    assert archive.flush().rows_written == len(frame)


@pytest.fixture()
def sources(prepared: Prepared, s3_env: dict[str, str], bucket: str, s3_store: Store) -> dict:
    reference_uri = f"s3://{bucket}/raw/reference.parquet"
    s3_store.write_bytes(reference_uri, parquet_bytes(prepared.frame("raw")))
    archive_uri = f"s3://{bucket}/feedback"
    now = time.time()
    old = generate_transactions(40, seed=80, concept_drift=0.0)
    new = generate_transactions(60, seed=81, concept_drift=1.0)
    archive_feedback(s3_store, archive_uri, prepared, old, now - 3 * 3600, "old")
    archive_feedback(s3_store, archive_uri, prepared, new, now - 600, "new")
    return {
        "reference_uri": reference_uri,
        "archive_uri": archive_uri,
        "registry_uri": f"s3://{bucket}/registry",
        "now": now,
    }


def run(sources: dict, tmp_path: Path, **kwargs: object) -> dsl.Dataset:
    dataset = artifact_out(dsl.Dataset, tmp_path, "dataset")
    assemble_training_data.python_func(
        reference_uri=sources["reference_uri"],
        archive_uri=sources["archive_uri"],
        model_name="fraud",
        registry_uri=sources["registry_uri"],
        dataset=dataset,
        **kwargs,
    )
    return dataset


def with_champion(
    sources: dict, prepared: Prepared, s3_store: Store, feedback: pd.DataFrame
) -> dict:
    """The prepared model (old concept) as champion, and *feedback* as the only recent rows."""
    registry = Registry(s3_store, sources["registry_uri"])
    registry.promote("fraud", publish_prepared(registry, prepared), "test champion")
    archive_uri = sources["archive_uri"] + "-champion"
    archive_feedback(s3_store, archive_uri, prepared, feedback, sources["now"] - 60, "recent")
    return {**sources, "archive_uri": archive_uri}


def test_combines_a_reference_sample_with_recent_feedback(
    sources: dict, prepared: Prepared, tmp_path: Path
) -> None:
    dataset = run(
        sources,
        tmp_path,
        recent_hours=1.0,
        max_reference_rows=500,
        reference_per_recent=10.0,
        min_recent_rows=10,
    )
    frame = pd.read_parquet(dataset.path)
    raw = prepared.frame("raw")
    assert list(frame.columns) == list(raw.columns)
    assert len(frame) == 560  # 500 reference rows + the 60 of the last hour
    assert dataset.metadata["reference_rows"] == 500
    assert dataset.metadata["recent_rows"] == 60
    assert dataset.metadata["source"].startswith(sources["reference_uri"] + " + ")
    assert len(dataset.metadata["sha256"]) == 64
    assert frame[TARGET].notna().all()
    # Time order: the reference sample in its own (time) order, then the feedback.
    assert frame["transaction_time"].iloc[:500].is_monotonic_increasing
    new = generate_transactions(60, seed=81, concept_drift=1.0)
    pd.testing.assert_frame_equal(frame.iloc[500:].reset_index(drop=True), new, check_dtype=False)
    # No champion in the registry: nothing to test the concept with.
    recency = dataset.metadata["recency"]
    assert recency["concept_changed"] is False and recency["p_value"] is None
    assert "no champion" in recency["reason"]
    assert dataset.metadata["champion_version"] == ""


def test_drift_start_bounds_the_window(sources: dict, tmp_path: Path) -> None:
    since = sources["now"] - 4 * 3600
    dataset = run(sources, tmp_path, drift_started_at=since, min_recent_rows=10)
    assert dataset.metadata["recent_rows"] == 100  # both batches are after the drift began
    # By default at most one reference row per recent row, so the recent rows dominate.
    assert dataset.metadata["reference_rows"] == 100


def test_a_changed_concept_drops_the_reference(
    sources: dict, prepared: Prepared, s3_store: Store, tmp_path: Path
) -> None:
    feedback = generate_transactions(800, seed=82, concept_drift=1.0)
    changed = with_champion(sources, prepared, s3_store, feedback)
    dataset = run(changed, tmp_path, recent_hours=1.0, min_recent_rows=100)
    recency = dataset.metadata["recency"]
    assert recency["concept_changed"] is True, recency["reason"]
    assert dataset.metadata["reference_rows"] == recency["reference_rows_kept"] == 0
    assert dataset.metadata["champion_version"] == "v1"
    frame = pd.read_parquet(dataset.path)
    pd.testing.assert_frame_equal(frame, feedback, check_dtype=False)


def test_the_same_concept_keeps_the_reference(
    sources: dict, prepared: Prepared, s3_store: Store, tmp_path: Path
) -> None:
    feedback = generate_transactions(800, seed=83)
    same = with_champion(sources, prepared, s3_store, feedback)
    dataset = run(same, tmp_path, recent_hours=1.0, min_recent_rows=100)
    recency = dataset.metadata["recency"]
    assert recency["concept_changed"] is False, recency["reason"]
    assert recency["p_value"] is not None
    assert dataset.metadata["reference_rows"] == 800
    assert len(pd.read_parquet(dataset.path)) == 1600


def test_too_little_feedback_fails_naming_the_archive(sources: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"s3://.*/feedback holds 60 labelled rows for fraud"):
        run(sources, tmp_path, recent_hours=1.0, min_recent_rows=500)
    assert not (tmp_path / "dataset").exists()
