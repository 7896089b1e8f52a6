"""The sidecar reads logged Seldon messages with the model server's own parser and row check."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from closedloop import events
from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.drift.sidecar import alarm
from closedloop.drift.sidecar import events as sidecar_events
from closedloop.drift.sidecar.errors import MESSAGE_REASONS, EventRefused, EventRejected
from closedloop.drift.sidecar.events import (
    MAX_ROWS_PER_EVENT,
    check_rows,
    feedback_rows,
    read_body,
    request_message,
    response_prediction,
)
from closedloop.ml.rowplan import REASONS, RowPlan
from closedloop.ml.schema import infer_schema
from closedloop.serving import request_logger
from closedloop.serving.messages import (
    MessageError,
    TooManyRows,
    check_prediction_message,
    truth_labels,
)

FRAME = generate_transactions(300, seed=5)
SCHEMA = infer_schema(FRAME, DEFAULT_TARGET)
PLAN = RowPlan(SCHEMA)
NAMES = list(SCHEMA.feature_names)
RECORDS: list[dict[str, Any]] = json.loads(
    json.dumps(
        FRAME.loc[:3, NAMES].astype({"transaction_time": str}).to_dict("records"), default=int
    )
)
ROWS = [[record[name] for name in NAMES] for record in RECORDS]

REFUSED = [
    [ROWS[0]],
    {},
    {"data": {"ndarray": ROWS}, "strData": "x"},
    {"binData": "AA=="},
    {"strData": "hello"},
    {"data": []},
    {"data": {"names": NAMES}},
    {"data": {"ndarray": [], "tensor": {}}},
    {"data": {"ndarray": []}},
    {"data": {"ndarray": [[]]}},
    {"data": {"ndarray": [ROWS[0], ROWS[1][:3]]}},
    {"data": {"ndarray": [[1, [2]]]}},
    {"data": {"ndarray": [[{"x": 1}]]}},
    {"data": {"ndarray": [[1.0]] * (MAX_ROWS_PER_EVENT + 1)}},
    {"data": {"tensor": {"shape": [2, 2], "values": [1]}}},
    {"data": {"tensor": {"shape": [1, 1], "values": ["x"]}}},
    {"data": {"tensor": {"shape": [1, 1, 1], "values": [1]}}},
    {"data": {"tftensor": {}}},
    {"data": {"names": "abc", "ndarray": ROWS}},
    {"data": {"names": [1], "ndarray": ROWS}},
    {"jsonData": "x"},
    {"jsonData": []},
    {"jsonData": [1]},
    {"jsonData": [{"amount": [1]}]},
    {"jsonData": [{}] * (MAX_ROWS_PER_EVENT + 1)},
    {"data": {"ndarray": ROWS}, "meta": 1},
    {"data": {"ndarray": ROWS}, "meta": {"tags": []}},
    {"data": {"ndarray": ROWS}, "meta": {"puid": 1}},
]


def request_rows(body: Any) -> pd.DataFrame:
    """Rows of a request event as the sidecar takes them."""
    return check_rows(PLAN, request_message(body, MAX_ROWS_PER_EVENT)).frame


@pytest.mark.parametrize("body", REFUSED, ids=range(len(REFUSED)))
def test_the_sidecar_refuses_what_the_server_refuses_in_the_same_words(body: Any) -> None:
    with pytest.raises(MessageError) as server:
        check_prediction_message(body, max_rows=MAX_ROWS_PER_EVENT)
    with pytest.raises(EventRefused) as sidecar:
        request_rows(body)
    assert str(sidecar.value) == str(server.value)
    expected = "too_many_rows" if isinstance(server.value, TooManyRows) else "message"
    assert sidecar.value.reason == expected
    assert sidecar.value.rows == {expected: 1}


def test_a_request_with_one_refused_row_is_refused_whole_and_counted_by_reason() -> None:
    rows = [list(row) for row in ROWS]
    rows[1][0] = "a lot"  # amount
    rows[2][0] = None
    with pytest.raises(EventRefused) as info:
        request_rows({"data": {"names": NAMES, "ndarray": rows}})
    refused = info.value
    assert refused.reason == "not_a_number"
    assert refused.rows == {"not_a_number": 1, "missing": 1, "request_refused": len(ROWS) - 2}
    assert set(refused.rows) <= {*REASONS, *MESSAGE_REASONS}
    assert str(refused).startswith("row 1: column")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not_json"),
        (b"", "not_json"),
        (b"[" * 100_000, "too_deep"),
        (b'{"meta": {"tags": ' + b'{"a":' * 5_000 + b"1" + b"}" * 5_002, "too_deep"),
    ],
)
def test_unreadable_bodies_are_rejected(body: bytes, reason: str) -> None:
    with pytest.raises(EventRejected) as info:
        read_body(body)
    assert info.value.reason == reason


def test_bodies_are_read_as_the_server_reads_them() -> None:
    assert read_body(b'{"a": NaN}')["a"] != read_body(b'{"a": NaN}')["a"]  # NaN, as json reads it
    # orjson first, Python's json for what orjson refuses: as the server's JSON provider.
    assert read_body(b'{"a": ' + b"1" * 400 + b"}")["a"] == int("1" * 400)


def test_every_encoding_the_server_reads_gives_the_same_rows() -> None:
    bodies = [
        {"data": {"names": NAMES, "ndarray": ROWS}},
        {"data": {"ndarray": ROWS}},
        {"jsonData": RECORDS},
        {"data": {"names": NAMES, "ndarray": ROWS}, "meta": {"tags": {"explain": False}}},
    ]
    frames = []
    for body in bodies:
        assert check_prediction_message(body, max_rows=MAX_ROWS_PER_EVENT) == len(ROWS)
        frames.append(request_rows(body))
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])
    assert list(frames[0].columns) == NAMES and len(frames[0]) == len(ROWS)
    # A well-formed tensor of the wrong width passes the parser, not the schema.
    with pytest.raises(EventRefused) as info:
        request_rows({"data": {"tensor": {"shape": [1, 3], "values": [1, 2, 3]}}})
    assert info.value.reason == "columns"


def test_records_that_miss_a_column_do_not_fit_the_schema() -> None:
    missing = [{k: v for k, v in RECORDS[0].items() if k != NAMES[-1]}]
    with pytest.raises(EventRefused, match=rf"missing columns \['{NAMES[-1]}'\]") as info:
        request_rows({"jsonData": missing})
    assert info.value.reason == "columns"


@pytest.mark.parametrize(
    ("truth", "labels"),
    [
        ({"data": {"ndarray": [1, 0]}}, [1, 0]),
        ({"data": {"ndarray": [[1], [0]]}}, [1, 0]),
        ({"data": {"tensor": {"shape": [2, 1], "values": [1, 0]}}}, [1, 0]),
        ({"data": {"tensor": {"shape": [2], "values": [1, 0]}}}, [1, 0]),
        ({"data": {"names": ["is_fraud"], "ndarray": [["1"], ["0"]]}}, ["1", "0"]),
    ],
)
def test_truth_labels_take_one_value_per_row(truth: Any, labels: list[Any]) -> None:
    assert truth_labels(truth, max_rows=10) == labels
    with pytest.raises(TooManyRows, match=r"too many rows in feedback\.truth\.data: 2"):
        truth_labels(truth, max_rows=1)


@pytest.mark.parametrize(
    ("truth", "message"),
    [
        ([1, 0], "feedback.truth must be an object"),
        ({"jsonData": [1, 0]}, "feedback.truth must carry its"),
        ({"data": {"ndarray": [[1, 0], [0, 1]]}}, "holds 2 values per row"),
        ({"data": {"ndarray": [[1], [0, 1]]}}, "rows of different lengths"),
        ({"data": {"ndarray": []}}, "empty input"),
    ],
)
def test_malformed_truth_is_refused_by_both(truth: Any, message: str) -> None:
    with pytest.raises(MessageError, match=message.replace(".", r"\.")):
        truth_labels(truth, max_rows=10)
    feedback = {"request": {"data": {"names": NAMES, "ndarray": ROWS[:2]}}, "truth": truth}
    with pytest.raises(EventRefused, match=message.replace(".", r"\.")):
        feedback_rows(feedback, PLAN, SCHEMA, 10)


def test_feedback_request_errors_say_where() -> None:
    feedback = {
        "request": {"data": {"ndarray": [ROWS[0], ROWS[1][:3]]}},
        "truth": {"data": {"ndarray": [1, 0]}},
    }
    with pytest.raises(EventRefused) as info:
        feedback_rows(feedback, PLAN, SCHEMA, 10)
    assert info.value.reason == "message"
    assert "feedback.request.data.ndarray has rows of different" in str(info.value)
    # As the server: feedback carries its rows in request.data, not jsonData.
    with pytest.raises(EventRefused, match="not jsonData"):
        feedback_rows({**feedback, "request": {"jsonData": RECORDS[:2]}}, PLAN, SCHEMA, 10)
    good = {**feedback, "request": {"data": {"names": NAMES, "ndarray": ROWS[:2]}}}
    rows, labels = feedback_rows(good, PLAN, SCHEMA, 10)
    assert rows.n_rows == 2 and labels == [1, 0]


def test_responses_are_read_by_the_same_parser() -> None:
    answer = {
        "data": {"names": ["0", "1"], "tensor": {"shape": [2, 2], "values": [0.9, 0.1, 0.2, 0.8]}}
    }
    assert response_prediction(answer, SCHEMA).scores.tolist() == [[0.9, 0.1], [0.2, 0.8]]
    with pytest.raises(EventRefused) as info:
        response_prediction({"data": {"ndarray": [[0.5, 0.5]]}, "meta": {"tags": []}}, SCHEMA)
    assert info.value.reason == "message" and "response: meta.tags must be an object" in str(
        info.value
    )


def test_one_set_of_cloudevent_types_for_sender_and_receivers() -> None:
    sent = {request_logger.REQUEST_TYPE, request_logger.RESPONSE_TYPE, request_logger.FEEDBACK_TYPE}
    assert sent == set(sidecar_events.EVENT_KINDS) == set(events.SELDON_EVENT_KINDS)
    assert sidecar_events.REQUEST_TYPE is events.REQUEST_TYPE
    assert alarm.DRIFT_EVENT_TYPE is events.DRIFT_TYPE
