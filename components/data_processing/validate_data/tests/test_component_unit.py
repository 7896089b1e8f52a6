"""validate_data called directly: clean data passes, broken data stops the run, a given schema is a contract."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from closedloop.components.conftest import TARGET, artifact_out, dataset_in, schema_file
from closedloop.components.data_processing.validate_data.component import validate_data
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.ml.schema import InputSchema, infer_schema
from closedloop.registry import Lineage, Registry
from closedloop.registry.layout import SCHEMA_FILE
from closedloop.storage import Store


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generate_transactions(400, seed=5)


@pytest.fixture(scope="module")
def expected(clean: pd.DataFrame) -> InputSchema:
    """The contract, as a champion's schema would be: inferred on other clean rows."""
    return infer_schema(generate_transactions(2000, seed=6), TARGET)


class Outputs:
    def __init__(self, out: Path) -> None:
        self.schema = artifact_out(dsl.Artifact, out, "schema")
        self.report = artifact_out(dsl.HTML, out, "report")
        self.metrics = artifact_out(dsl.Metrics, out, "metrics")


def run(frame: pd.DataFrame, tmp_path: Path, schema_uri: str = "", **kwargs: object) -> Outputs:
    dataset = dataset_in(tmp_path / "in" / "raw.parquet", frame, source="s3://raw/x.parquet")
    outputs = Outputs(tmp_path / "out")
    validate_data.python_func(
        dataset=dataset,
        target=TARGET,
        schema=outputs.schema,
        report=outputs.report,
        metrics=outputs.metrics,
        schema_uri=schema_uri,
        **kwargs,
    )
    return outputs


def test_clean_data_passes(clean: pd.DataFrame, tmp_path: Path) -> None:
    out = run(clean, tmp_path)
    schema = InputSchema.from_json(Path(out.schema.path).read_text())
    assert schema.target == TARGET
    assert schema.feature_names == tuple(c for c in clean.columns if c != TARGET)
    assert out.schema.metadata["task"] == "classification"
    assert out.schema.metadata["features"] == list(schema.feature_names)
    assert out.metrics.metadata["passed"] == 1.0
    assert out.metrics.metadata["n_rows"] == 400.0
    assert out.metrics.metadata["n_errors"] == 0.0
    assert out.metrics.metadata["amount.missing_rate"] == 0.0
    assert "PASSED" in Path(out.report.path).read_text()


def test_clean_data_passes_against_a_given_schema(
    clean: pd.DataFrame, expected: InputSchema, tmp_path: Path
) -> None:
    path = schema_file(expected, tmp_path / "champion" / "schema.json")
    out = run(clean, tmp_path, schema_uri=str(path))
    # The given schema is passed downstream unchanged, not re-inferred.
    assert Path(out.schema.path).read_text() == expected.to_json()
    assert out.metrics.metadata["passed"] == 1.0


def test_missing_target_column_fails_naming_it(clean: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"target column 'is_fraud' is not in s3://raw/x\.parquet"):
        run(clean.drop(columns=[TARGET]), tmp_path)


def test_all_null_column_fails_naming_it(clean: pd.DataFrame, tmp_path: Path) -> None:
    broken = clean.assign(country=None)
    with pytest.raises(ValueError, match=r"data validation failed .*country \(all_missing"):
        run(broken, tmp_path)


def test_all_null_column_fails_against_a_given_schema(
    clean: pd.DataFrame, expected: InputSchema, tmp_path: Path
) -> None:
    broken = clean.assign(account_age_days=np.nan)
    path = schema_file(expected, tmp_path / "schema.json")
    with pytest.raises(ValueError, match=r"failing: .*account_age_days \(") as err:
        run(broken, tmp_path, schema_uri=str(path))
    assert "all_missing" in str(err.value)


def test_the_report_and_metrics_are_written_before_failing(
    clean: pd.DataFrame, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError):
        run(clean.assign(country=None), tmp_path)
    report = (out_dir / "report").read_text()
    assert "FAILED" in report and "country" in report
    assert (out_dir / "schema").is_file()


def test_wrong_typed_column_fails_naming_it(
    clean: pd.DataFrame,
    expected: InputSchema,
    tmp_path: Path,
    s3_env: dict[str, str],
    bucket: str,
    s3_store: Store,
) -> None:
    # The expected schema comes from S3, as a champion's does in the training pipeline.
    uri = f"s3://{bucket}/registry/schema.json"
    s3_store.write_bytes(uri, expected.to_json().encode())
    broken = clean.assign(amount=clean["amount"].astype(str))  # as a CSV export gives it
    broken.loc[broken.index[:40], "amount"] = "twelve dollars"
    with pytest.raises(ValueError, match=r"failing: .*amount \(numeric_values"):
        run(broken, tmp_path, schema_uri=uri)


def test_unparseable_dates_fail_naming_the_column(
    clean: pd.DataFrame, expected: InputSchema, tmp_path: Path
) -> None:
    broken = clean.assign(transaction_time=clean["transaction_time"].astype(str))
    broken.loc[broken.index[:50], "transaction_time"] = "not a date"
    path = schema_file(expected, tmp_path / "schema.json")
    with pytest.raises(ValueError, match=r"transaction_time \(datetime_values"):
        run(broken, tmp_path, schema_uri=str(path))


def test_quality_thresholds_are_enforced(tmp_path: Path) -> None:
    dirty = generate_transactions(400, seed=5, dirty=1.0)
    with pytest.raises(ValueError, match="data validation failed") as err:
        run(dirty, tmp_path)
    message = str(err.value)
    assert re.search(r"amount \([^)]*missing_rate", message)
    assert "duplicate_rate" in message
    # The same rows pass when the thresholds allow what they hold.
    out = run(
        dirty,
        tmp_path / "lenient",
        max_missing_rate=0.5,
        max_duplicate_rate=0.2,
        max_outlier_rate=0.2,
        max_inconsistent_format_rate=0.9,
    )
    assert out.metrics.metadata["passed"] == 1.0
    assert out.metrics.metadata["duplicate_rate"] > 0.05


def test_too_few_rows_fail(clean: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"<frame> \(min_rows"):
        run(clean, tmp_path, min_rows=1000)


# -- against the champion's schema, as the retraining pipeline validates ----------------
def promote_schema(store: Store, registry_uri: str, schema: InputSchema, root: Path) -> str:
    """Register a version holding *schema* and make it the champion; return its id."""
    source = schema_file(schema, root / "version" / SCHEMA_FILE).parent
    registry = Registry(store, registry_uri)
    version = registry.register("fraud", source, Lineage("s3://x/data.parquet", "00")).version
    registry.promote("fraud", version, "test champion")
    return version


def test_the_champion_schema_is_the_contract(
    clean: pd.DataFrame,
    expected: InputSchema,
    tmp_path: Path,
    s3_env: dict[str, str],
    bucket: str,
    s3_store: Store,
) -> None:
    registry_uri = f"s3://{bucket}/registry"
    champion = {"schema_uri": "champion", "registry_uri": registry_uri, "model_name": "fraud"}
    # No champion yet: inferred, and the schema artifact says so.
    first = run(clean, tmp_path / "first", **champion)
    assert "no champion yet" in first.schema.metadata["origin"]
    promote_schema(s3_store, registry_uri, expected, tmp_path)
    out = run(clean, tmp_path / "clean", **champion)
    assert out.schema.metadata["origin"] == "the champion's, fraud v1"
    assert Path(out.schema.path).read_text() == expected.to_json()
    assert "as a contract" in Path(out.report.path).read_text()
    # A new merchant category is accepted, reported, and passed on in the schema.
    novel = clean.copy()
    novel.loc[novel.index[:20], "merchant_category"] = "crypto"
    out = run(novel, tmp_path / "novel", **champion)
    assert "new_categories" in Path(out.report.path).read_text()
    passed_on = InputSchema.from_json(Path(out.schema.path).read_text())
    assert "crypto" in passed_on.column("merchant_category").allowed
    with pytest.raises(ValueError, match=r"failing: is_fraud \(known_labels"):
        run(
            clean.assign(is_fraud=clean["is_fraud"].where(clean.index > 20, 2)),
            tmp_path,
            **champion,
        )
    with pytest.raises(ValueError, match=r"failing: .*channel \(type_changed"):
        run(clean.assign(channel=(clean["channel"] == "online").astype(int)), tmp_path, **champion)


def test_champion_needs_a_registry(clean: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs registry_uri and model_name"):
        run(clean, tmp_path, schema_uri="champion")
