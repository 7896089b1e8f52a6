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

The types are :mod:`closedloop.events`'s, the ones the local request logger sends.
Messages are read with :mod:`closedloop.serving.messages`, the model server's own
parser: ``ndarray``, ``tensor`` or ``jsonData`` rows, ``names``, the labels of
``truth``. A message it refuses is refused here with the same words, as
:class:`EventRejected` (``payload``, or ``too_large`` past :data:`MAX_ROWS_PER_EVENT`);
rows that do not fit the model are refused as ``schema``, checked and coerced with
:func:`closedloop.ml.schema.check_frame`. A feedback's ``request`` may carry
``jsonData`` records here (the server wants ``data``): the executor logs what the client
sent, and its rows are still worth archiving.

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
from closedloop.events import (
    FEEDBACK_TYPE,
    REQUEST_TYPE,
    REQUIRED_ATTRIBUTES,
    RESPONSE_TYPE,
    SELDON_EVENT_KINDS,
    SPECVERSION,
)
from closedloop.ml.schema import InputSchema, SchemaError, check_frame
from closedloop.serving.messages import (
    MessageError,
    MessageRows,
    TooManyRows,
    prediction_rows,
    records_frame,
    truth_labels,
)

__all__ = [
    "EVENT_KINDS",
    "FEEDBACK_TYPE",
    "MAX_ROWS_PER_EVENT",
    "PROTOBUF_CONTENT_TYPES",
    "REQUEST_TYPE",
    "RESPONSE_TYPE",
    "EventEncoding",
    "EventKind",
    "ResponsePrediction",
    "SeldonEvent",
    "feedback_puid",
    "feedback_rows",
    "is_protobuf",
    "parse_event",
    "request_rows",
    "response_prediction",
]

EVENT_KINDS = SELDON_EVENT_KINDS
MAX_ROWS_PER_EVENT = 10_000
PROTOBUF_CONTENT_TYPES = frozenset({"application/protobuf", "application/x-protobuf"})
"""Media types of a protobuf body: the Seldon executor's gRPC payloads (the first)."""

EventKind = Literal["request", "response", "feedback"]
EventEncoding = Literal["json", "protobuf"]


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
    if event.get_specversion() != SPECVERSION:
        raise EventRejected(
            "attributes",
            f"unsupported specversion {event.get_specversion()!r}: use {SPECVERSION}",
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


def request_rows(message: Any, schema: InputSchema, what: str = "") -> pd.DataFrame:
    """Check the rows of a Seldon message against the schema and coerce them.

    Args:
        message: The parsed ``SeldonMessage``.
        schema: The served version's input schema.
        what: Where the message sits (``feedback.request``), put before error
            messages; empty for a request event, whose errors read as the server's.

    Returns:
        The coerced rows (the schema's feature columns, in order).

    Raises:
        EventRejected: ``payload`` if the model server would refuse the message,
            ``too_large`` for more than :data:`MAX_ROWS_PER_EVENT` rows, ``schema`` if
            the rows do not match the schema.
    """
    rows = _message_rows(message, what)
    try:
        if rows.records is not None:
            checked = check_frame(records_frame(rows.records, schema.feature_names), schema)
        else:
            checked = check_frame(rows.rows or [], schema, rows.names)
    except (MessageError, SchemaError) as exc:
        raise EventRejected(
            "schema", f"{what or 'the request'} does not match the model's schema: {exc}"
        ) from exc
    return checked.frame


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
    frame = request_rows(message["request"], schema, what="feedback.request")
    try:
        truth = truth_labels(message["truth"], max_rows=MAX_ROWS_PER_EVENT)
    except MessageError as exc:
        raise _rejected(exc, "") from exc
    if len(truth) != len(frame):
        raise EventRejected(
            "schema", f"the feedback has {len(frame)} feature rows but {len(truth)} truth labels"
        )
    labels = [_label(v, i, schema) for i, v in enumerate(truth)]
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
    flat = isinstance(ndarray, list) and not any(isinstance(v, list) for v in ndarray)
    rows: Any
    if flat and schema.task == "regression":
        # A regressor answers a 1-D array: one prediction per row.
        rows = [[v] for v in ndarray]  # type: ignore[union-attr]
    else:
        rows = _message_rows(message, "response").rows
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


def _where(what: str) -> str:
    return f"{what}: " if what else ""


def _rejected(exc: MessageError, what: str) -> EventRejected:
    """The sidecar's refusal of a message the model server refuses, in the same words."""
    reason = "too_large" if isinstance(exc, TooManyRows) else "payload"
    return EventRejected(reason, f"{_where(what)}{exc}")


def _message_rows(message: Any, what: str) -> MessageRows:
    try:
        return prediction_rows(message, max_rows=MAX_ROWS_PER_EVENT)
    except MessageError as exc:
        raise _rejected(exc, what) from exc


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
