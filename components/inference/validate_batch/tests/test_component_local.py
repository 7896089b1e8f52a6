"""validate_batch under kfp.local, against a registry on S3 (SeaweedFS)."""

from typing import NamedTuple

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
from closedloop.components.inference.validate_batch.component import validate_batch
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.local.s3 import LocalS3
from closedloop.registry import Registry

pytestmark = pytest.mark.slow


class Checked(NamedTuple):
    version: str
    rows: int
    metrics: dsl.Metrics


@dsl.pipeline(name="validate-batch-local")
def check(uri: str, registry_uri: str) -> Checked:
    task = validate_batch(
        dataset=import_dataset(uri).output, registry_uri=registry_uri, model_name="fraud"
    )
    return Checked(task.outputs["version"], task.outputs["rows"], task.outputs["metrics"])


@pytest.fixture(scope="module")
def outputs(
    prepared: Prepared, s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    root = tmp_path_factory.mktemp("validate-batch-local")
    registry = Registry(s3_server.store(), f"s3://{fresh_bucket(s3_server)}/registry")
    registry.promote("fraud", publish_prepared(registry, prepared), "first model")
    batch = generate_transactions(200, seed=90).drop(columns=[TARGET])
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.settings().to_env().items():
            mp.setenv(key, value)
        return run_local(
            check,
            root / "runs",
            uri=str(write_parquet(batch, root / "batch.parquet")),
            registry_uri=registry.root,
        )


def test_the_champion_is_resolved_once(outputs: dict) -> None:
    assert outputs["version"] == "v1"
    assert outputs["rows"] == 200
    assert outputs["metrics"].metadata["rows"] == 200.0
