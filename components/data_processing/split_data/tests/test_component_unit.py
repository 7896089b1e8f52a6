"""split_data called directly: disjoint parts, stratified, by time or by row order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from closedloop.components.conftest import TARGET, artifact_out, dataset_in
from closedloop.components.data_processing.split_data.component import split_data
from kfp import dsl

from closedloop.data import generate_transactions


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_transactions(1000, seed=11)


def run(frame: pd.DataFrame, tmp_path: Path, **kwargs: object) -> tuple[pd.DataFrame, ...]:
    dataset = dataset_in(tmp_path / "in.parquet", frame, source="s3://b/k.parquet", sha256="cd")
    train = artifact_out(dsl.Dataset, tmp_path / "out", "train")
    holdout = artifact_out(dsl.Dataset, tmp_path / "out", "holdout")
    split_data.python_func(dataset=dataset, target=TARGET, train=train, holdout=holdout, **kwargs)
    for part in (train, holdout):
        assert part.metadata["source"] == "s3://b/k.parquet"
        assert part.metadata["sha256"] == "cd"
    fit_rows, held = pd.read_parquet(train.path), pd.read_parquet(holdout.path)
    assert train.metadata["rows"] == len(fit_rows) and holdout.metadata["rows"] == len(held)
    return fit_rows, held


def rows(frame: pd.DataFrame) -> set[tuple]:
    return set(frame.itertuples(index=False, name=None))


def test_stratified_split(frame: pd.DataFrame, tmp_path: Path) -> None:
    train, holdout = run(frame, tmp_path, test_size=0.25, seed=1)
    assert (len(train), len(holdout)) == (750, 250)
    assert rows(train).isdisjoint(rows(holdout))
    assert rows(train) | rows(holdout) == rows(frame)
    rate = frame[TARGET].mean()
    assert abs(holdout[TARGET].mean() - rate) < 0.01
    assert abs(train[TARGET].mean() - rate) < 0.01


def test_the_seed_decides_the_split(frame: pd.DataFrame, tmp_path: Path) -> None:
    _, first = run(frame, tmp_path / "a", seed=1)
    _, same = run(frame, tmp_path / "b", seed=1)
    _, other = run(frame, tmp_path / "c", seed=2)
    pd.testing.assert_frame_equal(first, same)
    assert rows(first) != rows(other)


def test_time_split_holds_out_the_latest_rows(frame: pd.DataFrame, tmp_path: Path) -> None:
    shuffled = frame.sample(frac=1.0, random_state=0)
    train, holdout = run(
        shuffled, tmp_path, strategy="time", time_column="transaction_time", test_size=0.2
    )
    assert len(holdout) == 200
    assert train["transaction_time"].max() <= holdout["transaction_time"].min()


def test_time_split_without_a_column_fails(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="time_column"):
        run(frame, tmp_path, strategy="time")


def test_ordered_split_holds_out_the_last_rows_as_they_stand(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, holdout = run(shuffled, tmp_path, strategy="ordered", test_size=0.2, seed=5)
    pd.testing.assert_frame_equal(holdout, shuffled.iloc[800:].reset_index(drop=True))
    pd.testing.assert_frame_equal(train, shuffled.iloc[:800])


def test_an_unknown_strategy_fails_naming_the_choices(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown strategy 'random'.*'ordered'"):
        run(frame, tmp_path, strategy="random")
