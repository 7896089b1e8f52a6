"""check_drift under kfp.local, with a detector from a registry on S3 (SeaweedFS)."""

from typing import NamedTuple

import pytest
from closedloop.components.conftest import (
    Prepared,
    fresh_bucket,
    import_dataset,
    publish_prepared,
    run_local,
    write_parquet,
)
from closedloop.components.inference.check_drift.component import check_drift
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.local.s3 import LocalS3
from closedloop.registry import Registry

pytestmark = pytest.mark.slow


class Checked(NamedTuple):
    drifted: bool
    metrics: dsl.Metrics


@dsl.pipeline(name="check-drift-local")
def check(uri: str, registry_uri: str) -> Checked:
    task = check_drift(
        dataset=import_dataset(uri).output,
        registry_uri=registry_uri,
        model_name="fraud",
        version="v1",
    )
    return Checked(task.outputs["Output"], task.outputs["metrics"])


@pytest.fixture(scope="module")
def outputs(
    prepared: Prepared, s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    root = tmp_path_factory.mktemp("check-drift-local")
    registry = Registry(s3_server.store(), f"s3://{fresh_bucket(s3_server)}/registry")
    publish_prepared(registry, prepared)
    shifted = generate_transactions(800, seed=92, covariate_shift=1.0)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.settings().to_env().items():
            mp.setenv(key, value)
        return run_local(
            check,
            root / "runs",
            uri=str(write_parquet(shifted, root / "batch.parquet")),
            registry_uri=registry.root,
        )


def test_shifted_traffic_is_flagged(outputs: dict) -> None:
    assert outputs["drifted"] is True
    assert outputs["metrics"].metadata["is_drift"] == 1.0
    assert outputs["metrics"].metadata["min_p_value"] < 0.01
