"""ingest_data under kfp.local: a local CSV and a Parquet file on S3 (SeaweedFS)."""

from typing import NamedTuple

import pandas as pd
import pytest
from closedloop.components.conftest import fresh_bucket, parquet_bytes, run_local
from closedloop.components.data_processing.ingest_data.component import ingest_data
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.local.s3 import LocalS3

pytestmark = pytest.mark.slow


class Ingested(NamedTuple):
    from_disk: dsl.Dataset
    from_s3: dsl.Dataset


@dsl.pipeline(name="ingest-data-local")
def ingest_both(local_uri: str, s3_uri: str) -> Ingested:
    from_disk = ingest_data(source_uri=local_uri, file_format="csv")
    from_s3 = ingest_data(source_uri=s3_uri)
    return Ingested(from_disk.outputs["dataset"], from_s3.outputs["dataset"])


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_transactions(200, seed=31)


@pytest.fixture(scope="module")
def outputs(
    frame: pd.DataFrame, s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    root = tmp_path_factory.mktemp("ingest-local")
    csv = root / "export.csv"
    frame.to_csv(csv, index=False)
    bucket = fresh_bucket(s3_server)
    s3_server.store().write_bytes(f"s3://{bucket}/raw/data.parquet", parquet_bytes(frame))
    with pytest.MonkeyPatch.context() as mp:  # the task subprocesses inherit this env
        for key, value in s3_server.settings().to_env().items():
            mp.setenv(key, value)
        outputs = run_local(
            ingest_both, root / "runs", local_uri=str(csv), s3_uri=f"s3://{bucket}/raw/data.parquet"
        )
    outputs["s3_uri"] = f"s3://{bucket}/raw/data.parquet"
    outputs["csv"] = csv
    return outputs


def test_both_sources_become_parquet_datasets(outputs: dict, frame: pd.DataFrame) -> None:
    from_s3 = pd.read_parquet(outputs["from_s3"].path)
    pd.testing.assert_frame_equal(from_s3, frame)
    from_disk = pd.read_parquet(outputs["from_disk"].path)
    assert from_disk.shape == frame.shape
    assert from_disk["channel"].tolist() == frame["channel"].tolist()


def test_metadata_carries_the_lineage(outputs: dict) -> None:
    s3_meta = outputs["from_s3"].metadata
    assert s3_meta["source"] == outputs["s3_uri"]
    assert s3_meta["rows"] == 200
    assert len(s3_meta["sha256"]) == 64
    disk_meta = outputs["from_disk"].metadata
    assert disk_meta["source"] == str(outputs["csv"])
    assert disk_meta["sha256"] != s3_meta["sha256"]
