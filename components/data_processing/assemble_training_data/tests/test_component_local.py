"""assemble_training_data under kfp.local: reference data and feedback on S3 (SeaweedFS)."""

import time

import pandas as pd
import pytest
from closedloop.components.conftest import (
    TARGET,
    Prepared,
    fresh_bucket,
    parquet_bytes,
    run_local,
)
from closedloop.components.data_processing.assemble_training_data.component import (
    assemble_training_data,
)
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.drift.sidecar.archive import FeedbackArchive
from closedloop.local.s3 import LocalS3

pytestmark = pytest.mark.slow


@dsl.pipeline(name="assemble-training-data-local")
def assemble(reference_uri: str, archive_uri: str, registry_uri: str) -> dsl.Dataset:
    return assemble_training_data(
        reference_uri=reference_uri,
        archive_uri=archive_uri,
        model_name="fraud",
        registry_uri=registry_uri,
        max_reference_rows=300,
        reference_per_recent=10.0,
        min_recent_rows=50,
    ).outputs["dataset"]


@pytest.fixture(scope="module")
def outputs(
    prepared: Prepared, s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    store = s3_server.store()
    bucket = fresh_bucket(s3_server)
    reference_uri = f"s3://{bucket}/raw/reference.parquet"
    store.write_bytes(reference_uri, parquet_bytes(prepared.frame("raw")))
    archive = FeedbackArchive(store, f"s3://{bucket}/feedback", "fraud", prepared.input_schema())
    feedback = generate_transactions(80, seed=93, concept_drift=1.0)
    archive.add(
        feedback.drop(columns=[TARGET]),
        feedback[TARGET],
        event_id="e1",
        event_source="test",
        model_version="v1",
        received_at=time.time() - 60,
    )
    archive.flush()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.settings().to_env().items():
            mp.setenv(key, value)
        return run_local(
            assemble,
            tmp_path_factory.mktemp("assemble-local"),
            reference_uri=reference_uri,
            archive_uri=f"s3://{bucket}/feedback",
            registry_uri=f"s3://{bucket}/registry",
        )


def test_reference_sample_plus_feedback(outputs: dict, prepared: Prepared) -> None:
    dataset = outputs["Output"]
    frame = pd.read_parquet(dataset.path)
    assert len(frame) == 380
    assert list(frame.columns) == list(prepared.frame("raw").columns)
    assert (dataset.metadata["reference_rows"], dataset.metadata["recent_rows"]) == (300, 80)
    assert dataset.metadata["recency"]["concept_changed"] is False  # no champion to test with
