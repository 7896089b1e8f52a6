import json

import numpy as np
import pandas as pd
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.ml.clean import CleanOptions, apply_cleaning, clean_dataset, fitted_schema
from closedloop.ml.schema import ColumnSpec, InputSchema, check_frame, datetime_text
from closedloop.ml.validate import outlier_bounds, validate_dataset


@pytest.fixture(scope="module")
def dirty() -> pd.DataFrame:
    return generate_transactions(6000, seed=12, dirty=1.0)


def test_clean_fixes_what_validate_flagged(schema, dirty):
    before = validate_dataset(dirty, schema)
    assert not before.passed
    cleaned, record = clean_dataset(dirty, schema)
    after = validate_dataset(cleaned, schema)
    assert after.passed, after.summary()
    assert after.warnings == ()
    assert record.n_rows_in == len(dirty)
    assert record.n_rows_out == len(cleaned)


def test_cleaned_frame_types_and_content(schema, dirty):
    cleaned, _ = clean_dataset(dirty, schema)
    assert cleaned.notna().all().all()
    assert not cleaned.duplicated().any()
    assert cleaned.index.equals(pd.RangeIndex(len(cleaned)))
    assert pd.api.types.is_datetime64_any_dtype(cleaned["transaction_time"])
    assert cleaned[DEFAULT_TARGET].dtype == np.int64
    for column in ("amount", "hour", "account_age_days", "card_present"):
        assert cleaned[column].dtype == np.float64


def test_record_counts_every_choice(schema, dirty):
    _, record = clean_dataset(dirty, schema)
    # Counts are recomputed here from the raw frame, independently of the cleaner.
    assert record.count("drop_missing_target") == dirty[DEFAULT_TARGET].isna().sum()
    labelled = dirty[dirty[DEFAULT_TARGET].notna()].copy()
    labelled["transaction_time"] = pd.to_datetime(labelled["transaction_time"], format="mixed")
    assert record.count("drop_duplicates") == labelled.duplicated().sum()
    deduplicated = labelled.drop_duplicates()
    assert record.count("impute", "country") == deduplicated["country"].isna().sum()
    assert record.count("impute", "amount") == deduplicated["amount"].isna().sum()
    assert record.count("parse_dates", "transaction_time") == len(dirty)
    assert record.count("clip_outliers", "amount") > 0
    assert record.n_rows_out == len(deduplicated)
    impute = next(s for s in record.steps if s.action == "impute" and s.column == "country")
    assert impute.detail["strategy"] == "most_frequent"
    assert impute.detail["value"] == deduplicated["country"].mode().iloc[0]
    text = json.dumps(record.to_dict(), allow_nan=False)
    assert "clip_outliers" in text
    assert record.to_metrics()["amount.impute"] == record.count("impute", "amount")


def test_clipping_only_touches_outliers(schema, dirty):
    cleaned, record = clean_dataset(dirty, schema, CleanOptions(q_low=0.0, q_high=1.0))
    step = next(s for s in record.steps if s.action == "clip_outliers" and s.column == "amount")
    high = step.detail["fences"][1]
    assert cleaned["amount"].max() <= high
    bounds = outlier_bounds(cleaned["amount"].to_numpy())
    assert ((cleaned["amount"] < bounds[0]) | (cleaned["amount"] > bounds[1])).sum() == 0
    unclipped, _ = clean_dataset(dirty, schema, CleanOptions(clip_outliers=False))
    changed = unclipped["amount"] != cleaned["amount"]
    assert changed.sum() == step.count
    assert (unclipped["amount"][changed] > high).all()


def test_options_change_behaviour(schema, dirty):
    kept, record = clean_dataset(
        dirty,
        schema,
        CleanOptions(drop_duplicates=False, impute_categorical="missing", missing_token="UNK"),
    )
    assert record.count("drop_duplicates") == 0
    assert kept.duplicated().any()
    assert (kept["country"] == "UNK").sum() == record.count("impute", "country") > 0
    with pytest.raises(ValueError, match="q_low"):
        CleanOptions(q_low=0.9, q_high=0.1)


def test_bad_numbers_become_missing_then_imputed(schema, train_frame):
    df = train_frame.head(300).copy()
    df["hour"] = df["hour"].astype(object)
    df.loc[df.index[:2], "hour"] = ["noon", "inf"]
    cleaned, record = clean_dataset(df, schema)
    assert record.count("coerce_numeric", "hour") == 2
    assert record.count("impute", "hour") == 2
    assert cleaned["hour"].iloc[0] == df["hour"].iloc[2:].astype(float).median()
    assert validate_dataset(cleaned, schema).passed


def test_fills_are_fitted_for_every_column_even_without_missing_values(schema, train_frame):
    assert train_frame.isna().sum().sum() == 0
    cleaned, record = clean_dataset(train_frame, schema)
    assert record.count("impute") == 0  # nothing was missing: the report says so
    fitted = fitted_schema(schema, record)
    assert {c.name for c in fitted.columns if c.fill is None} == set()
    assert fitted.column("amount").fill == cleaned["amount"].median()
    assert fitted.column("channel").fill == cleaned["channel"].mode().iloc[0]
    assert fitted.column("card_present").fill in (0.0, 1.0)
    assert fitted.column("transaction_time").fill == datetime_text(
        cleaned["transaction_time"].median().to_datetime64()
    )
    step = next(s for s in record.steps if s.action == "clip_outliers" and s.column == "amount")
    assert fitted.column("amount").clip == (*step.detail["fences"], *step.detail["clipped_to"])
    # Everything else is the schema it was cleaned with; a refit replaces the old fit.
    assert fitted.with_cleaning({}, {}) == schema
    assert fitted_schema(fitted, record) == fitted
    # So a model trained on data without gaps serves a schema that accepts them.
    row = train_frame.head(1)[list(schema.feature_names)].astype(object)
    row.iloc[0, :] = None
    served = check_frame(row, fitted).frame
    assert served.notna().all().all()


def test_the_fitted_cleaning_applied_to_the_training_rows_gives_the_cleaned_rows(schema):
    dirty = generate_transactions(2000, seed=5, dirty=1.0)
    labelled = dirty[dirty[DEFAULT_TARGET].notna()]
    cleaned, record = clean_dataset(labelled, schema, CleanOptions(drop_duplicates=False))
    fitted = fitted_schema(schema, record)
    again = apply_cleaning(labelled, fitted).reset_index(drop=True)
    features = list(schema.feature_names)
    pd.testing.assert_frame_equal(again[features], cleaned[features])
    assert fitted.column("amount").clip is not None and fitted.column("country").fill is not None


def test_mean_fill_and_missing_token_are_what_serving_gets(schema, dirty):
    options = CleanOptions(impute_numeric="mean", impute_categorical="missing", missing_token="UNK")
    cleaned, record = clean_dataset(dirty, schema, options)
    fitted = fitted_schema(schema, record)
    assert fitted.column("country").fill == "UNK"
    assert fitted.column("channel").fill == "UNK"  # a fill even where nothing was missing
    amount = fitted.column("amount")
    # The mean was taken before clipping, as the fill is applied before the clip.
    assert amount.fill == record.fills["amount"]
    row = [[None if c == "amount" else cleaned[c].iloc[0] for c in schema.feature_names]]
    served = check_frame(row, fitted).frame["amount"].iloc[0]
    low, high, low_to, high_to = amount.clip
    expected = high_to if amount.fill > high else low_to if amount.fill < low else amount.fill
    assert served == expected


def test_a_boolean_column_without_values_gets_a_numeric_fill():
    schema = InputSchema(
        (ColumnSpec("b", "boolean", nullable=True), ColumnSpec("x", "numeric")),
        target="y",
        task="regression",
    )
    frame = pd.DataFrame({"b": [None] * 5, "x": [1.0, 2, 3, 4, 5], "y": [1.0, 2, 3, 4, 5]})
    cleaned, record = clean_dataset(frame, schema)
    assert record.fills["b"] == 0.0 and cleaned["b"].tolist() == [0.0] * 5
