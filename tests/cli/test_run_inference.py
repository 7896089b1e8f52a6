"""``closedloop run inference`` says where the predictions went, and how many rows it scored.

The batch-inference pipeline runs under kfp.local against the session's SeaweedFS with a
registered champion (the prepared model of the component tests). Three rows of the
batch lack a value the model needs and nothing fills: they are refused, not scored.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from closedloop.components.conftest import (  # noqa: F401 (prepared is a fixture)
    Prepared,
    fresh_bucket,
    parquet_bytes,
    prepared,
    publish_prepared,
)
from typer.testing import CliRunner

from closedloop.cli.main import app
from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.local.s3 import LocalS3
from closedloop.registry import Registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REFUSED_ROWS = [3, 50, 77]


def test_the_predictions_uri_and_row_counts_are_printed(
    prepared: Prepared,  # noqa: F811
    s3_server: LocalS3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in s3_server.settings().to_env().items():
        monkeypatch.setenv(key, value)  # kfp.local's tasks inherit the environment
    store = s3_server.store()
    bucket = fresh_bucket(s3_server)
    registry = Registry(store, f"s3://{bucket}/registry")
    registry.promote("fraud", publish_prepared(registry, prepared), "the test's champion")
    batch = generate_transactions(120, seed=7).drop(columns=[DEFAULT_TARGET])
    column = next(
        spec.name
        for spec in prepared.input_schema().columns
        if spec.kind == "numeric" and not spec.nullable
    )
    batch[column] = batch[column].astype(float)
    batch.loc[REFUSED_ROWS, column] = None
    data_uri = f"s3://{bucket}/batches/batch.parquet"
    store.write_bytes(data_uri, parquet_bytes(batch))

    result = CliRunner().invoke(
        app,
        [
            "run", "inference", "--data", data_uri, "--model-name", "fraud",
            "--registry-uri", registry.root, "--param", f"output_uri=s3://{bucket}/predictions",
            "--workdir", str(tmp_path / "runs"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    prefix = f"predictions of v1: s3://{bucket}/predictions/model=fraud/version=v1/predictions-"
    assert prefix in output, result.output
    assert f"{len(batch) - 3} rows scored, 3 refused" in output
    assert (
        "why: the 'refused' column of each refused row, and the validate-batch report above"
        in output
    )

    published = output.split("predictions of v1: ", 1)[1].split(" ", 1)[0]
    scored = pd.read_parquet(io.BytesIO(store.read_bytes(published)))
    assert len(scored) == len(batch)
    refused = scored.index[scored["refused"] != ""].tolist()
    assert refused == REFUSED_ROWS
