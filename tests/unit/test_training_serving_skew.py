"""No training/serving skew: the transform learned at training, applied to new raw rows,
is what the server computes from the same rows sent as JSON, as an ndarray or as a frame.

The training side is :func:`closedloop.ml.clean.apply_cleaning` with the fitted schema
(what :func:`~closedloop.ml.clean.clean_dataset` did to its training rows, applied to new
ones), then the served pipeline. The serving side is
:func:`closedloop.ml.schema.check_frame` with the same schema, then the same pipeline.
Both must give identical coerced frames, identical feature matrices and identical
predictions, for rows covering every column kind: numbers with missing, infinite, huge
and out-of-fence values, booleans as bools, 0/1 and strings, categories known, unknown
and missing, dates in every format of ``DATETIME_FORMATS`` and in ISO 8601 with offsets,
nanoseconds and week dates, and ``datetime64`` values.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.ml.clean import apply_cleaning, clean_dataset, fitted_schema
from closedloop.ml.schema import (
    _PER_VALUE_LIMIT,
    DATETIME_FORMATS,
    ColumnSpec,
    InputSchema,
    check_frame,
)
from closedloop.ml.train import ModelConfig, feature_frame, train_model

TARGET = "y"
SCHEMA = InputSchema(
    columns=(
        ColumnSpec("amount", "numeric", nullable=True),
        ColumnSpec("count", "numeric", nullable=True),
        ColumnSpec("flag", "boolean", nullable=True),
        ColumnSpec("color", "categorical", nullable=True, allowed=("blue", "green", "red")),
        ColumnSpec("when", "datetime", nullable=True),
        ColumnSpec("stamp", "datetime", nullable=True),
    ),
    target=TARGET,
    task="classification",
    classes=(0, 1),
)
FEATURES = list(SCHEMA.feature_names)
ISO_KINDS = ("iso-offset", "iso-nanos", "iso-week", "iso-basic", "iso-hour")
OFFSETS = ("Z", "+02:00", "-05:30", "+0100", "-11", "+00:00")
# A fixed example budget and derandomize: CI runs the same examples every time.
SKEW_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def render_date(moment: datetime, kind: str, nanos: int = 0, offset: str = "Z") -> str:
    """Write *moment* in one of DATETIME_FORMATS or one ISO 8601 form."""
    if kind == "iso-offset":
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + offset
    if kind == "iso-nanos":
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}" + offset
    if kind == "iso-week":
        year, week, day = moment.isocalendar()
        return f"{year}-W{week:02d}-{day}"
    if kind == "iso-basic":
        return moment.strftime("%Y%m%dT%H%M%S")
    if kind == "iso-hour":
        return moment.strftime("%Y-%m-%dT%H")
    return moment.strftime(kind)


def training_frame(n: int = 600, seed: int = 7) -> pd.DataFrame:
    """Raw training rows with every kind of dirt the cleaning step handles."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.0, 1.0, n)
    amount[rng.random(n) < 0.03] = 10.0 ** rng.uniform(5, 9)
    amount[rng.random(n) < 0.05] = np.nan
    amount[rng.random(n) < 0.01] = np.inf
    count: list[Any] = [int(v) for v in rng.integers(0, 20, n)]
    for i in np.flatnonzero(rng.random(n) < 0.1):
        count[i] = rng.choice(np.array([None, "null", "7", " 3.5 ", "inf"], dtype=object))
    flag_values = np.array([True, False, 0, 1, "true", "False", None], dtype=object)
    flag = list(rng.choice(flag_values, n, p=[0.3, 0.3, 0.1, 0.1, 0.08, 0.08, 0.04]))
    color_values = np.array(["red", "green", "blue", None, "null"], dtype=object)
    color = list(rng.choice(color_values, n, p=[0.4, 0.3, 0.22, 0.05, 0.03]))
    base = datetime(2026, 1, 1)
    moments = [base + timedelta(seconds=int(s)) for s in rng.integers(0, 90 * 86400, n)]
    kinds = [*DATETIME_FORMATS, *ISO_KINDS]
    when: list[Any] = [
        render_date(
            m,
            kinds[rng.integers(len(kinds))],
            nanos=int(rng.integers(10**9)),
            offset=OFFSETS[rng.integers(len(OFFSETS))],
        )
        for m in moments
    ]
    for i in np.flatnonzero(rng.random(n) < 0.04):
        when[i] = None
    stamp = pd.Series(
        np.datetime64("2026-01-01", "ns") + rng.integers(0, 90 * 86400 * 10**9, n), dtype="M8[ns]"
    )
    stamp[rng.random(n) < 0.04] = pd.NaT
    logit = 0.02 * np.nan_to_num(np.log1p(np.clip(amount, 0, 1e6))) - 1.0
    logit += np.array([0.8 if c == "red" else 0.0 for c in color])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "amount": amount,
            "count": pd.Series(count, dtype=object),
            "flag": pd.Series(flag, dtype=object),
            "color": pd.Series(color, dtype=object),
            "when": pd.Series(when, dtype=object),
            "stamp": stamp,
            TARGET: y,
        }
    )


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    raw = training_frame()
    cleaned, record = clean_dataset(raw, SCHEMA)
    fitted = fitted_schema(SCHEMA, record)
    config = ModelConfig("xgboost", {"n_estimators": 20, "max_depth": 3, "n_jobs": 1}, seed=0)
    pipeline = train_model(cleaned, fitted, config, engineer=True)
    return {"raw": raw, "cleaned": cleaned, "record": record, "schema": fitted, "model": pipeline}


def training_path(frame: pd.DataFrame, trained: dict[str, Any]) -> tuple[pd.DataFrame, ...]:
    """The transform learned at training applied to new raw rows."""
    rows = feature_frame(apply_cleaning(frame, trained["schema"]), trained["schema"])
    return rows, *predict(rows, trained)


def predict(rows: pd.DataFrame, trained: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    model = trained["model"]
    return model.named_steps["features"].transform(rows), model.predict_proba(rows)


def assert_same(served: pd.DataFrame, expected: tuple[pd.DataFrame, ...], trained: dict) -> None:
    rows, features, scores = expected
    pd.testing.assert_frame_equal(served.reset_index(drop=True), rows.reset_index(drop=True))
    served_features, served_scores = predict(served, trained)
    np.testing.assert_array_equal(served_features, features)
    np.testing.assert_array_equal(served_scores, scores)


# -- the fitted schema on the training rows themselves --------------------------------
def test_every_column_carries_the_fitted_cleaning(trained: dict[str, Any]) -> None:
    fitted = trained["schema"]
    assert all(spec.fill is not None for spec in fitted.columns)
    assert fitted.column("amount").clip is not None
    assert InputSchema.from_json(fitted.to_json()) == fitted
    assert trained["record"].count("drop_duplicates") == 0


def test_serving_the_training_rows_gives_what_the_model_was_trained_on(
    trained: dict[str, Any],
) -> None:
    raw, cleaned, fitted = trained["raw"], trained["cleaned"], trained["schema"]
    expected = feature_frame(cleaned, fitted)
    pd.testing.assert_frame_equal(feature_frame(apply_cleaning(raw, fitted), fitted), expected)
    pd.testing.assert_frame_equal(check_frame(raw[FEATURES], fitted).frame, expected)


# -- new raw rows ---------------------------------------------------------------------
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-50, max_value=500),
    st.integers(-(10**20), 10**20),
    st.just(10**400),
    st.none(),
    st.sampled_from(["nan", "NaN", "null", "", " ", "inf", "-Infinity", "1e400", "NULL"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-1000, 1000).map(str),
)
BOOLEANS = st.sampled_from(
    (
        *(True, False, 0, 1, 0.0, 1.0),
        *("true", "False", "TRUE", "0", "1", "1.0", " true "),
        *(None, "null", float("nan")),
    )
)
CATEGORIES = st.one_of(
    st.sampled_from(["red", "green", "blue", "purple", "", "null", "None", " red ", "Red"]),
    st.none(),
    st.integers(-5, 5),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=4),
)
MOMENTS = st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2200, 12, 31))


@st.composite
def dates(draw: st.DrawFn) -> tuple[Any, Any]:
    """One value of a datetime column: (as in a frame, as JSON delivers it)."""
    choice = draw(st.sampled_from(["text", "datetime", "aware", "timestamp", "missing"]))
    moment = draw(MOMENTS)
    if choice == "missing":
        value = draw(st.sampled_from([None, "null", "", "NaN"]))
        return value, value
    if choice == "datetime":
        return moment, moment.isoformat()
    if choice == "aware":
        minutes = draw(st.integers(-14 * 60 + 1, 14 * 60 - 1))
        aware = moment.replace(tzinfo=timezone(timedelta(minutes=minutes)))
        return aware, aware.isoformat()
    if choice == "timestamp":
        stamp = pd.Timestamp(moment) + pd.Timedelta(nanoseconds=draw(st.integers(0, 999)))
        return stamp, stamp.isoformat()
    text = render_date(
        moment,
        draw(st.sampled_from([*DATETIME_FORMATS, *ISO_KINDS])),
        nanos=draw(st.integers(0, 10**9 - 1)),
        offset=draw(st.sampled_from(OFFSETS)),
    )
    return text, text


@st.composite
def stamps(draw: st.DrawFn) -> tuple[Any, Any]:
    """One ``datetime64`` value: (in a datetime64 frame column, as JSON delivers it)."""
    if draw(st.booleans()) and draw(st.booleans()):
        return np.datetime64("NaT", "ns"), None
    moment = draw(st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2200, 1, 1)))
    value = np.datetime64(moment.replace(tzinfo=None), "ns") + np.timedelta64(
        draw(st.integers(0, 999)), "ns"
    )
    return value, np.datetime_as_string(value, unit="ns")


def column(values: list[Any]) -> pd.Series:
    """A frame column with the dtype pandas infers (``float64`` when every value is a float)."""
    series = pd.Series(values, dtype=object)
    try:
        return series.infer_objects()
    except OverflowError:  # pandas cannot infer over an int beyond the float range
        return series


def same(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, Any]]:
    return strategy.map(lambda value: (value, value))


ROW = st.fixed_dictionaries(
    {
        "amount": same(NUMBERS),
        "count": same(NUMBERS),
        "flag": same(BOOLEANS),
        "color": same(CATEGORIES),
        "when": dates(),
        "stamp": stamps(),
    }
)


# One moment written in every date format, appended to each example's rows, so every
# example has every format (and offsets beside naive values) in one column.
SWEEP = st.tuples(MOMENTS, st.integers(0, 10**9 - 1), st.sampled_from(OFFSETS))


def with_sweep(rows: list[dict], sweep: tuple[datetime, int, str]) -> list[dict]:
    moment, nanos, offset = sweep
    texts = [render_date(moment, k, nanos, offset) for k in (*DATETIME_FORMATS, *ISO_KINDS)]
    return rows + [{**rows[0], "when": (text, text)} for text in texts]


@SKEW_SETTINGS
@given(rows=st.lists(ROW, min_size=1, max_size=8), sweep=SWEEP)
def test_serving_matches_the_training_transform(
    trained: dict[str, Any], rows: list[dict], sweep: tuple[datetime, int, str]
) -> None:
    rows = with_sweep(rows, sweep)
    frame = pd.DataFrame({c: column([row[c][0] for row in rows]) for c in FEATURES})
    frame["stamp"] = frame["stamp"].astype("M8[ns]")
    expected = training_path(frame, trained)
    as_json = json.loads(json.dumps([[row[c][1] for c in FEATURES] for row in rows]))
    schema = trained["schema"]
    # A JSON body's rows as lists, as Seldon's ndarray (numpy picks the dtype: strings
    # when strings and numbers mix), and as a frame (records, batch inference).
    assert_same(check_frame(as_json, schema).frame, expected, trained)
    assert_same(check_frame(np.array(as_json), schema).frame, expected, trained)
    assert_same(check_frame(frame, schema).frame, expected, trained)
    # Long columns are converted once per distinct value: the same as value by value.
    copies = _PER_VALUE_LIMIT // len(rows) + 1
    tiled = training_path(pd.concat([frame] * copies, ignore_index=True), trained)
    rows_, features, scores = expected
    pd.testing.assert_frame_equal(tiled[0], pd.concat([rows_] * copies, ignore_index=True))
    np.testing.assert_array_equal(tiled[1], np.tile(features, (copies, 1)))
    np.testing.assert_array_equal(tiled[2], np.tile(scores, (copies, 1)))


def test_a_row_that_serving_refuses_is_one_training_would_have_imputed(
    trained: dict[str, Any],
) -> None:
    """The one allowed difference: a word in a numeric column, or a string that is not a
    date, is refused at serving, where training's coercion made it missing."""
    schema = trained["schema"]
    row = {"amount": "lots", "count": 1, "flag": 1, "color": "red", "when": None, "stamp": None}
    cleaned = apply_cleaning(pd.DataFrame([row]), schema)
    assert cleaned["amount"].iloc[0] == schema.column("amount").fill
    with pytest.raises(ValueError, match="amount"):
        check_frame([[row[c] for c in FEATURES]], schema)
