"""Seldon request-logger CloudEvents: attributes, payloads and their checks.

The Seldon executor posts each logged message as a binary-mode CloudEvent v1.0:
``Ce-Id`` (a new UUID per event), ``Ce-Source``, ``Ce-Type``, ``Ce-Specversion``,
``Ce-Requestid`` (joins a request with its response) and a few more ``Ce-*`` headers
(``Ce-Modelid``, ``Ce-Inferenceservicename``, ``Ce-Namespace``, ``Ce-Endpoint``); the body
is the message itself. Three types matter:

* :data:`REQUEST_TYPE` — a prediction request: its rows go into the drift windows;
* :data:`RESPONSE_TYPE` — the model's answer (``data`` holds the class probabilities, or
  the predictions of a regressor; ``meta.tags.model_version`` the version that answered):
  remembered under its ``Ce-Requestid``, the prediction's puid, so that feedback can be
  joined to it (:func:`response_prediction`; ``logger.mode: request`` sends none);
* :data:`FEEDBACK_TYPE` — a Seldon ``Feedback`` message (``request`` with the features,
  ``truth`` with the labels, ``response`` the prediction the client got, whose
  ``meta.puid`` names it): archived as labelled rows for the retraining pipeline, and
  joined to its prediction for the quality windows (:func:`feedback_puid`).

Payloads accepted (a Seldon ``SeldonMessage``):

* ``{"data": {"names": [...], "ndarray": [[...], ...]}}`` (``names`` optional: then
  columns are positional);
* ``{"data": {"names": [...], "tensor": {"shape": [rows, cols], "values": [...]}}}``;
* ``{"jsonData": {feature: value, ...}}`` or ``{"jsonData": [{feature: value, ...}, ...]}``.

Every check failure raises :class:`EventRejected` with a message saying what was wrong;
rows are checked and coerced with :func:`closedloop.ml.schema.check_frame`, the same
function the model server uses.

Traffic on the executor's gRPC port is logged too, with the same ``Ce-Type`` values,
but its body is the protobuf-encoded message and its ``Content-Type`` (the event's
``datacontenttype``) is ``application/protobuf`` (seldon-core ``executor/api/payload/
proto.go``, set by ``executor/logger/worker.go``). Drift watches REST (JSON) traffic
only: such an event passes the attribute checks and comes back with
``encoding="protobuf"`` and no data, for the monitor to count and skip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from closedloop.drift.sidecar.errors import EventRejected
from closedloop.ml.schema import InputSchema, SchemaError, check_frame

REQUEST_TYPE = "io.seldon.serving.inference.request"
RESPONSE_TYPE = "io.seldon.serving.inference.response"
FEEDBACK_TYPE = "io.seldon.serving.feedback"
EVENT_KINDS: Mapping[str, str] = {
    REQUEST_TYPE: "request",
    RESPONSE_TYPE: "response",
    FEEDBACK_TYPE: "feedback",
}
REQUIRED_ATTRIBUTES: tuple[str, ...] = ("id", "source", "type", "specversion")
MAX_ROWS_PER_EVENT = 10_000
PROTOBUF_CONTENT_TYPES = frozenset({"application/protobuf", "application/x-protobuf"})
"""Media types of a protobuf body: the Seldon executor's gRPC payloads (the first)."""

EventKind = Literal["request", "response", "feedback"]
EventEncoding = Literal["json", "protobuf"]
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class SeldonEvent:
    """A CloudEvent from the request logger whose attributes passed the checks.

    Attributes:
        kind: ``request``, ``response`` or ``feedback``.
        id: ``Ce-Id``.
        source: ``Ce-Source``.
        request_id: ``Ce-Requestid``, if sent.
        data: The parsed JSON body (``None`` for a protobuf body).
        encoding: ``json``, or ``protobuf`` for a message logged from the gRPC port
            (not decoded: drift watches REST traffic only).
    """

    kind: EventKind
    id: str
    source: str
    request_id: str | None
    data: Any
    encoding: EventEncoding = "json"

    @property
    def key(self) -> tuple[str, str]:
        """The dedupe key ``(source, id)``."""
        return (self.source, self.id)


def parse_event(headers: Mapping[str, str], body: bytes) -> SeldonEvent:
    """Parse a binary-mode CloudEvent with the SDK and check its attributes and type.

    Args:
        headers: The HTTP request headers (any case).
        body: The HTTP request body.

    Returns:
        The event, its JSON body parsed; for a protobuf body (gRPC traffic), the event
        with ``encoding="protobuf"`` and no data.

    Raises:
        EventRejected: Missing attributes, a specversion other than 1.0, an unknown
            type, or a body that is not a JSON object.
    """
    from cloudevents.core.bindings.http import HTTPMessage, from_http
    from cloudevents.core.exceptions import BaseCloudEventException
    from cloudevents.core.formats.json import JSONFormat

    lowered = {k.lower(): v for k, v in headers.items()}
    # The SDK fills in a missing id (a fresh UUID) and specversion; a logger that sends
    # neither is broken, and a made-up id would defeat the dedupe.
    missing = [f"Ce-{a.capitalize()}" for a in REQUIRED_ATTRIBUTES if not lowered.get(f"ce-{a}")]
    if missing:
        raise EventRejected(
            "attributes",
            f"missing CloudEvent headers {missing}: send binary-mode CloudEvents v1.0",
        )
    try:
        event = from_http(HTTPMessage(lowered, body), JSONFormat())
    except (BaseCloudEventException, ValueError) as exc:
        raise EventRejected("attributes", f"invalid CloudEvent attributes: {exc}") from exc
    if event.get_specversion() != "1.0":
        raise EventRejected(
            "attributes", f"unsupported specversion {event.get_specversion()!r}: use 1.0"
        )
    kind = EVENT_KINDS.get(event.get_type())
    if kind is None:
        raise EventRejected(
            "type",
            f"unexpected Ce-Type {event.get_type()!r}: expected one of {sorted(EVENT_KINDS)}",
        )
    request_id = event.get_extension("requestid")
    protobuf = is_protobuf(event.get_datacontenttype())
    data = None if protobuf else event.get_data()
    if not protobuf and kind != "response" and not isinstance(data, dict):
        shown = "an empty body" if data is None else f"{type(data).__name__}"
        raise EventRejected(
            "payload", f"the body must be a JSON object (a Seldon message), got {shown}"
        )
    return SeldonEvent(
        kind=kind,  # type: ignore[arg-type]
        id=event.get_id(),
        source=event.get_source(),
        request_id=str(request_id) if request_id else None,
        data=data,
        encoding="protobuf" if protobuf else "json",
    )


def is_protobuf(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` names a protobuf body (parameters and case ignored)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type in PROTOBUF_CONTENT_TYPES


def request_rows(message: Any, schema: InputSchema, what: str = "request") -> pd.DataFrame:
    """Check the rows of a Seldon message against the schema and coerce them.

    Args:
        message: The parsed ``SeldonMessage``.
        schema: The served version's input schema.
        what: How to call the message in error messages.

    Returns:
        The coerced rows (the schema's feature columns, in order).

    Raises:
        EventRejected: ``payload`` if the message has no rows in a supported form,
            ``too_large`` for more than :data:`MAX_ROWS_PER_EVENT` rows, ``schema`` if
            the rows do not match the schema.
    """
    if not isinstance(message, Mapping):
        raise EventRejected("payload", f"the {what} must be a JSON object (a Seldon message)")
    if "data" in message:
        names, rows = _data_rows(message["data"], what)
        frame_or_rows: Any = rows
    elif "jsonData" in message:
        names, frame_or_rows = None, _json_rows(message["jsonData"], schema, what)
    else:
        present = sorted(message)
        raise EventRejected(
            "payload",
            f"the {what} has no rows: expected 'data' (ndarray or tensor) or 'jsonData', "
            f"got keys {present}",
        )
    count = len(frame_or_rows)
    if count > MAX_ROWS_PER_EVENT:
        raise EventRejected(
            "too_large", f"the {what} holds {count} rows; at most {MAX_ROWS_PER_EVENT} per event"
        )
    try:
        return check_frame(frame_or_rows, schema, names).frame
    except SchemaError as exc:
        raise EventRejected(
            "schema", f"the {what} does not match the model's schema: {exc}"
        ) from exc


def feedback_rows(message: Any, schema: InputSchema) -> tuple[pd.DataFrame, pd.Series]:
    """Check a Seldon ``Feedback`` message: the features of ``request`` and the ``truth``.

    Args:
        message: The parsed ``Feedback`` (``{"request": ..., "truth": ..., ...}``).
        schema: The served version's input schema.

    Returns:
        The coerced feature rows and the labels (a series named ``schema.target``, on the
        same index).

    Raises:
        EventRejected: If the request rows or the labels are missing or invalid.
    """
    if not isinstance(message, Mapping) or "request" not in message or "truth" not in message:
        raise EventRejected(
            "payload", "a feedback message needs 'request' (the features) and 'truth' (the labels)"
        )
    frame = request_rows(message["request"], schema, what="feedback request")
    labels = _truth_labels(message["truth"], len(frame), schema)
    return frame, pd.Series(labels, index=frame.index, name=schema.target)


@dataclass(frozen=True)
class ResponsePrediction:
    """The scores a model answered with, as a response event logged them.

    Attributes:
        scores: ``(rows, classes)`` probabilities of a classifier, in the order of
            ``schema.classes``; ``(rows,)`` predictions of a regressor.
        model_version: ``meta.tags.model_version`` of the response, if it carries one.
    """

    scores: np.ndarray
    model_version: str | None

    def __len__(self) -> int:
        return len(self.scores)


def response_prediction(message: Any, schema: InputSchema) -> ResponsePrediction:
    """Read the scores of a logged response (a ``SeldonMessage`` from the model).

    Args:
        message: The parsed response body.
        schema: The served version's input schema (task and classes).

    Returns:
        The scores and the version that answered.

    Raises:
        EventRejected: If the response holds no finite scores of the schema's shape.
    """
    if not isinstance(message, Mapping) or "data" not in message:
        raise EventRejected("payload", "the response has no 'data' (ndarray or tensor) scores")
    data = message["data"]
    ndarray = data.get("ndarray") if isinstance(data, Mapping) else None
    flat = isinstance(ndarray, list) and all(isinstance(v, _SCALARS) for v in ndarray)
    rows: Any
    if flat and schema.task == "regression":
        # A regressor answers a 1-D array: one prediction per row.
        rows = [[v] for v in ndarray]  # type: ignore[union-attr]
    else:
        _, rows = _data_rows(data, "response")
    try:
        scores = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EventRejected("payload", f"the response's scores are not numbers: {exc}") from exc
    if scores.ndim != 2 or len(scores) == 0:
        raise EventRejected("payload", "the response holds no rows of scores")
    if len(scores) > MAX_ROWS_PER_EVENT:
        raise EventRejected(
            "too_large", f"the response holds {len(scores)} rows; at most {MAX_ROWS_PER_EVENT}"
        )
    if not np.all(np.isfinite(scores)):
        raise EventRejected("payload", "the response's scores must be finite numbers")
    if schema.task == "regression":
        if scores.shape[1] != 1:
            raise EventRejected(
                "schema", f"a regressor answers one value per row, got {scores.shape[1]}"
            )
        scores = scores[:, 0]
    else:
        classes = len(schema.classes or ())
        if scores.shape[1] != classes:
            raise EventRejected(
                "schema",
                f"the response has {scores.shape[1]} scores per row; the model has "
                f"{classes} classes",
            )
    meta = message.get("meta")
    tags = meta.get("tags") if isinstance(meta, Mapping) else None
    version = tags.get("model_version") if isinstance(tags, Mapping) else None
    return ResponsePrediction(scores, str(version) if version else None)


def feedback_puid(message: Any) -> str | None:
    """The puid of the prediction a ``Feedback`` answers: its ``response.meta.puid``.

    Returns:
        The puid, or ``None`` when the feedback echoes no response or it names none.
    """
    response = message.get("response") if isinstance(message, Mapping) else None
    meta = response.get("meta") if isinstance(response, Mapping) else None
    puid = meta.get("puid") if isinstance(meta, Mapping) else None
    return puid if isinstance(puid, str) and puid else None


def _data_rows(data: Any, what: str) -> tuple[list[str] | None, list[list[Any]]]:
    if not isinstance(data, Mapping):
        raise EventRejected("payload", f"the {what}'s 'data' must be a JSON object")
    names = data.get("names")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise EventRejected("payload", f"the {what}'s 'data.names' must be a list of strings")
    if "ndarray" in data:
        rows = _ndarray_rows(data["ndarray"], what)
    elif "tensor" in data:
        rows = _tensor_rows(data["tensor"], what)
    else:
        raise EventRejected(
            "payload",
            f"the {what}'s 'data' has neither 'ndarray' nor 'tensor' (got {sorted(data)})",
        )
    return (names or None), rows


def _ndarray_rows(ndarray: Any, what: str) -> list[list[Any]]:
    if not isinstance(ndarray, list) or not ndarray:
        raise EventRejected("payload", f"the {what}'s 'data.ndarray' must be a non-empty list")
    if all(isinstance(v, _SCALARS) for v in ndarray):
        ndarray = [ndarray]
    width = None
    for i, row in enumerate(ndarray):
        if not isinstance(row, list) or not all(isinstance(v, _SCALARS) for v in row):
            raise EventRejected(
                "payload",
                f"the {what}'s 'data.ndarray' row {i} is not a flat list of numbers/strings",
            )
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise EventRejected(
                "payload",
                f"the {what}'s 'data.ndarray' is ragged: row 0 has {width} values, row {i} has {len(row)}",
            )
    return ndarray


def _tensor_rows(tensor: Any, what: str) -> list[list[Any]]:
    if not isinstance(tensor, Mapping):
        raise EventRejected("payload", f"the {what}'s 'data.tensor' must be a JSON object")
    shape, values = tensor.get("shape"), tensor.get("values")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
        or not isinstance(values, list)
        or len(values) != shape[0] * shape[1]
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    ):
        raise EventRejected(
            "payload",
            f"the {what}'s 'data.tensor' needs shape [rows, cols] and rows*cols numeric values",
        )
    return np.asarray(values, dtype=float).reshape(shape).tolist()


def _json_rows(json_data: Any, schema: InputSchema, what: str) -> pd.DataFrame:
    records = [json_data] if isinstance(json_data, Mapping) else json_data
    if not isinstance(records, list) or not records:
        raise EventRejected(
            "payload",
            f"the {what}'s 'jsonData' must be an object or a non-empty list of objects",
        )
    expected = list(schema.feature_names)
    wanted = set(expected)
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise EventRejected("payload", f"the {what}'s 'jsonData' item {i} is not an object")
        keys = set(record)
        if keys != wanted:
            raise EventRejected(
                "schema",
                f"the {what}'s 'jsonData' item {i}: missing {sorted(wanted - keys)}, "
                f"unexpected {sorted(keys - wanted)} (expected {expected})",
            )
        if not all(isinstance(record[k], _SCALARS) for k in expected):
            raise EventRejected(
                "payload", f"the {what}'s 'jsonData' item {i} holds a non-scalar value"
            )
    return pd.DataFrame([[r[k] for k in expected] for r in records], columns=expected, dtype=object)


def _truth_labels(truth: Any, n_rows: int, schema: InputSchema) -> list[Any]:
    if not isinstance(truth, Mapping):
        raise EventRejected("payload", "the feedback 'truth' must be a Seldon message")
    values: Any
    if isinstance(truth.get("data"), Mapping) and "ndarray" in truth["data"]:
        values = truth["data"]["ndarray"]
    elif "jsonData" in truth:
        values = truth["jsonData"]
    else:
        raise EventRejected("payload", "the feedback 'truth' needs 'data.ndarray' or 'jsonData'")
    if not isinstance(values, list):
        values = [values]
    flat = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in values]
    if len(flat) != n_rows:
        raise EventRejected(
            "schema", f"the feedback has {n_rows} feature rows but {len(flat)} truth labels"
        )
    return [_label(v, i, schema) for i, v in enumerate(flat)]


def _label(value: Any, position: int, schema: InputSchema) -> Any:
    if schema.task == "regression":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise EventRejected(
                "schema", f"truth label {position} must be a finite number, got {value!r}"
            )
        return float(value)
    classes: Sequence[Any] = schema.classes or ()
    candidate = value
    if isinstance(value, float) and value.is_integer():
        candidate = int(value)
    elif isinstance(value, str) and value not in classes:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if number.is_integer():
            candidate = int(number)
    bool_classes = any(isinstance(c, bool) for c in classes)
    if isinstance(candidate, bool) != bool_classes or candidate not in classes:
        raise EventRejected(
            "schema",
            f"truth label {position} is {value!r}; the model's classes are {list(classes)}",
        )
    return candidate
