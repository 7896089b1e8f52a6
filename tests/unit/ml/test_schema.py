import json

import numpy as np
import pandas as pd
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.ml.schema import (
    ColumnSpec,
    InputSchema,
    SchemaError,
    check_frame,
    coerce_frame,
    infer_schema,
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
        (_replace(0, "abc"), None, r"column 'amount' \(position 0\).*numbers.*row 1 \('abc'\)"),
        (_replace(3, "3 pm"), None, r"column 'hour' \(position 3\).*row 1"),
        (_replace(0, None), None, r"column 'amount'.*missing values.*row 1"),
        (_replace(5, float("nan")), None, r"column 'account_age_days'.*missing values.*row 1"),
        (_replace(2, None), None, r"column 'merchant_category'.*missing values.*row 1"),
        (_replace(0, float("inf")), None, r"column 'amount'.*infinite.*row 1"),
        (_replace(0, "-Infinity"), None, r"column 'amount'.*infinite.*row 1"),
        (
            _replace(7, "yesterday"),
            None,
            r"column 'transaction_time'.*dates.*row 1 \('yesterday'\)",
        ),
        (_replace(7, 1767225600), None, r"column 'transaction_time'.*dates.*row 1"),
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
    with pytest.raises(SchemaError, match=r"column 'b'.*booleans.*row 0"):
        check_frame([[1, 2, "a"]], schema)


def test_coerce_frame_selects_features_and_ignores_extra_columns(schema, holdout_frame):
    frame = coerce_frame(holdout_frame.head(20), schema)
    assert list(frame.columns) == list(schema.feature_names)
    assert frame.index.equals(holdout_frame.head(20).index)
    with pytest.raises(SchemaError, match=r"missing columns: \['amount'\]"):
        coerce_frame(holdout_frame.drop(columns=["amount"]), schema)
