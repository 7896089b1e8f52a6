"""clean_data under kfp.local on dirty rows."""

from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
from closedloop.components.conftest import (
    TARGET,
    import_artifact,
    import_dataset,
    run_local,
    schema_file,
    write_parquet,
)
from closedloop.components.data_processing.clean_data.component import clean_data
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.ml.schema import InputSchema, infer_schema

pytestmark = pytest.mark.slow


class Cleaned(NamedTuple):
    cleaned: dsl.Dataset
    record: dsl.Markdown
    fitted_schema: dsl.Artifact


@dsl.pipeline(name="clean-data-local")
def clean(uri: str, schema_uri: str) -> Cleaned:
    raw = import_dataset(uri, source="s3://landing/dirty.csv", sha256="ef" * 32)
    schema = import_artifact(schema_uri)
    task = clean_data(dataset=raw.output, schema=schema.output)
    return Cleaned(task.outputs["cleaned"], task.outputs["record"], task.outputs["fitted_schema"])


@pytest.fixture(scope="module")
def dirty() -> pd.DataFrame:
    return generate_transactions(300, seed=34, dirty=1.0)


@pytest.fixture(scope="module")
def outputs(dirty: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("clean-local")
    schema = infer_schema(generate_transactions(1000, seed=35), TARGET)
    return run_local(
        clean,
        root / "runs",
        uri=str(write_parquet(dirty, root / "dirty.parquet")),
        schema_uri=str(schema_file(schema, root / "schema.json")),
    )


def test_rows_come_out_clean(outputs: dict, dirty: pd.DataFrame) -> None:
    frame = pd.read_parquet(outputs["cleaned"].path)
    assert frame.isna().sum().sum() == 0
    assert frame.duplicated().sum() == 0
    assert len(frame) < len(dirty)
    meta = outputs["cleaned"].metadata
    assert meta["rows"] == len(frame)
    assert meta["cleaning"]["n_rows_in"] == 300
    assert meta["source"] == "s3://landing/dirty.csv"
    assert meta["sha256"] == "ef" * 32


def test_the_record_lists_each_action(outputs: dict) -> None:
    record = Path(outputs["record"].path).read_text()
    for action in ("drop_duplicates", "drop_missing_target", "impute", "clip_outliers"):
        assert f"| {action} |" in record


def test_the_fitted_schema_is_written(outputs: dict) -> None:
    fitted = InputSchema.from_json(Path(outputs["fitted_schema"].path).read_text())
    assert fitted.target == TARGET
    assert all(spec.fill is not None for spec in fitted.columns)
    assert fitted.column("amount").clip is not None
