import json

import numpy as np
import pandas as pd
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.data.generate import COUNTRIES
from closedloop.ml.schema import infer_schema
from closedloop.ml.validate import (
    QualityThresholds,
    SchemaContract,
    evolve_schema,
    outlier_bounds,
    validate_dataset,
)


def _errors(report):
    return {(i.check, i.column) for i in report.errors}


def test_clean_data_passes(schema, train_frame):
    report = validate_dataset(train_frame, schema)
    assert report.passed, report.summary()
    assert report.errors == ()
    assert report.n_rows == len(train_frame)
    assert report.summary().startswith("PASSED")
    assert set(report.column_stats) == {*schema.feature_names, DEFAULT_TARGET}


def test_dirty_data_fails_and_names_the_columns(schema):
    dirty = generate_transactions(5000, seed=3, dirty=1.0)
    report = validate_dataset(dirty, schema)
    assert not report.passed
    errors = _errors(report)
    assert ("missing_rate", "amount") in errors
    assert ("missing_rate", "country") in errors
    assert ("outlier_rate", "amount") in errors
    assert ("in_range", "amount") in errors
    assert ("inconsistent_format", "transaction_time") in errors
    assert ("duplicate_rate", None) in errors
    for column in ("amount", "country", "transaction_time"):
        assert column in report.summary()
    warnings = {(i.check, i.column) for i in report.warnings}
    assert ("not_nullable", "merchant_category") in warnings
    missing = next(i for i in report.errors if i.check == "missing_rate" and i.column == "amount")
    assert missing.observed == pytest.approx(dirty["amount"].isna().mean())
    assert missing.threshold == 0.2


def test_wrong_types_and_structure_become_issues_not_exceptions(schema, train_frame):
    df = train_frame.head(500).copy()
    df["amount"] = df["amount"].astype(object)
    df.loc[df.index[:3], "amount"] = "n/a"
    df["channel"] = np.nan
    df["transaction_time"] = df["transaction_time"].astype(str)
    df.loc[df.index[0], "transaction_time"] = "not a date"
    df["extra"] = 1
    df = df.drop(columns=["hour"])
    report = validate_dataset(df, schema)
    errors = _errors(report)
    assert ("numeric_values", "amount") in errors
    assert ("all_missing", "channel") in errors
    assert ("missing_column", "hour") in errors
    assert ("datetime_values", "transaction_time") in errors
    assert ("extra_column", "extra") in {(i.check, i.column) for i in report.warnings}
    numeric = next(i for i in report.issues if i.check == "numeric_values")
    assert numeric.examples[0].endswith("'n/a'")
    assert numeric.observed == pytest.approx(3 / 500)


def test_empty_frame_and_missing_target(schema, train_frame):
    empty = validate_dataset(train_frame.head(0), schema)
    assert not empty.passed
    assert ("min_rows", None) in _errors(empty)
    nothing = validate_dataset(pd.DataFrame(), schema)
    assert ("missing_target", DEFAULT_TARGET) in _errors(nothing)
    assert ("missing_column", "amount") in _errors(nothing)
    no_target = validate_dataset(train_frame.drop(columns=[DEFAULT_TARGET]), schema)
    assert _errors(no_target) == {("missing_target", DEFAULT_TARGET)}


def test_label_checks(schema, train_frame):
    single = validate_dataset(train_frame.assign(**{DEFAULT_TARGET: 0}), schema)
    assert ("single_class", DEFAULT_TARGET) in _errors(single)
    rare = train_frame.copy()
    rare[DEFAULT_TARGET] = 0
    rare.loc[rare.index[:5], DEFAULT_TARGET] = 1
    assert ("class_balance", DEFAULT_TARGET) in _errors(validate_dataset(rare, schema))
    unknown = train_frame.copy()
    unknown.loc[unknown.index[0], DEFAULT_TARGET] = 7
    assert ("known_labels", DEFAULT_TARGET) in _errors(validate_dataset(unknown, schema))


def test_rare_out_of_schema_values_are_warnings_common_ones_errors(schema, train_frame):
    df = train_frame.copy()
    df.loc[df.index[:10], "merchant_category"] = "casino"
    report = validate_dataset(df, schema)
    assert report.passed
    assert ("allowed_categories", "merchant_category") in {
        (i.check, i.column) for i in report.warnings
    }
    df.loc[df.index[:400], "merchant_category"] = "casino"
    assert ("allowed_categories", "merchant_category") in _errors(validate_dataset(df, schema))


def test_thresholds_are_honoured(schema, train_frame):
    df = train_frame.copy()
    df.loc[df.index[:400], "account_age_days"] = np.nan  # 10% missing
    assert ("missing_rate", "account_age_days") not in _errors(validate_dataset(df, schema))
    strict = QualityThresholds(max_missing_rate=0.05)
    assert ("missing_rate", "account_age_days") in _errors(validate_dataset(df, schema, strict))


def test_outlier_bounds():
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, 10_000)
    low, high = outlier_bounds(normal, k=3.0)
    assert -6 < low < -4 and 4 < high < 6
    lognormal = rng.lognormal(3, 1, 10_000)
    low, high = outlier_bounds(lognormal)
    # Right-skewed positive data: fences on the log scale, no low fence.
    assert low == 0.0
    assert ((lognormal > high).mean()) < 0.001
    assert outlier_bounds(np.zeros(100)) is None
    assert outlier_bounds(np.array([1.0, np.nan])) is None


def test_report_outputs(schema):
    report = validate_dataset(generate_transactions(2000, seed=8, dirty=1.0), schema)
    metrics = report.to_metrics()
    assert metrics["passed"] == 0.0
    assert metrics["n_errors"] == len(report.errors)
    assert metrics["amount.missing_rate"] == report.column_stats["amount"]["missing_rate"]
    assert all(isinstance(v, float) for v in metrics.values())
    json.dumps(report.to_dict(), allow_nan=False)
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>")
    assert "missing_rate" in page and "transaction_time" in page
    assert "<script" not in page and "http" not in page
    summary = report.summary()
    assert "\n" not in summary and summary.startswith("FAILED")


# -- a given schema as a contract -----------------------------------------------------
def test_the_contract_rejects_what_self_inference_accepts(train_frame):
    """Retraining data validated against a schema inferred from itself passes anything."""
    champion = infer_schema(train_frame, DEFAULT_TARGET)
    changed = generate_transactions(1000, seed=40)
    changed["country"] = changed["country"].map({c: i for i, c in enumerate(COUNTRIES)})
    changed.loc[changed.index[:30], DEFAULT_TARGET] = 2  # a class the champion never saw
    circular = validate_dataset(changed, infer_schema(changed, DEFAULT_TARGET))
    assert circular.passed, circular.summary()
    report = validate_dataset(changed, champion, contract=SchemaContract())
    assert not report.passed
    errors = _errors(report)
    assert ("type_changed", "country") in errors
    assert ("known_labels", DEFAULT_TARGET) in errors


def test_ranges_may_widen_by_the_stated_slack_and_say_so(train_frame):
    champion = infer_schema(train_frame, DEFAULT_TARGET)
    spec = champion.column("account_age_days")
    span = spec.maximum - spec.minimum
    wider = generate_transactions(1000, seed=41)
    beyond = int(spec.maximum + 0.3 * span)
    wider.loc[wider.index[:3], "account_age_days"] = beyond
    report = validate_dataset(wider, champion, contract=SchemaContract(range_slack=0.5))
    assert report.passed, report.summary()
    (widened,) = [i for i in report.warnings if i.check == "range_widened"]
    assert widened.column == "account_age_days" and "widen by 0.5 of its span" in widened.message
    evolved = evolve_schema(wider, champion, SchemaContract(range_slack=0.5))
    assert evolved.column("account_age_days").maximum == beyond
    assert evolved.column("amount") == champion.column("amount")
    # Beyond the slack: out of range (rate-tolerated as before), and still reported.
    strict = validate_dataset(wider, champion, contract=SchemaContract(range_slack=0.1))
    assert ("in_range", "account_age_days") in {(i.check, i.column) for i in strict.issues}
    assert evolve_schema(wider, champion, SchemaContract(range_slack=0.1)).column(
        "account_age_days"
    ).maximum == pytest.approx(spec.maximum + 0.1 * span)


def test_new_categories_are_reported_and_allowed_up_to_a_limit(train_frame):
    champion = infer_schema(train_frame, DEFAULT_TARGET)
    rows = generate_transactions(1000, seed=42)
    rows.loc[rows.index[:60], "country"] = "NL"  # 6% of rows: an error without the contract
    assert ("allowed_categories", "country") in _errors(validate_dataset(rows, champion))
    report = validate_dataset(rows, champion, contract=SchemaContract(max_new_categories=1))
    assert report.passed, report.summary()
    (new,) = [i for i in report.warnings if i.check == "new_categories"]
    assert new.column == "country" and "'NL'" in new.message
    assert "NL" in evolve_schema(rows, champion, SchemaContract()).column("country").allowed
    rows.loc[rows.index[60:70], "country"] = "PT"
    report = validate_dataset(rows, champion, contract=SchemaContract(max_new_categories=1))
    assert ("new_categories", "country") in _errors(report)


def test_under_a_contract_columns_must_match(schema, train_frame):
    extra = train_frame.assign(customer_id="c1")
    assert validate_dataset(extra, schema).passed
    report = validate_dataset(extra, schema, contract=SchemaContract())
    assert ("extra_column", "customer_id") in _errors(report)
    assert report.to_dict()["contract"] == {"range_slack": 0.5, "max_new_categories": 3}
    assert "as a contract" in report.to_html()
    assert evolve_schema(train_frame, schema, SchemaContract()) == schema
