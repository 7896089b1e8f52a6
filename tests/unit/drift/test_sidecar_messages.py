"""The sidecar reads logged Seldon messages with the model server's own parser."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from closedloop import events
from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.drift.sidecar import alarm
from closedloop.drift.sidecar import events as sidecar_events
from closedloop.drift.sidecar.errors import EventRejected
from closedloop.drift.sidecar.events import (
    MAX_ROWS_PER_EVENT,
    feedback_rows,
    request_rows,
    response_prediction,
)
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


@pytest.mark.parametrize("body", REFUSED, ids=range(len(REFUSED)))
def test_the_sidecar_refuses_what_the_server_refuses_in_the_same_words(body: Any) -> None:
    with pytest.raises(MessageError) as server:
        check_prediction_message(body, max_rows=MAX_ROWS_PER_EVENT)
    with pytest.raises(EventRejected) as sidecar:
        request_rows(body, SCHEMA)
    assert str(sidecar.value) == str(server.value)
    expected = "too_large" if isinstance(server.value, TooManyRows) else "payload"
    assert sidecar.value.reason == expected


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
        frames.append(request_rows(body, SCHEMA))
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])
    assert list(frames[0].columns) == NAMES and len(frames[0]) == len(ROWS)
    # A well-formed tensor of the wrong width passes the parser, not the schema.
    with pytest.raises(EventRejected) as info:
        request_rows({"data": {"tensor": {"shape": [1, 3], "values": [1, 2, 3]}}}, SCHEMA)
    assert info.value.reason == "schema"


def test_records_that_miss_a_column_do_not_fit_the_schema() -> None:
    missing = [{k: v for k, v in RECORDS[0].items() if k != NAMES[-1]}]
    with pytest.raises(EventRejected, match=rf"missing columns \['{NAMES[-1]}'\]") as info:
        request_rows({"jsonData": missing}, SCHEMA)
    assert info.value.reason == "schema"


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
        ({"jsonData": [1, 0]}, "must carry its labels in data"),
        ({"data": {"ndarray": [[1, 0], [0, 1]]}}, "holds 2 values per row"),
        ({"data": {"ndarray": [[1], [0, 1]]}}, "rows of different lengths"),
        ({"data": {"ndarray": []}}, "empty input"),
    ],
)
def test_malformed_truth_is_refused_by_both(truth: Any, message: str) -> None:
    with pytest.raises(MessageError, match=message.replace(".", r"\.")):
        truth_labels(truth, max_rows=10)
    feedback = {"request": {"jsonData": RECORDS[:2]}, "truth": truth}
    with pytest.raises(EventRejected, match=message.replace(".", r"\.")):
        feedback_rows(feedback, SCHEMA)


def test_feedback_request_errors_say_where() -> None:
    feedback = {
        "request": {"data": {"ndarray": [ROWS[0], ROWS[1][:3]]}},
        "truth": {"data": {"ndarray": [1, 0]}},
    }
    with pytest.raises(EventRejected) as info:
        feedback_rows(feedback, SCHEMA)
    assert info.value.reason == "payload"
    assert str(info.value).startswith("feedback.request: data.ndarray has rows of different")
    rows, labels = feedback_rows({**feedback, "request": {"jsonData": RECORDS[:2]}}, SCHEMA)
    assert len(rows) == 2 and labels.tolist() == [1, 0]


def test_responses_are_read_by_the_same_parser() -> None:
    answer = {
        "data": {"names": ["0", "1"], "tensor": {"shape": [2, 2], "values": [0.9, 0.1, 0.2, 0.8]}}
    }
    assert response_prediction(answer, SCHEMA).scores.tolist() == [[0.9, 0.1], [0.2, 0.8]]
    with pytest.raises(EventRejected) as info:
        response_prediction({"data": {"ndarray": [[0.5, 0.5]]}, "meta": {"tags": []}}, SCHEMA)
    assert info.value.reason == "payload" and "response: meta.tags must be an object" in str(
        info.value
    )


def test_one_set_of_cloudevent_types_for_sender_and_receivers() -> None:
    sent = {request_logger.REQUEST_TYPE, request_logger.RESPONSE_TYPE, request_logger.FEEDBACK_TYPE}
    assert sent == set(sidecar_events.EVENT_KINDS) == set(events.SELDON_EVENT_KINDS)
    assert sidecar_events.REQUEST_TYPE is events.REQUEST_TYPE
    assert alarm.DRIFT_EVENT_TYPE is events.DRIFT_TYPE
