import json
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.ml.schema import (
    ISO8601,
    ColumnSpec,
    InputSchema,
    SchemaError,
    check_frame,
    coerce_frame,
    infer_schema,
    parse_datetime_value,
    parse_datetimes,
)

VALID_ROW = [12.5, "online", "grocery", 3, "US", 100, 0, "2026-01-02T10:00:00"]


def test_infer_schema_kinds_categories_and_ranges(schema, train_frame):
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {
        "amount": "numeric",
        "channel": "categorical",
        "merchant_category": "categorical",
        "hour": "numeric",
        "country": "categorical",
        "account_age_days": "numeric",
        "card_present": "numeric",
        "transaction_time": "datetime",
    }
    assert schema.feature_names == tuple(c for c in train_frame.columns if c != DEFAULT_TARGET)
    assert schema.target == DEFAULT_TARGET
    assert schema.task == "classification"
    assert schema.classes == (0, 1)
    assert schema.column("channel").allowed == ("in_person", "online")
    assert len(schema.column("merchant_category").allowed) == 8
    amount = schema.column("amount")
    # Non-negative data keeps a floor of 0; the ceiling has slack above the observed max.
    assert amount.minimum == 0.0
    assert amount.maximum > generate_transactions(4000, seed=101)["amount"].max()
    assert not any(c.nullable for c in schema.columns)


def test_infer_schema_on_dirty_data_detects_string_dates_and_nullability():
    dirty = generate_transactions(3000, seed=2, dirty=1.0)
    schema = infer_schema(dirty, DEFAULT_TARGET)
    assert schema.column("transaction_time").kind == "datetime"
    assert schema.column("amount").nullable
    assert schema.column("country").nullable
    assert not schema.column("channel").nullable
    # The float target with NaN still yields integer classes.
    assert schema.classes == (0, 1)


def test_infer_schema_other_kinds_and_tasks():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "flag": rng.random(300) < 0.5,
            "user_id": [f"u{i}" for i in range(300)],
            "price": rng.normal(100, 10, 300),
            "y": rng.normal(size=300),
        }
    )
    schema = infer_schema(df, "y", max_categories=50)
    assert schema.task == "regression" and schema.classes is None
    assert schema.column("flag").kind == "boolean"
    assert schema.column("user_id").kind == "categorical"
    assert schema.column("user_id").allowed is None
    assert schema.column("price").minimum < df["price"].min()
    labels = infer_schema(df.assign(y=rng.choice(["a", "b", "c"], 300)), "y")
    assert labels.task == "classification" and labels.classes == ("a", "b", "c")
    with pytest.raises(ValueError, match="target column 'missing'"):
        infer_schema(df, "missing")


def test_schema_json_round_trip(schema):
    text = schema.to_json()
    json.loads(text)
    assert InputSchema.from_json(text) == schema
    assert InputSchema.from_dict(schema.to_dict()) == schema
    other = InputSchema(
        columns=(ColumnSpec("c", "categorical", True, allowed=("x", "y")),),
        target="label",
        task="classification",
        classes=("no", "yes"),
    )
    assert InputSchema.from_json(other.to_json()) == other


def test_schema_rejects_inconsistent_definitions():
    with pytest.raises(ValueError, match="duplicate"):
        InputSchema((ColumnSpec("a", "numeric"), ColumnSpec("a", "numeric")), "y", "regression")
    with pytest.raises(ValueError, match="two classes"):
        InputSchema((ColumnSpec("a", "numeric"),), "y", "classification", (1,))
    with pytest.raises(ValueError, match="kind"):
        ColumnSpec("a", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported schema version"):
        InputSchema.from_dict({"version": 99, "columns": [], "target": "y", "task": "regression"})


def test_parse_datetimes_mixed_formats():
    values = pd.Series(
        ["2026-01-02T03:04:05", "02/01/2026 03:04:05", "Jan 02 2026 03:04:05", None, "soon"]
    )
    parsed, formats = parse_datetimes(values)
    assert (parsed.iloc[:3] == pd.Timestamp("2026-01-02 03:04:05")).all()
    assert parsed.iloc[3:].isna().all()
    assert formats.iloc[0] != formats.iloc[1] != formats.iloc[2]
    assert formats.iloc[4] is None


def test_check_frame_accepts_a_numpy_string_array(schema):
    # A JSON ndarray mixing numbers and strings reaches the server as strings.
    rows = np.array([VALID_ROW, VALID_ROW])
    assert rows.dtype.kind == "U"
    checked = check_frame(rows, schema)
    frame = checked.frame
    assert list(frame.columns) == list(schema.feature_names)
    assert frame["amount"].dtype == np.float64
    assert frame["hour"].tolist() == [3.0, 3.0]
    assert frame["channel"].tolist() == ["online", "online"]
    assert frame["transaction_time"].dtype == "datetime64[ns]"
    assert checked.unknown_categories == {}


def test_check_frame_with_names_and_a_frame(schema):
    names = list(schema.feature_names)
    checked = check_frame([VALID_ROW], schema, names=names)
    assert checked.frame.shape == (1, len(names))
    frame = pd.DataFrame([VALID_ROW], columns=names)
    assert check_frame(frame, schema).frame.equals(checked.frame)
    # A single row may come as a flat list.
    assert check_frame(np.array(VALID_ROW, dtype=object), schema).frame.equals(checked.frame)


def test_unknown_categories_are_counted_not_rejected(schema):
    rows = [list(VALID_ROW), list(VALID_ROW)]
    rows[0][2] = "casino"
    rows[1][4] = "ZZ"
    checked = check_frame(rows, schema)
    assert checked.unknown_categories == {"merchant_category": 1, "country": 1}
    assert checked.frame["merchant_category"].iloc[0] == "casino"


def _replace(position, value):
    row = list(VALID_ROW)
    row[position] = value
    return [VALID_ROW, row]


@pytest.mark.parametrize(
    ("rows", "names", "expected"),
    [
        ([VALID_ROW[:7]], None, r"wrong width: expected 8 columns"),
        (
            _replace(0, "abc"),
            None,
            r"row 1: column 'amount' \(position 0\) expects numbers; got 'abc'",
        ),
        (_replace(3, "3 pm"), None, r"row 1: column 'hour' \(position 3\)"),
        (_replace(0, None), None, r"row 1: column 'amount'.*missing values"),
        (_replace(5, float("nan")), None, r"row 1: column 'account_age_days'.*missing values"),
        (_replace(2, None), None, r"row 1: column 'merchant_category'.*missing values"),
        (_replace(0, float("inf")), None, r"row 1: column 'amount'.*infinite"),
        (_replace(0, "-Infinity"), None, r"row 1: column 'amount'.*infinite"),
        (
            _replace(7, "yesterday"),
            None,
            r"row 1: column 'transaction_time'.*dates.*got 'yesterday'",
        ),
        (_replace(7, 1767225600), None, r"row 1: column 'transaction_time'.*dates"),
        ([], None, r"empty input"),
        (np.empty((0, 8)), None, r"empty input"),
        ([[VALID_ROW]], None, r"2-D"),
        ([VALID_ROW, VALID_ROW[:7]], None, r"different lengths"),
    ],
)
def test_check_frame_rejects_bad_rows_precisely(schema, rows, names, expected):
    with pytest.raises(SchemaError, match=expected):
        check_frame(rows, schema, names=names)


def test_check_frame_rejects_bad_names(schema):
    names = list(schema.feature_names)
    swapped = [names[1], names[0], *names[2:]]
    with pytest.raises(SchemaError, match=r"out of order: position 0 is 'channel'"):
        check_frame([VALID_ROW], schema, names=swapped)
    with pytest.raises(
        SchemaError, match=r"missing columns: \['amount'\]; unexpected columns: \['amt'\]"
    ):
        check_frame([VALID_ROW], schema, names=["amt", *names[1:]])
    with pytest.raises(SchemaError, match=r"unexpected columns: \['is_fraud'\]"):
        check_frame(pd.DataFrame([[*VALID_ROW, 0]], columns=[*names, "is_fraud"]), schema)
    with pytest.raises(SchemaError, match=r"7 names given for 8 columns"):
        check_frame([VALID_ROW], schema, names=names[:7])
    with pytest.raises(SchemaError, match=r"duplicated columns: \['amount'\]"):
        check_frame([VALID_ROW], schema, names=["amount", "amount", *names[2:]])


def test_nullable_and_boolean_columns():
    schema = InputSchema(
        columns=(
            ColumnSpec("x", "numeric", nullable=True),
            ColumnSpec("b", "boolean"),
            ColumnSpec("c", "categorical", nullable=True, allowed=("a",)),
        ),
        target="y",
        task="regression",
    )
    frame = check_frame([[None, "true", None], ["nan", False, "a"], [1, "0", "null"]], schema).frame
    assert frame["x"].isna().tolist() == [True, True, False]
    assert frame["b"].tolist() == [1.0, 0.0, 0.0]
    assert frame["c"].isna().tolist() == [True, False, True]
    with pytest.raises(SchemaError, match=r"row 0: column 'b'.*booleans"):
        check_frame([[1, 2, "a"]], schema)


def test_coerce_frame_selects_features_and_ignores_extra_columns(schema, holdout_frame):
    frame = coerce_frame(holdout_frame.head(20), schema)
    assert list(frame.columns) == list(schema.feature_names)
    assert frame.index.equals(holdout_frame.head(20).index)
    with pytest.raises(SchemaError, match=r"missing columns: \['amount'\]"):
        coerce_frame(holdout_frame.drop(columns=["amount"]), schema)


# -- one datetime parser for training and serving -------------------------------------
DATES = InputSchema((ColumnSpec("t", "datetime", nullable=True),), target="y", task="regression")


def _trained_and_served(values: list) -> tuple[list, list]:
    """The same values parsed as training does (a column) and as serving does (rows)."""
    # Enough copies that the column goes the way of long columns too (distinct values).
    long = pd.Series(values * 40, dtype=object)
    trained = parse_datetimes(long)[0].iloc[: len(values)].tolist()
    served = check_frame([[v] for v in values], DATES).frame["t"].tolist()
    return trained, served


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # ISO week date: 2026-W05-6 is Saturday 31 January 2026 (training once refused it).
        (["2026-W05-6", "2026W056", "2026-W05"], ["2026-01-31", "2026-01-31", "2026-01-26"]),
        # Nanoseconds are kept, with or without an offset (serving once cut them to µs).
        (
            ["2026-01-31T12:00:00.123456789", "2026-01-31T12:00:00.123456789+02:00"],
            ["2026-01-31T12:00:00.123456789", "2026-01-31T10:00:00.123456789"],
        ),
        # A column mixing offsets: each value on its own (training once read the naive
        # value in its neighbour's offset: 10:00).
        (
            ["2026-01-31T12:00:00+02:00", "2026-01-31T12", "2026-01-31T12:00:00Z"],
            ["2026-01-31T10:00:00", "2026-01-31T12:00:00", "2026-01-31T12:00:00"],
        ),
    ],
    ids=["iso-week-date", "nanoseconds", "mixed-offsets"],
)
def test_training_and_serving_read_a_date_the_same(values, expected):
    trained, served = _trained_and_served(values)
    assert trained == served == [pd.Timestamp(e) for e in expected]


def test_one_definition_of_a_date():
    for text, expected in [
        ("2026-01-31T12:00:00", "2026-01-31 12:00:00"),
        (" 31/01/2026 12:00 ", "2026-01-31 12:00:00"),
        ("jan 31 2026 12:00:00", "2026-01-31 12:00:00"),
        ("2026-1-5", "2026-01-05"),
        ("20260131T120000-0130", "2026-01-31 13:30:00"),
        ("2026-01-31 12:00:00.5", "2026-01-31 12:00:00.5"),
        ("2026-01-31T12:00:00,25Z", "2026-01-31 12:00:00.25"),
    ]:
        ns, _ = parse_datetime_value(text)
        assert pd.Timestamp(ns) == pd.Timestamp(expected), text
    for text in [
        "2026-01",
        "2026",
        "2026-02-30",
        "2026-01-31T24:00:00",
        "2026-W54-1",
        "3000-01-01",
        "2026-01-31T12:00:00+25:00",
        "soon",
        "1767225600",
    ]:
        assert parse_datetime_value(text) is None, text
    aware = datetime(2026, 1, 31, 12, tzinfo=timezone(timedelta(hours=2)))
    assert parse_datetime_value(aware) == (pd.Timestamp("2026-01-31 10:00").value, "datetime64")
    assert parse_datetime_value(date(2026, 1, 31))[0] == pd.Timestamp("2026-01-31").value
    assert (
        parse_datetime_value(np.datetime64("2026-01-31T12", "h"))[0]
        == pd.Timestamp("2026-01-31 12:00").value
    )
    assert parse_datetime_value(1767225600) is None


def test_vectorized_parse_reports_formats_and_unparseable_values():
    values = pd.Series(["2026-01-31", "2026-01-31T12", None, "null", "soon", pd.Timestamp(0)] * 20)
    parsed, formats = parse_datetimes(values)
    assert formats.iloc[:6].tolist() == ["%Y-%m-%d", ISO8601, None, None, None, "datetime64"]
    assert parsed.iloc[2:5].isna().all()
    assert parsed.iloc[5] == pd.Timestamp(0)


# -- the fitted cleaning in the schema ------------------------------------------------
FITTED = InputSchema(
    columns=(
        ColumnSpec(
            "x", "numeric", minimum=0.0, maximum=100.0, fill=5.0, clip=(0.0, 50.0, 1.0, 40.0)
        ),
        ColumnSpec("b", "boolean", fill=True),
        ColumnSpec("c", "categorical", allowed=("a", "z"), fill="a"),
        ColumnSpec("t", "datetime", fill="2026-01-31T12:00:00.123456"),
    ),
    target="y",
    task="regression",
)
OLD_SCHEMA_JSON = """{
  "version": 1,
  "columns": [
    {"name": "x", "kind": "numeric", "nullable": false, "minimum": 0.0, "maximum": 100.0,
     "allowed": null},
    {"name": "c", "kind": "categorical", "nullable": true, "minimum": null, "maximum": null,
     "allowed": ["a", "z"]}
  ],
  "target": "y",
  "task": "regression",
  "classes": null
}"""


def test_fitted_schema_round_trips_through_json():
    text = FITTED.to_json()
    data = json.loads(text)
    assert data["columns"][0]["fill"] == 5.0 and data["columns"][0]["clip"] == [
        0.0,
        50.0,
        1.0,
        40.0,
    ]
    assert data["columns"][1]["fill"] == 1.0
    assert data["columns"][3]["fill"] == "2026-01-31T12:00:00.123456"
    restored = InputSchema.from_json(text)
    assert restored == FITTED
    assert restored.column("x").clip == (0.0, 50.0, 1.0, 40.0)
    assert restored.has_cleaning and restored.column("x").accepts_missing


def test_an_old_schema_without_fitted_cleaning_still_loads_and_behaves_as_before():
    old = InputSchema.from_json(OLD_SCHEMA_JSON)
    assert all(c.fill is None and c.clip is None for c in old.columns)
    assert not old.has_cleaning
    assert "fill" not in old.to_json() and "clip" not in old.to_json()
    with pytest.raises(SchemaError, match=r"column 'x'.*missing values"):
        check_frame([[None, "a"]], old)
    with pytest.raises(SchemaError, match=r"column 'x'.*infinite"):
        check_frame([[float("inf"), "a"]], old)
    frame = check_frame([[50.0, None]], old).frame  # no fill: a nullable column keeps NaN
    assert frame["x"].iloc[0] == 50.0 and pd.isna(frame["c"].iloc[0])
    # No fences either; the schema's range still bounds what reaches the model.
    assert check_frame([[500.0, "a"]], old).frame["x"].iloc[0] == 100.0


def test_serving_applies_the_fitted_cleaning():
    rows = [
        [None, None, None, None],
        ["inf", "null", "NaN", ""],
        [-1e300, "false", "zz", "2026-02-01"],
        [10**400, 1, "z", "2026-02-01T00:00:00+01:00"],
        [70, True, "a", np.datetime64("2026-01-01")],
        [25.5, "TRUE", " a ", pd.Timestamp("2026-01-01 01:00")],
    ]
    frame = check_frame(rows, FITTED).frame
    assert frame["x"].tolist() == [5.0, 5.0, 1.0, 5.0, 40.0, 25.5]
    assert frame["b"].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert frame["c"].tolist() == ["a", "a", "zz", "z", "a", " a "]
    fill = pd.Timestamp("2026-01-31T12:00:00.123456")
    assert frame["t"].tolist()[:2] == [fill, fill]
    assert frame["t"].iloc[3] == pd.Timestamp("2026-01-31T23:00:00")
    # What cannot be read is still refused: a word, a boolean other than 0/1, not a date.
    for bad, message in [
        (["many", 1, "a", None], "column 'x'.*numbers"),
        ([1, 2, "a", None], "column 'b'.*booleans"),
        ([1, 1, "a", "tomorrow"], "column 't'.*dates"),
    ]:
        with pytest.raises(SchemaError, match=message):
            check_frame([bad], FITTED)


def test_with_cleaning_replaces_the_fitted_cleaning():
    cleared = FITTED.with_cleaning({}, {})
    assert not cleared.has_cleaning
    assert cleared.with_cleaning({"x": 2}, {"x": (0, 1, 0, 1)}).column("x").fill == 2.0
    with pytest.raises(KeyError, match="nope"):
        FITTED.with_cleaning({"nope": 1.0}, {})
    with pytest.raises(ValueError, match="only numeric"):
        ColumnSpec("c", "categorical", clip=(0.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="not finite"):
        ColumnSpec("x", "numeric", fill=float("nan"))
    with pytest.raises(ValueError, match="not ordered"):
        ColumnSpec("x", "numeric", clip=(2.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="not a date"):
        ColumnSpec("t", "datetime", fill="someday")


def test_json_integers_beyond_the_float_range_are_infinite_not_a_crash(schema):
    row = list(VALID_ROW)
    row[0] = 10**400
    with pytest.raises(SchemaError, match=r"column 'amount'.*infinite"):
        check_frame([row], schema)


def test_long_date_columns_parse_exactly_as_value_by_value():
    from closedloop.ml.schema import _datetime_ns, parse_datetime_value

    rng = np.random.default_rng(7)
    values = []
    for _ in range(3000):
        year = int(rng.choice([1677, 1678, 1999, 2024, 2026, 2261, 2262]))
        month, day = int(rng.integers(0, 14)), int(rng.integers(0, 33))
        hour, minute, second = (
            int(rng.integers(0, 26)),
            int(rng.integers(0, 61)),
            int(rng.integers(0, 61)),
        )
        sep = str(rng.choice(["T", " ", "t", "x"]))
        text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}"
        fraction = str(rng.choice(["", "", ".", ".5", ".123", ".000000001", ".1234567890", ".12a"]))
        values.append(text + fraction)
    values += ["2024-02-29T12:00:00", "2026-02-29T12:00:00", " 2026-01-01T00:00:00", None, "abc"]
    array = np.asarray(values, dtype=object)
    stamps, formats, bad = _datetime_ns(array)
    for value, stamp, fmt, refused in zip(values, stamps, formats, bad, strict=True):
        parsed = None if value is None else parse_datetime_value(value)
        if parsed is None:
            assert np.isnat(stamp) and (refused or value is None), value
        else:
            assert (int(stamp.astype(np.int64)), fmt) == parsed, value
