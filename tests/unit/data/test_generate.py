import time

import numpy as np
import pandas as pd
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.data.generate import CHANNELS, COUNTRIES, MERCHANT_CATEGORIES

COLUMNS = [
    "amount",
    "channel",
    "merchant_category",
    "hour",
    "country",
    "account_age_days",
    "card_present",
    "transaction_time",
    DEFAULT_TARGET,
]


def test_same_seed_same_frame_and_other_seed_other_frame():
    a = generate_transactions(2000, seed=3)
    pd.testing.assert_frame_equal(a, generate_transactions(2000, seed=3))
    assert not a.equals(generate_transactions(2000, seed=4))


def test_clean_frame_columns_types_and_ranges():
    df = generate_transactions(20_000, seed=0)
    assert list(df.columns) == COLUMNS
    assert len(df) == 20_000
    assert df.notna().all().all()
    assert not df.duplicated().any()
    assert (df["amount"] > 0).all()
    assert set(df["channel"]) == set(CHANNELS)
    assert set(df["merchant_category"]) == set(MERCHANT_CATEGORIES)
    assert set(df["country"]) == set(COUNTRIES)
    assert df["hour"].between(0, 23).all()
    assert set(df["card_present"].unique()) <= {0, 1}
    assert (df["card_present"][df["channel"] == "online"] == 0).all()
    assert pd.api.types.is_datetime64_any_dtype(df["transaction_time"])
    assert df["transaction_time"].is_monotonic_increasing
    assert df["transaction_time"].iloc[0] >= pd.Timestamp("2026-01-01")
    assert (df["transaction_time"].dt.hour == df["hour"]).all()
    assert 0.03 <= df[DEFAULT_TARGET].mean() <= 0.08


def test_covariate_shift_moves_channel_mix_and_amounts():
    base = generate_transactions(20_000, seed=1)
    shifted = generate_transactions(20_000, seed=1, covariate_shift=1.0)
    assert (base["channel"] == "online").mean() < 0.45
    assert (shifted["channel"] == "online").mean() > 0.7
    assert shifted["amount"].median() > 1.5 * base["amount"].median()


def test_concept_drift_moves_fraud_from_online_to_in_person():
    def fraud_rate_by_channel(df: pd.DataFrame) -> pd.Series:
        return df.groupby("channel")[DEFAULT_TARGET].mean()

    before = fraud_rate_by_channel(generate_transactions(40_000, seed=2))
    after = fraud_rate_by_channel(generate_transactions(40_000, seed=2, concept_drift=1.0))
    assert before["online"] > 2 * before["in_person"]
    assert after["in_person"] > 2 * after["online"]


def test_dirty_frame_has_every_kind_of_problem():
    df = generate_transactions(20_000, seed=5, dirty=1.0)
    assert len(df) == 20_000
    for column in ("amount", "country", "merchant_category", "account_age_days", DEFAULT_TARGET):
        assert df[column].isna().any(), column
    assert 0.07 < df.duplicated().mean() < 0.13
    clean_median = generate_transactions(20_000, seed=5)["amount"].median()
    assert (df["amount"] > 100 * clean_median).mean() > 0.03
    times = df["transaction_time"]
    assert times.map(type).eq(str).all()
    assert times.str.contains("T").mean() > 0.6
    assert times.str.contains("/").any()
    assert times.str.match(r"^[A-Z][a-z]{2} ").any()


def test_dirty_duplicates_are_exact_copies_of_a_neighbouring_row():
    df = generate_transactions(5000, seed=6, dirty=0.5)
    duplicated = np.flatnonzero(df.duplicated().to_numpy())
    assert duplicated.size > 0
    previous = df.iloc[duplicated - 1].reset_index(drop=True)
    copies = df.iloc[duplicated].reset_index(drop=True)
    # Each copy follows its original (or another copy of it) within the same second.
    assert (previous["transaction_time"] == copies["transaction_time"]).mean() > 0.95


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_rows": 0},
        {"n_rows": 10, "dirty": 1.5},
        {"n_rows": 10, "covariate_shift": -0.1},
        {"n_rows": 10, "concept_drift": 2.0},
        {"n_rows": 10, "days": 0},
    ],
)
def test_rejects_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        generate_transactions(**kwargs)


def test_one_million_rows_in_a_few_seconds():
    started = time.perf_counter()
    df = generate_transactions(1_000_000, seed=0)
    assert len(df) == 1_000_000
    assert time.perf_counter() - started < 8.0
