import numpy as np
import pandas as pd
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.ml.split import split_dataset


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_transactions(3000, seed=4)


def _assert_partition(df, train, test):
    assert set(train.index).isdisjoint(test.index)
    assert sorted([*train.index, *test.index]) == list(df.index)
    pd.testing.assert_frame_equal(pd.concat([train, test]).sort_index(), df)


def test_stratified_split_is_a_disjoint_partition_keeping_class_shares(frame):
    train, test = split_dataset(frame, DEFAULT_TARGET, test_size=0.25, seed=1)
    _assert_partition(frame, train, test)
    assert len(test) == 750
    rate = frame[DEFAULT_TARGET].mean()
    assert abs(test[DEFAULT_TARGET].mean() - rate) < 0.005
    assert abs(train[DEFAULT_TARGET].mean() - rate) < 0.005


def test_stratified_split_depends_on_the_seed_only(frame):
    a = split_dataset(frame, DEFAULT_TARGET, seed=1)[1]
    b = split_dataset(frame, DEFAULT_TARGET, seed=1)[1]
    c = split_dataset(frame, DEFAULT_TARGET, seed=2)[1]
    assert a.index.equals(b.index)
    assert not a.index.equals(c.index)


def test_time_split_holds_out_the_latest_rows(frame):
    shuffled = frame.sample(frac=1.0, random_state=0)
    train, test = split_dataset(
        shuffled, DEFAULT_TARGET, test_size=0.2, strategy="time", time_column="transaction_time"
    )
    _assert_partition(shuffled.sort_index(), train.sort_index(), test.sort_index())
    assert train["transaction_time"].max() <= test["transaction_time"].min()
    assert len(test) == 600


def test_ordered_split_holds_out_the_last_rows_in_row_order(frame):
    shuffled = frame.sample(frac=1.0, random_state=0)
    train, test = split_dataset(shuffled, DEFAULT_TARGET, test_size=0.2, strategy="ordered", seed=9)
    # No shuffling and no time column: the last 20% of rows as they stand, in order.
    pd.testing.assert_frame_equal(test, shuffled.iloc[-600:])
    pd.testing.assert_frame_equal(train, shuffled.iloc[:-600])
    again = split_dataset(shuffled, DEFAULT_TARGET, test_size=0.2, strategy="ordered", seed=1)
    assert again[1].index.equals(test.index)


def test_time_split_parses_string_dates():
    df = pd.DataFrame(
        {
            "t": [
                "03/01/2026 00:00:00",
                "2026-01-01T00:00:00",
                "Jan 02 2026 00:00:00",
                "2026-01-04",
            ],
            "y": [1, 0, 1, 0],
        }
    )
    train, test = split_dataset(df, "y", test_size=0.5, strategy="time", time_column="t")
    assert list(train.index) == [1, 2]
    assert list(test.index) == [0, 3]


def test_continuous_target_is_split_without_strata():
    df = pd.DataFrame({"x": np.arange(100), "y": np.linspace(0, 1, 100)})
    train, test = split_dataset(df, "y", test_size=0.3)
    _assert_partition(df, train, test)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_size": 0.0}, "test_size"),
        ({"test_size": 1.0}, "test_size"),
        ({"strategy": "time"}, "time_column"),
        ({"strategy": "time", "time_column": "nope"}, "time_column"),
        ({"strategy": "random"}, "unknown strategy"),
    ],
)
def test_invalid_arguments(frame, kwargs, message):
    with pytest.raises(ValueError, match=message):
        split_dataset(frame, DEFAULT_TARGET, **kwargs)


def test_missing_target_and_tiny_frames(frame):
    with pytest.raises(ValueError, match="target"):
        split_dataset(frame.drop(columns=[DEFAULT_TARGET]), DEFAULT_TARGET)
    with pytest.raises(ValueError, match="cannot split 1 rows"):
        split_dataset(frame.head(1), DEFAULT_TARGET)
