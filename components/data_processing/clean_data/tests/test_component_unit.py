"""clean_data called directly on dirty generated rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from closedloop.components.conftest import (
    TARGET,
    artifact_in,
    artifact_out,
    dataset_in,
    schema_file,
)
from closedloop.components.data_processing.clean_data.component import clean_data
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.ml.schema import InputSchema, check_frame, infer_schema
from closedloop.ml.validate import QualityThresholds, validate_dataset


@pytest.fixture(scope="module")
def schema() -> InputSchema:
    return infer_schema(generate_transactions(2000, seed=8), TARGET)


@pytest.fixture(scope="module")
def dirty() -> pd.DataFrame:
    return generate_transactions(600, seed=9, dirty=1.0)


def run(
    frame: pd.DataFrame, schema: InputSchema, tmp_path: Path, **options: object
) -> tuple[dsl.Dataset, dsl.Markdown]:
    cleaned, record, _ = run_all(frame, schema, tmp_path, **options)
    return cleaned, record


def run_all(
    frame: pd.DataFrame, schema: InputSchema, tmp_path: Path, **options: object
) -> tuple[dsl.Dataset, dsl.Markdown, dsl.Artifact]:
    dataset = dataset_in(
        tmp_path / "in" / "raw.parquet", frame, source="s3://b/raw.csv", sha256="ab" * 32
    )
    schema_art = artifact_in(dsl.Artifact, schema_file(schema, tmp_path / "in" / "schema.json"))
    cleaned = artifact_out(dsl.Dataset, tmp_path / "out", "cleaned")
    record = artifact_out(dsl.Markdown, tmp_path / "out", "record")
    fitted = artifact_out(dsl.Artifact, tmp_path / "out", "fitted_schema")
    clean_data.python_func(
        dataset=dataset,
        schema=schema_art,
        cleaned=cleaned,
        record=record,
        fitted_schema=fitted,
        **options,
    )
    return cleaned, record, fitted


def test_dirty_rows_come_out_clean(
    dirty: pd.DataFrame, schema: InputSchema, tmp_path: Path
) -> None:
    cleaned, record = run(dirty, schema, tmp_path)
    frame = pd.read_parquet(cleaned.path)
    assert frame.duplicated().sum() == 0
    assert frame.isna().sum().sum() == 0
    assert frame[TARGET].dtype.kind == "i"
    assert pd.api.types.is_datetime64_any_dtype(frame["transaction_time"])
    assert validate_dataset(frame, schema, QualityThresholds()).passed
    # The metadata records every choice with its counts, and keeps the lineage.
    done = cleaned.metadata["cleaning"]
    assert done["n_rows_in"] == 600
    assert done["n_rows_out"] == len(frame) == cleaned.metadata["rows"]
    by_action = {}
    for step in done["steps"]:
        by_action[(step["action"], step["column"])] = step["count"]
    expected_duplicates = int(dirty.duplicated().sum())
    assert by_action[("drop_duplicates", None)] >= expected_duplicates - int(
        dirty[TARGET].isna().sum()
    )
    assert by_action[("drop_missing_target", TARGET)] == int(dirty[TARGET].isna().sum())
    assert by_action[("impute", "amount")] > 0
    assert by_action[("clip_outliers", "amount")] > 0
    assert cleaned.metadata["source"] == "s3://b/raw.csv"
    assert cleaned.metadata["sha256"] == "ab" * 32
    markdown = Path(record.path).read_text()
    assert markdown.startswith("# Cleaning record")
    assert "| drop_duplicates | — |" in markdown
    assert "| impute | amount |" in markdown


def test_options_change_what_is_done(
    dirty: pd.DataFrame, schema: InputSchema, tmp_path: Path
) -> None:
    # As in the pipeline, the schema's ranges come from the raw rows themselves: the
    # fitted rule bounds values by them, which keeps every raw value here.
    wide = infer_schema(dirty, TARGET)
    kept, _ = run(
        dirty,
        wide,
        tmp_path,
        drop_duplicates=False,
        clip_outliers=False,
        impute_categorical="missing",
    )
    frame = pd.read_parquet(kept.path)
    actions = {s["action"] for s in kept.metadata["cleaning"]["steps"]}
    assert "drop_duplicates" not in actions and "clip_outliers" not in actions
    assert frame.duplicated().sum() > 0
    assert frame["amount"].max() == dirty["amount"].max()  # outliers kept
    assert (frame["country"] == "missing").sum() == int(
        dirty.loc[dirty[TARGET].notna(), "country"].isna().sum()
    )


def test_clean_rows_pass_through_unchanged(schema: InputSchema, tmp_path: Path) -> None:
    clean = generate_transactions(300, seed=10)
    cleaned, _ = run(clean, schema, tmp_path, clip_outliers=False)
    frame = pd.read_parquet(cleaned.path)
    pd.testing.assert_frame_equal(frame, clean, check_dtype=False)
    assert cleaned.metadata["cleaning"]["n_rows_out"] == 300


def test_the_fitted_schema_carries_a_fill_for_every_column_even_without_missing_values(
    schema: InputSchema, tmp_path: Path
) -> None:
    clean = generate_transactions(300, seed=10)
    assert clean.isna().sum().sum() == 0
    cleaned, _, fitted_art = run_all(clean, schema, tmp_path)
    fitted = InputSchema.from_json(Path(fitted_art.path).read_text())
    assert fitted_art.metadata["target"] == TARGET
    # Everything but the fitted cleaning is the given schema.
    assert fitted.with_cleaning({}, {}) == schema
    assert all(spec.fill is not None for spec in fitted.columns)
    frame = pd.read_parquet(cleaned.path)
    assert fitted.column("amount").fill == frame["amount"].median()
    assert fitted.column("channel").fill == frame["channel"].mode().iloc[0]
    assert isinstance(fitted.column("transaction_time").fill, str)
    low_fence, high_fence, low_to, high_to = fitted.column("amount").clip
    assert low_fence <= low_to <= high_to <= high_fence
    assert frame["amount"].max() <= high_fence
    # A missing value is now accepted by serving and gets the training fill.
    row = [[None if c == "amount" else frame[c].iloc[0] for c in fitted.feature_names]]
    served = check_frame(row, fitted).frame
    assert served["amount"].iloc[0] == fitted.column("amount").fill
