"""Seldon message checks that run before the wrapper converts a request."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from closedloop.serving.messages import (
    MessageError,
    check_cells,
    check_feedback_message,
    check_names,
    check_prediction_message,
)

ROW = [1.5, "a", None, True]


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        ({"data": {"names": ["a", "b", "c", "d"], "ndarray": [ROW, ROW]}}, 2),
        ({"data": {"ndarray": ROW}}, 1),
        ({"data": {"tensor": {"shape": [2, 2], "values": [1, 2, 3, 4.5]}}}, 2),
        ({"data": {"tensor": {"shape": [3], "values": [1, 2, 3]}}}, 1),
        ({"jsonData": {"a": 1}}, 1),
        ({"jsonData": [{"a": 1}, {"a": None}]}, 2),
        ({"data": {"ndarray": [ROW]}, "meta": {"tags": {"x": 1}, "puid": "p", "metrics": []}}, 1),
    ],
)
def test_accepted_messages_count_their_rows(body: Any, rows: int) -> None:
    assert check_prediction_message(body, max_rows=10) == rows


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([ROW], "must be a JSON object"),
        ({}, "no payload"),
        ({"data": {"ndarray": [ROW]}, "strData": "x"}, "several payloads"),
        ({"binData": "AA=="}, "binData payloads are not supported"),
        ({"data": []}, "must be an object"),
        ({"data": {"names": ["a"]}}, "holds no 'ndarray' or 'tensor'"),
        ({"data": {"ndarray": [], "tensor": {}}}, "send exactly one"),
        ({"data": {"ndarray": [[1, 2], [1]]}}, "rows of different lengths"),
        ({"data": {"ndarray": [[1, [2]]]}}, "is an array"),
        ({"data": {"ndarray": [1, [2]]}}, "a 2-D ndarray holds one array per row"),
        ({"data": {"ndarray": [[{"x": 1}]]}}, "is a JSON object"),
        ({"data": {"ndarray": [[]]}}, "empty input"),
        ({"data": {"ndarray": [[1]] * 11}}, "too many rows in data: 11, the limit is 10"),
        ({"data": {"tensor": {"shape": [2, 2], "values": [1]}}}, "needs 4 values"),
        ({"data": {"tensor": {"shape": [1, 1], "values": ["x"]}}}, "must hold numbers"),
        ({"data": {"tensor": {"shape": [1, 1], "values": [True]}}}, "must hold numbers"),
        ({"data": {"tensor": {"shape": [-1], "values": []}}}, "non-negative integers"),
        ({"data": {"tensor": {"shape": [1, 1, 1], "values": [1]}}}, "expected [rows, columns]"),
        ({"data": {"tftensor": {}}}, "tftensor is not supported"),
        ({"data": {"names": "abc", "ndarray": [ROW]}}, "array of column names"),
        ({"data": {"names": [1], "ndarray": [ROW]}}, "must hold strings"),
        ({"jsonData": "x"}, "a record (an object) or an array of records"),
        ({"jsonData": [1]}, "every row must be an object"),
        ({"jsonData": [{"a": [1]}]}, "jsonData[0].a is a JSON array"),
        ({"jsonData": [{}] * 11}, "too many rows"),
        ({"data": {"ndarray": [ROW]}, "meta": 1}, "meta must be an object"),
        ({"data": {"ndarray": [ROW]}, "meta": {"tags": []}}, "meta.tags must be an object"),
        ({"data": {"ndarray": [ROW]}, "meta": {"metrics": {}}}, "meta.metrics must be an array"),
        ({"data": {"ndarray": [ROW]}, "meta": {"puid": 1}}, "meta.puid must be a string"),
    ],
)
def test_malformed_messages_say_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(MessageError) as raised:
        check_prediction_message(body, max_rows=10)
    assert message in str(raised.value)


def test_feedback_checks_each_part() -> None:
    good = {
        "request": {"data": {"names": ["a"], "ndarray": [[1]]}},
        "response": {"data": {"ndarray": [[0.1, 0.9]]}, "meta": {"tags": {}}},
        "truth": {"data": {"ndarray": [1]}},
        "reward": 1,
    }
    check_feedback_message(good, max_rows=10)
    check_feedback_message({"reward": 0.5}, max_rows=10)
    for body, message in [
        ([], "must be a JSON object"),
        ({"request": []}, "feedback.request must be an object"),
        ({"request": {"jsonData": {}}}, "not jsonData"),
        ({"truth": {"data": {"ndarray": [[1], [1, 2]]}}}, "rows of different lengths"),
        ({"reward": "high"}, "reward must be a number"),
        ({"request": {"meta": {"tags": 1}}}, "feedback.request.meta.tags"),
    ]:
        with pytest.raises(MessageError, match=message.replace(".", r"\.")):
            check_feedback_message(body, max_rows=10)


def test_names_and_cells() -> None:
    assert check_names(None) is None and check_names([]) is None
    assert check_names(("a", "b")) == ["a", "b"]
    assert check_names(iter(["a"])) == ["a"]
    with pytest.raises(MessageError):
        check_names(5)
    check_cells(np.array([[1.0, 2.0]]))
    check_cells(np.array([[1, "a", None]], dtype=object))
    with pytest.raises(MessageError, match=r"data\[0, 1\] is a JSON object"):
        check_cells(np.array([[1, {"x": 1}]], dtype=object))


def test_a_huge_integer_is_left_to_the_row_check() -> None:
    # The row check reads it as infinite: the fill, or a refusal naming row and column.
    assert check_prediction_message({"data": {"ndarray": [[10**400]]}}, max_rows=10) == 1
