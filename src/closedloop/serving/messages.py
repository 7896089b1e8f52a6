"""The Seldon messages the model server accepts, checked before the wrapper reads them.

Seldon's python wrapper turns a REST body into numpy arrays before the user model
sees it, and anything that goes wrong there is an HTTP 500: a ragged ``ndarray``
(numpy refuses it), a ``tensor`` whose ``shape`` does not match its ``values``, a
``tftensor`` (TensorFlow is not installed), ``meta`` or ``meta.tags`` that are not
objects, ``names`` that are not a list. The checks here run first, on the parsed JSON,
and raise :class:`MessageError`, which the server answers with a 400 saying what is
wrong. What the rows mean (names, order, types, ranges) is checked later, against the
model's schema, by :func:`closedloop.ml.schema.check_frame`.

Accepted payloads:

* ``{"data": {"names": [...], "ndarray": [[...], ...]}}`` — ``names`` optional (then
  columns are positional); a flat list is one row;
* ``{"data": {"names": [...], "tensor": {"shape": [rows, cols], "values": [...]}}}``;
* ``{"jsonData": {column: value, ...}}`` (one row) or ``{"jsonData": [{...}, ...]}``.

Feedback messages (``{"request": ..., "truth": ..., "reward": ...}``) carry rows in
``request.data`` and labels in ``truth.data``.

Limits every message meets, whatever its transport (REST body or gRPC message):

* nesting: arrays and objects at most :data:`MAX_NESTING` (20) levels deep, counting
  the message itself (a prediction needs 4, ``{"data": {"ndarray": [[...]]}}``). A
  deeper message is refused by :func:`check_nesting` before anything walks it
  recursively (Python's ``json``, the wrapper's protobuf conversion, the answer's
  serialization, which copies ``meta.tags``); :func:`parse_json` refuses a body
  too deep for Python's parser with the same words;
* size: :func:`check_size` refuses a message over ``max_request_bytes``.

This module imports numpy and pandas only, so it can be tested without seldon-core and
the drift sidecar (:mod:`closedloop.drift.sidecar.events`) reads the logged messages with
it: a message the server refuses, the sidecar refuses with the same words.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.errors import ClosedLoopError

PAYLOAD_KEYS: tuple[str, ...] = ("data", "jsonData", "strData", "binData", "customData")
SUPPORTED_HINT = (
    "send {'data': {'names': [...], 'ndarray': [[...], ...]}} or "
    "{'jsonData': [{column: value, ...}, ...]}"
)
_SCALARS = (str, int, float, bool, type(None))
_MAX_SHOWN = 3
MAX_NESTING = 20
"""Deepest nesting of arrays and objects accepted in a message (the message is level 1)."""
_CONTAINERS = (dict, list, tuple)


class MessageError(ClosedLoopError, ValueError):
    """A request is not a Seldon message the server can read; the text says why."""


class MessageTooLarge(MessageError):
    """A request is larger than ``max_request_bytes``."""


class TooManyRows(MessageError):
    """A well-formed message holds more rows than the reader accepts at once."""


def _kind(value: Any) -> str:
    """Name a JSON value's type the way a client sees it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def check_meta(meta: Any, what: str = "meta") -> None:
    """Check the optional ``meta`` object of a Seldon message.

    Raises:
        MessageError: If it or a field the wrapper reads has the wrong JSON type.
    """
    if meta is None:
        return
    if not isinstance(meta, Mapping):
        raise MessageError(f"{what} must be an object, got a JSON {_kind(meta)}")
    expected = {"tags": Mapping, "routing": Mapping, "requestPath": Mapping, "metrics": list}
    for field, kind in expected.items():
        if field in meta and not isinstance(meta[field], kind):
            wanted = "an object" if kind is Mapping else "an array"
            raise MessageError(f"{what}.{field} must be {wanted}, got a JSON {_kind(meta[field])}")
    if "puid" in meta and not isinstance(meta["puid"], str):
        raise MessageError(f"{what}.puid must be a string, got a JSON {_kind(meta['puid'])}")
    if isinstance(meta.get("tags"), Mapping):
        explain_flag(meta, what)


_TRUE_FLAGS = (True, 1, "true", "True", "TRUE", "1", "yes")
_FALSE_FLAGS = (False, 0, "false", "False", "FALSE", "0", "no", None)


def explain_flag(meta: Any, what: str = "meta") -> bool:
    """Read ``meta.tags.explain``: a JSON boolean, 0/1 or a true/false string.

    Raises:
        MessageError: Any other value.
    """
    value = ((meta or {}).get("tags") or {}).get("explain")
    if value in _TRUE_FLAGS:
        return True
    if value in _FALSE_FLAGS:
        return False
    raise MessageError(f"{what}.tags.explain must be true or false, got {value!r}")


def check_names(names: Any, what: str = "data.names") -> list[str] | None:
    """Return column names as a list of strings (None when absent or empty).

    Raises:
        MessageError: If they are not an array of strings.
    """
    if names is None:
        return None
    if isinstance(names, str | bytes | Mapping):
        raise MessageError(f"{what} must be an array of column names, got a JSON {_kind(names)}")
    # gRPC hands a protobuf repeated field: iterable, but no list.
    try:
        listed = list(names)
    except TypeError as exc:
        raise MessageError(
            f"{what} must be an array of column names, got a JSON {_kind(names)}"
        ) from exc
    bad = [i for i, name in enumerate(listed) if not isinstance(name, str)]
    if bad:
        raise MessageError(
            f"{what} must hold strings; position {bad[0]} is a JSON {_kind(listed[bad[0]])}"
        )
    return listed or None


def _check_scalar(value: Any, where: str) -> None:
    if not isinstance(value, _SCALARS):
        raise MessageError(
            f"{where} is a JSON {_kind(value)}; every value must be a number, string, "
            "boolean or null"
        )


def _check_rows_limit(count: int, max_rows: int, what: str) -> None:
    if count > max_rows:
        raise TooManyRows(
            f"too many rows in {what}: {count}, the limit is {max_rows} per request; "
            "split the rows into several requests"
        )


def check_data(
    data: Any, *, max_rows: int, what: str = "data", flat_rows: frozenset[int] = frozenset()
) -> int:
    """Check a ``data`` object (``names`` + ``ndarray`` or ``tensor``).

    Args:
        data: The value of the ``data`` key.
        max_rows: Most rows accepted.
        what: How to call it in messages.
        flat_rows: Arrays :func:`check_nesting` found to be rows of plain values.

    Returns:
        The number of rows.

    Raises:
        MessageError: Wrong types, ragged or nested arrays, a tensor whose shape does
            not match its values, an unsupported encoding, no rows, or too many rows.
    """
    if not isinstance(data, Mapping):
        raise MessageError(f"{what} must be an object, got a JSON {_kind(data)}; {SUPPORTED_HINT}")
    check_names(data.get("names"), f"{what}.names")
    encodings = [key for key in ("ndarray", "tensor", "tftensor") if key in data]
    if not encodings:
        raise MessageError(f"{what} holds no 'ndarray' or 'tensor'; {SUPPORTED_HINT}")
    if len(encodings) > 1:
        raise MessageError(f"{what} holds {encodings}: send exactly one of them")
    if encodings[0] == "tftensor":
        raise MessageError(f"{what}.tftensor is not supported; {SUPPORTED_HINT}")
    if encodings[0] == "tensor":
        rows = _check_tensor(data["tensor"], f"{what}.tensor")
    else:
        rows = _check_ndarray(data["ndarray"], f"{what}.ndarray", flat_rows)
    if rows == 0:
        raise MessageError(f"empty input: {what} holds no rows to predict")
    _check_rows_limit(rows, max_rows, what)
    return rows


_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
_FAST_ROWS = 64


def _well_formed_rows(array: list[Any]) -> bool:
    """Whether a long ndarray is rows of equal length holding plain scalars, checked in C.

    Only a True answer is final; on False the value-by-value check finds the problem.
    """
    if set(map(type, array)) != {list} or len(set(map(len, array))) != 1:
        return False
    return set(map(type, itertools.chain.from_iterable(array))) <= _SCALAR_TYPES


def _check_ndarray(array: Any, what: str, flat_rows: frozenset[int] = frozenset()) -> int:
    if not isinstance(array, list):
        raise MessageError(f"{what} must be an array of rows, got a JSON {_kind(array)}")
    if not array:
        return 0
    if len(array) > _FAST_ROWS:
        # check_nesting saw these rows hold plain values only: their lengths are left.
        known = id(array) in flat_rows and len(set(map(len, array))) == 1
        if known or _well_formed_rows(array):
            return len(array) if array[0] else 0
    if all(not isinstance(item, list) for item in array):
        for j, value in enumerate(array):
            _check_scalar(value, f"{what}[{j}]")
        return 1
    width = None
    for i, row in enumerate(array):
        if not isinstance(row, list):
            raise MessageError(
                f"{what}[{i}] is a JSON {_kind(row)}; a 2-D ndarray holds one array per row"
            )
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise MessageError(
                f"{what} has rows of different lengths: row 0 has {width} values, "
                f"row {i} has {len(row)}"
            )
        for j, value in enumerate(row):
            if isinstance(value, list):
                raise MessageError(
                    f"{what}[{i}][{j}] is an array: ndarray must be a 2-D array of rows "
                    "(one value per column)"
                )
            _check_scalar(value, f"{what}[{i}][{j}]")
    return len(array) if width else 0


def _check_tensor(tensor: Any, what: str) -> int:
    if not isinstance(tensor, Mapping):
        raise MessageError(f"{what} must be an object, got a JSON {_kind(tensor)}")
    shape, values = tensor.get("shape"), tensor.get("values")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise MessageError(f"{what}.shape must be a non-empty array of non-negative integers")
    if len(shape) > 2:
        raise MessageError(
            f"{what}.shape is {shape}: expected [rows, columns] (a 2-D tensor of rows)"
        )
    if not isinstance(values, list):
        raise MessageError(f"{what}.values must be an array of numbers")
    bad = [i for i, v in enumerate(values) if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad:
        raise MessageError(
            f"{what}.values must hold numbers; position {bad[0]} is a JSON {_kind(values[bad[0]])}"
        )
    for i, value in enumerate(values):
        _check_scalar(value, f"{what}.values[{i}]")
    if math.prod(shape) != len(values):
        raise MessageError(
            f"{what}.shape {shape} needs {math.prod(shape)} values, got {len(values)}"
        )
    if not values:
        return 0
    return shape[0] if len(shape) == 2 else 1


def check_json_data(payload: Any, *, max_rows: int, what: str = "jsonData") -> int:
    """Check ``jsonData``: one record (an object) or an array of records.

    Returns:
        The number of rows.

    Raises:
        MessageError: Not records, nested values, no rows, or too many rows.
    """
    records = [payload] if isinstance(payload, Mapping) else payload
    if not isinstance(records, list):
        raise MessageError(
            f"{what} must be a record (an object) or an array of records, got a JSON "
            f"{_kind(payload)}"
        )
    if not records:
        raise MessageError(f"empty input: {what} holds no records to predict")
    _check_rows_limit(len(records), max_rows, what)
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise MessageError(
                f"{what}[{i}] is a JSON {_kind(record)}; every row must be an object "
                "{column: value}"
            )
        for key, value in record.items():
            _check_scalar(value, f"{what}[{i}].{key}")
    return len(records)


def check_size(size: int, limit: int, *, what: str = "request body", more: bool = False) -> None:
    """Refuse a message of *size* bytes over *limit* (``max_request_bytes``).

    Args:
        size: Its size in bytes.
        limit: Largest size accepted.
        what: How to call it in the message.
        more: *size* is a lower bound (a body read no further than past the limit).

    Raises:
        MessageTooLarge: If *size* exceeds *limit*.
    """
    if size > limit:
        amount = f"more than {limit}" if more else str(size)
        raise MessageTooLarge(
            f"{what} of {amount} bytes exceeds the limit of {limit} bytes "
            "(max_request_bytes): split the rows into several requests"
        )


def _too_deep(limit: int) -> MessageError:
    return MessageError(
        f"the message is nested too deeply: at most {limit} levels of arrays and objects "
        "are accepted (a prediction needs 4)"
    )


def check_nesting(message: Any, limit: int = MAX_NESTING) -> frozenset[int]:
    """Refuse a parsed message whose arrays and objects nest deeper than *limit*.

    Walks the message level by level, not recursively, so any depth is safe to check.

    Returns:
        The ``id`` of every array found to hold only arrays of plain values (rows),
        so the row checks need not look at those values again.

    Raises:
        MessageError: If it is too deep.
    """
    level = [message] if isinstance(message, _CONTAINERS) else []
    depth = 1
    flat_rows: set[int] = set()
    while level:
        deeper: list[Any] = []
        for node in level:
            children = node.values() if isinstance(node, dict) else node
            # Plain values, or rows of plain values (most of a big request): one pass
            # in C over them, nothing below.
            types = set(map(type, children))
            if types <= _SCALAR_TYPES:
                continue
            if types == {list} and (
                set(map(type, itertools.chain.from_iterable(children))) <= _SCALAR_TYPES
            ):
                if depth + 1 >= limit:
                    raise _too_deep(limit)
                flat_rows.add(id(node))
                continue
            deeper.extend([child for child in children if isinstance(child, _CONTAINERS)])
        if deeper and depth >= limit:
            raise _too_deep(limit)
        level, depth = deeper, depth + 1
    return frozenset(flat_rows)


def parse_json(raw: bytes | str) -> Any:
    """Parse a JSON body, refusing one too deep for Python's parser as too deep.

    The result still has to pass :func:`check_nesting` (the checks of a message call it).

    Raises:
        MessageError: Not JSON, or nested too deeply to parse.
    """
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise _too_deep(MAX_NESTING) from exc
    except ValueError as exc:
        raise MessageError(f"the body is not valid JSON: {exc}") from exc


def check_prediction_message(body: Any, *, max_rows: int) -> int:
    """Check a prediction request before the wrapper converts it.

    Args:
        body: The parsed JSON body.
        max_rows: Most rows accepted per request.

    Returns:
        The number of rows.

    Raises:
        MessageError: See :func:`check_data` and :func:`check_json_data`; also a body
            that is not an object, nested deeper than :data:`MAX_NESTING`, no payload,
            several payloads, and ``strData``, ``binData`` or ``customData`` payloads.
    """
    flat_rows = check_nesting(body)
    if not isinstance(body, Mapping):
        raise MessageError(
            f"the request must be a JSON object (a Seldon message), got a JSON {_kind(body)}; "
            f"{SUPPORTED_HINT}"
        )
    check_meta(body.get("meta"))
    payloads = [key for key in PAYLOAD_KEYS if key in body]
    if not payloads:
        raise MessageError(f"the request holds no payload (keys: {sorted(body)}); {SUPPORTED_HINT}")
    if len(payloads) > 1:
        raise MessageError(f"the request holds several payloads {payloads}: send exactly one")
    if payloads[0] == "data":
        return check_data(body["data"], max_rows=max_rows, flat_rows=flat_rows)
    if payloads[0] == "jsonData":
        return check_json_data(body["jsonData"], max_rows=max_rows)
    raise MessageError(f"{payloads[0]} payloads are not supported; {SUPPORTED_HINT}")


def check_feedback_message(body: Any, *, max_rows: int) -> None:
    """Check a feedback message before the wrapper converts it.

    ``request.data`` (the rows that were predicted) and ``truth.data`` (their labels)
    are optional, as in Seldon, but when present they must be well formed.

    Raises:
        MessageError: If a part has the wrong type or shape, or the message is nested
            deeper than :data:`MAX_NESTING`.
    """
    check_nesting(body)
    if not isinstance(body, Mapping):
        raise MessageError(
            f"feedback must be a JSON object with 'request' and 'truth', got a JSON {_kind(body)}"
        )
    for part in ("request", "response", "truth"):
        message = body.get(part)
        if message is None:
            continue
        if not isinstance(message, Mapping):
            raise MessageError(f"feedback.{part} must be an object, got a JSON {_kind(message)}")
        check_meta(message.get("meta"), f"feedback.{part}.meta")
        if part != "response" and "jsonData" in message:
            raise MessageError(
                f"feedback.{part} must carry its rows in data (names + ndarray), not jsonData"
            )
        if part != "response" and "data" in message:
            check_data(message["data"], max_rows=max_rows, what=f"feedback.{part}.data")
    reward = body.get("reward")
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, int | float)):
        raise MessageError(f"feedback.reward must be a number, got a JSON {_kind(reward)}")


def check_cells(array: np.ndarray, what: str = "data") -> None:
    """Refuse object arrays holding anything but scalars (gRPC ``ndarray`` of structs).

    Raises:
        MessageError: On the first non-scalar cell.
    """
    if array.dtype != object:
        return
    for index, value in np.ndenumerate(array):
        if not isinstance(value, _SCALARS):
            raise MessageError(
                f"{what}{list(index)} is a JSON {_kind(value)}; every value must be a number, "
                "string, boolean or null"
            )


@dataclass(frozen=True)
class MessageRows:
    """The rows of a checked prediction message, as JSON values.

    Attributes:
        encoding: ``ndarray``, ``tensor`` or ``jsonData`` (the answer uses ``ndarray``
            for ``ndarray`` and ``tensor`` otherwise, as Seldon's wrapper does).
        rows: One list of values per row (``ndarray`` and ``tensor``), else ``None``.
        names: ``data.names`` when sent, else ``None`` (positional columns).
        records: The ``jsonData`` records, else ``None``.
    """

    encoding: str
    rows: list[list[Any]] | None = None
    names: list[str] | None = None
    records: list[Mapping[str, Any]] | None = None


def message_rows(body: Mapping[str, Any], *, max_rows: int) -> MessageRows:
    """Take the rows out of a prediction message checked by :func:`check_prediction_message`.

    Raises:
        MessageError: If the message was not checked and is malformed.
    """
    if not isinstance(body, Mapping):
        check_prediction_message(body, max_rows=max_rows)
    if "jsonData" in body:
        payload = body["jsonData"]
        records = [payload] if isinstance(payload, Mapping) else payload
        if not isinstance(records, list):
            check_prediction_message(body, max_rows=max_rows)
        return MessageRows("jsonData", records=records)
    data = body.get("data")
    if not isinstance(data, Mapping):
        check_prediction_message(body, max_rows=max_rows)
        raise MessageError(f"the request holds no rows; {SUPPORTED_HINT}")
    names = check_names(data.get("names"))
    if "tensor" in data:
        tensor = data["tensor"]
        shape, values = tensor["shape"], tensor["values"]
        width = shape[1] if len(shape) == 2 else len(values)
        rows = [values[i : i + width] for i in range(0, len(values), width)] if width else []
        return MessageRows("tensor", rows=rows, names=names)
    array = data.get("ndarray")
    if not isinstance(array, list):
        check_prediction_message(body, max_rows=max_rows)
        raise MessageError(f"data holds no 'ndarray' or 'tensor'; {SUPPORTED_HINT}")
    if array and not isinstance(array[0], list):
        array = [array]
    return MessageRows("ndarray", rows=array, names=names)


def prediction_rows(body: Any, *, max_rows: int) -> MessageRows:
    """Check a prediction message and take its rows out, as the model server does.

    :func:`check_prediction_message`, then :func:`message_rows`: for readers of logged
    messages (the drift sidecar), which must refuse exactly what the server refuses.

    Raises:
        MessageError: See :func:`check_prediction_message`
            (:class:`TooManyRows` past *max_rows*).
    """
    check_prediction_message(body, max_rows=max_rows)
    return message_rows(body, max_rows=max_rows)


def truth_labels(truth: Any, *, max_rows: int, what: str = "feedback.truth") -> list[Any]:
    """Take the labels out of a feedback message's ``truth``: one per predicted row.

    ``truth.data`` is checked as :func:`check_data` checks rows. A flat ``ndarray``
    (``[1, 0]``), a one-column one (``[[1], [0]]``) or a tensor of shape ``[n]`` or
    ``[n, 1]`` gives one label per row, as the wrapper's conversion to numpy does.
    Whether the labels fit the model is the caller's question.

    Raises:
        MessageError: No ``data``, malformed data, several values per row
            (:class:`TooManyRows` past *max_rows*).
    """
    if not isinstance(truth, Mapping):
        raise MessageError(f"{what} must be an object, got a JSON {_kind(truth)}")
    if "data" not in truth:
        raise MessageError(
            f"{what} must carry its labels in data (ndarray), one per row; got keys {sorted(truth)}"
        )
    data = truth["data"]
    check_data(data, max_rows=max_rows, what=f"{what}.data")
    if "tensor" in data:
        shape, values = data["tensor"]["shape"], data["tensor"]["values"]
        width = shape[1] if len(shape) == 2 else 1
        labels = list(values)
    else:
        array = data["ndarray"]
        two_d = all(isinstance(row, list) for row in array)
        width = len(array[0]) if two_d else 1
        labels = [row[0] for row in array] if two_d else list(array)
    if width != 1:
        raise MessageError(f"{what}.data holds {width} values per row: expected one label per row")
    _check_rows_limit(len(labels), max_rows, f"{what}.data")
    return labels
