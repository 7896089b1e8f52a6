import json

import numpy as np
import pandas as pd
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.ml.clean import CleanOptions, clean_dataset
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
