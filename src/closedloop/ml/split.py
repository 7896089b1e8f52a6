"""Train/holdout splits: stratified at random, by a time column, or by row order."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from closedloop.ml.schema import parse_datetimes

SplitStrategy = Literal["stratified", "time", "ordered"]
SPLIT_STRATEGIES: tuple[str, ...] = ("stratified", "time", "ordered")

# A target with at most this many distinct values is treated as classes to stratify on.
_MAX_STRATA = 50


def _strata(target: pd.Series) -> pd.Series | None:
    counts = target.value_counts(dropna=False)
    if len(counts) > _MAX_STRATA or counts.min() < 2:
        return None
    return target


def split_dataset(
    df: pd.DataFrame,
    target: str,
    *,
    test_size: float = 0.2,
    strategy: SplitStrategy = "stratified",
    time_column: str | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into a training set and a disjoint holdout.

    ``stratified`` shuffles with ``seed`` and keeps the class proportions of a discrete
    target (at most 50 distinct values, each on two rows or more); any other target is
    split at random without strata. ``time`` sorts by ``time_column`` (strings are
    parsed with :func:`closedloop.ml.schema.parse_datetimes`) and holds out the latest
    rows, so the model is judged on a future it has not seen. ``ordered`` trusts the
    frame's row order as time order (as :func:`closedloop.ml.retrain.assemble_retraining_rows`
    builds it) and holds out the last ``test_size`` share of rows, unshuffled: the
    most recent labelled slice, which neither an earlier champion nor the challenger
    was trained on.

    Args:
        df: Rows to split.
        target: Name of the target column.
        test_size: Holdout fraction, in (0, 1).
        strategy: ``stratified``, ``time`` or ``ordered``.
        time_column: Column to order by; required for ``time``, ignored otherwise.
        seed: Shuffling seed for ``stratified``.

    Returns:
        ``(train, holdout)``; both keep the original index labels.

    Raises:
        ValueError: On a bad fraction, unknown strategy, missing column, or too few
            rows to put one in each part.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    if target not in df.columns:
        raise ValueError(f"target column {target!r} not in frame")
    n_test = int(np.ceil(test_size * len(df)))
    if len(df) < 2 or n_test >= len(df):
        raise ValueError(f"cannot split {len(df)} rows with test_size={test_size}")
    if strategy == "stratified":
        train, test = train_test_split(
            df, test_size=n_test, random_state=seed, shuffle=True, stratify=_strata(df[target])
        )
        return train, test
    if strategy == "time":
        if time_column is None or time_column not in df.columns:
            raise ValueError(f"strategy='time' needs an existing time_column, got {time_column!r}")
        stamps, _ = parse_datetimes(df[time_column])
        if stamps.isna().any():
            raise ValueError(
                f"time_column {time_column!r} has {int(stamps.isna().sum())} missing or "
                "unparseable values; clean the data first"
            )
        order = np.argsort(stamps.to_numpy(), kind="stable")
        cut = len(df) - n_test
        return df.iloc[order[:cut]], df.iloc[order[cut:]]
    if strategy == "ordered":
        cut = len(df) - n_test
        return df.iloc[:cut], df.iloc[cut:]
    raise ValueError(f"unknown strategy {strategy!r}; use one of {SPLIT_STRATEGIES}")
