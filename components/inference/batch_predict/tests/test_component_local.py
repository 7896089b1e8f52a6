"""batch_predict under kfp.local, with a version from a registry on S3 (SeaweedFS)."""

from typing import NamedTuple

import pandas as pd
import pytest
from closedloop.components.conftest import (
    TARGET,
    Prepared,
    fresh_bucket,
    import_dataset,
    publish_prepared,
    run_local,
    write_parquet,
)
from closedloop.components.inference.batch_predict.component import batch_predict
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.local.s3 import LocalS3
from closedloop.registry import Registry

pytestmark = pytest.mark.slow


class Predicted(NamedTuple):
    published: str
    predictions: dsl.Dataset


@dsl.pipeline(name="batch-predict-local")
def predict(uri: str, registry_uri: str, output_uri: str) -> Predicted:
    task = batch_predict(
        dataset=import_dataset(uri).output,
        registry_uri=registry_uri,
        model_name="fraud",
        version="v1",
        output_uri=output_uri,
    )
    return Predicted(task.outputs["Output"], task.outputs["predictions"])


@pytest.fixture(scope="module")
def outputs(
    prepared: Prepared, s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    root = tmp_path_factory.mktemp("batch-predict-local")
    bucket = fresh_bucket(s3_server)
    registry = Registry(s3_server.store(), f"s3://{bucket}/registry")
    publish_prepared(registry, prepared)
    batch = generate_transactions(150, seed=91).drop(columns=[TARGET])
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.settings().to_env().items():
            mp.setenv(key, value)
        outputs = run_local(
            predict,
            root / "runs",
            uri=str(write_parquet(batch, root / "batch.parquet")),
            registry_uri=registry.root,
            output_uri=f"s3://{bucket}/scored",
        )
    outputs["batch"] = batch
    outputs["store"] = s3_server.store()
    outputs["bucket"] = bucket
    return outputs


def test_every_row_is_scored_and_published(outputs: dict) -> None:
    scored = pd.read_parquet(outputs["predictions"].path)
    assert len(scored) == 150
    assert scored["score"].between(0, 1).all()
    assert set(scored["model_version"]) == {"v1"}
    published = outputs["published"]
    assert published.startswith(f"s3://{outputs['bucket']}/scored/model=fraud/version=v1/")
    assert outputs["store"].exists(published)
