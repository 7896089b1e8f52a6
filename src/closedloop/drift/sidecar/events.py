"""Seldon request-logger CloudEvents: attributes, bodies, and the server's own checks.

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

Reading an event has two stages with two kinds of failure:

1. :func:`parse_attributes` and :func:`read_body` read the CloudEvent: the four required
   attributes straight from the ``Ce-*`` headers (values percent-decoded, as the HTTP
   binding says), ``Ce-Specversion: 1.0``, a known ``Ce-Type``, and a body that parses as
   JSON (once, with orjson; Python's ``json`` for what orjson refuses and Python reads:
   ``NaN``, integers beyond 64 bits — as the model server's own JSON provider). What
   fails here (not JSON, or nested too deeply to parse) is :class:`EventRejected`, a
   client error (400).
2. :func:`request_message`, :func:`check_rows` and :func:`feedback_rows` check the
   message exactly as the model server does: :mod:`closedloop.serving.messages` for the
   message (with the server's ``max_rows``), then the version's
   :class:`~closedloop.ml.rowplan.RowPlan` for the rows. The server answers a request
   with one refused row with a 400 for all of it, so a request or feedback with a
   refused row is refused whole: :class:`EventRefused`, whose rows are counted by
   reason (the plan's :data:`~closedloop.ml.rowplan.REASONS`, or
   :data:`~closedloop.drift.sidecar.errors.MESSAGE_REASONS`). The executor logs a
   request before the model checks it, so such events are acknowledged, never buffered.

Traffic on the executor's gRPC port is logged too, with the same ``Ce-Type`` values,
but its body is the protobuf-encoded message and its ``Content-Type`` (the event's
``datacontenttype``) is ``application/protobuf`` (seldon-core ``executor/api/payload/
proto.go``, set by ``executor/logger/worker.go``). Drift watches REST (JSON) traffic
only: such an event passes the attribute checks and comes back with
``encoding="protobuf"``, for the monitor to count and skip.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

import numpy as np
import orjson

from closedloop.drift.sidecar.errors import (
    REFUSED_COLUMNS,
    REFUSED_LABEL,
    REFUSED_MESSAGE,
    REFUSED_TOO_MANY_ROWS,
    REFUSED_WITH_REQUEST,
    EventRefused,
    EventRejected,
)
from closedloop.events import (
    FEEDBACK_TYPE,
    REQUEST_TYPE,
    REQUIRED_ATTRIBUTES,
    RESPONSE_TYPE,
    SELDON_EVENT_KINDS,
    SPECVERSION,
)
from closedloop.ml.rowplan import CheckedRows, RowPlan
from closedloop.ml.schema import InputSchema, SchemaError
from closedloop.serving.messages import (
    MAX_NESTING,
    MessageError,
    MessageRows,
    TooManyRows,
    check_feedback_message,
    message_rows,
    prediction_rows,
    truth_labels,
)
from closedloop.serving.parameters import DEFAULT_MAX_ROWS

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
    "check_rows",
    "feedback_puid",
    "feedback_rows",
    "is_protobuf",
    "parse_attributes",
    "read_body",
    "refusal",
    "request_message",
    "response_prediction",
]

EVENT_KINDS = SELDON_EVENT_KINDS
MAX_ROWS_PER_EVENT = DEFAULT_MAX_ROWS
"""The model server's default ``max_rows``; the sidecar takes the server's setting."""
PROTOBUF_CONTENT_TYPES = frozenset({"application/protobuf", "application/x-protobuf"})
"""Media types of a protobuf body: the Seldon executor's gRPC payloads (the first)."""

EventKind = Literal["request", "response", "feedback"]
EventEncoding = Literal["json", "protobuf"]
_HEADERS = tuple(f"ce-{a}" for a in REQUIRED_ATTRIBUTES)


@dataclass(frozen=True, slots=True)
class SeldonEvent:
    """The attributes of a CloudEvent from the request logger, checked.

    Attributes:
        kind: ``request``, ``response`` or ``feedback``.
        id: ``Ce-Id``.
        source: ``Ce-Source``.
        request_id: ``Ce-Requestid``, if sent.
        encoding: ``json``, or ``protobuf`` for a message logged from the gRPC port
            (not decoded: drift watches REST traffic only).
    """

    kind: EventKind
    id: str
    source: str
    request_id: str | None = None
    encoding: EventEncoding = "json"

    @property
    def key(self) -> tuple[str, str]:
        """The dedupe key ``(source, id)``."""
        return (self.source, self.id)


def _attribute(value: str) -> str:
    return unquote(value) if "%" in value else value


def parse_attributes(headers: Mapping[str, str]) -> SeldonEvent:
    """Read and check the attributes of a binary-mode CloudEvent from its headers.

    Args:
        headers: The HTTP request headers, names in lower case.

    Raises:
        EventRejected: Missing attributes, a specversion other than 1.0 or an unknown type.
    """
    values = [headers.get(name) for name in _HEADERS]
    if not all(values):
        missing = [
            f"Ce-{a.capitalize()}"
            for a, v in zip(REQUIRED_ATTRIBUTES, values, strict=True)
            if not v
        ]
        raise EventRejected(
            "attributes",
            f"missing CloudEvent headers {missing}: send binary-mode CloudEvents v1.0",
        )
    event_id, source, event_type, specversion = values
    if specversion != SPECVERSION:
        raise EventRejected(
            "attributes", f"unsupported specversion {specversion!r}: use {SPECVERSION}"
        )
    kind = EVENT_KINDS.get(event_type)  # type: ignore[arg-type]
    if kind is None:
        raise EventRejected(
            "type", f"unexpected Ce-Type {event_type!r}: expected one of {sorted(EVENT_KINDS)}"
        )
    request_id = headers.get("ce-requestid")
    return SeldonEvent(
        kind,  # type: ignore[arg-type]
        _attribute(event_id),  # type: ignore[arg-type]
        _attribute(source),  # type: ignore[arg-type]
        _attribute(request_id) if request_id else None,
        "protobuf" if is_protobuf(headers.get("content-type")) else "json",
    )


def is_protobuf(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` names a protobuf body (parameters and case ignored)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type in PROTOBUF_CONTENT_TYPES


def read_body(body: bytes) -> Any:
    """Parse a JSON body once, as the model server does.

    A body too deep for the parsers (orjson stops at 1,024 levels, Python's ``json`` at
    its recursion limit) is refused here; a shallower one deeper than
    :data:`~closedloop.serving.messages.MAX_NESTING` is parsed, and refused by the
    server's own message checks, which measure nesting first.

    Raises:
        EventRejected: ``not_json`` or ``too_deep``.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(body)
        except RecursionError as exc:
            raise EventRejected(
                "too_deep",
                f"the body is nested too deeply: at most {MAX_NESTING} levels of arrays "
                "and objects are accepted",
            ) from exc
        except ValueError as exc:
            raise EventRejected("not_json", f"the body is not valid JSON: {exc}") from exc


def refusal(exc: MessageError, what: str = "") -> EventRefused:
    """The refusal of a message the server refuses, in the server's words."""
    reason = REFUSED_TOO_MANY_ROWS if isinstance(exc, TooManyRows) else REFUSED_MESSAGE
    return EventRefused(reason, f"{what}: {exc}" if what else str(exc))


def request_message(data: Any, max_rows: int) -> MessageRows:
    """Check a prediction request as the server does and take its rows out.

    Raises:
        EventRefused: ``message`` or ``too_many_rows``, with the server's words.
    """
    try:
        return prediction_rows(data, max_rows=max_rows)
    except MessageError as exc:
        raise refusal(exc) from exc


def check_rows(plan: RowPlan, message: MessageRows, what: str = "") -> CheckedRows:
    """Check a message's rows with the served version's plan; refuse them all if one is refused.

    Raises:
        EventRefused: ``columns`` for names or width that do not fit (every row
            counted so), else the first refused row's reason; every row of the message
            is counted (the good ones as ``request_refused``).
    """
    try:
        if message.records is not None:
            checked = plan.check_records(message.records)
        else:
            checked = plan.check_rows(message.rows or [], message.names)
    except SchemaError as exc:
        count = len(message.records if message.records is not None else message.rows or [])
        raise EventRefused(
            REFUSED_COLUMNS,
            f"{what or 'the request'} does not match the model's schema: {exc}",
            {REFUSED_COLUMNS: max(1, count)},
        ) from exc
    if checked.errors:
        raise rows_refusal(checked, what)
    return checked


def rows_refusal(checked: CheckedRows, what: str = "") -> EventRefused:
    """The refusal of rows of which at least one is refused (the server's 400 message)."""
    text = ""
    try:
        checked.raise_for_errors()
    except SchemaError as exc:
        text = str(exc)
    counts = checked.refusals_by_reason()
    others = checked.n_rows - len(checked.errors)
    if others:
        counts[REFUSED_WITH_REQUEST] = others
    return EventRefused(checked.errors[0].reason, f"{what}: {text}" if what else text, counts)


def feedback_rows(
    message: Any, plan: RowPlan, schema: InputSchema, max_rows: int
) -> tuple[CheckedRows, list[Any]]:
    """Check a Seldon ``Feedback`` as the server does: the rows of ``request``, the ``truth``.

    Returns:
        The checked rows and one label per row (of the schema's classes, or floats).

    Raises:
        EventRefused: If the message, the rows or the labels are refused.
    """
    try:
        check_feedback_message(message, max_rows=max_rows)
    except MessageError as exc:
        raise refusal(exc) from exc
    request, truth = message.get("request"), message.get("truth")
    if not isinstance(request, Mapping) or "data" not in request or truth is None:
        raise EventRefused(
            REFUSED_MESSAGE,
            "a feedback message needs 'request.data' (the features) and 'truth' (the labels)",
        )
    try:
        rows = message_rows(request, max_rows=max_rows)
    except MessageError as exc:
        raise refusal(exc, "feedback.request") from exc
    checked = check_rows(plan, rows, what="feedback.request")
    try:
        labels = truth_labels(truth, max_rows=max_rows)
    except MessageError as exc:
        raise EventRefused(REFUSED_LABEL, str(exc), {REFUSED_LABEL: checked.n_rows}) from exc
    if len(labels) != checked.n_rows:
        raise EventRefused(
            REFUSED_LABEL,
            f"the feedback has {checked.n_rows} feature rows but {len(labels)} truth labels",
            {REFUSED_LABEL: checked.n_rows},
        )
    return checked, [_label(v, i, schema, checked.n_rows) for i, v in enumerate(labels)]


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


def response_prediction(
    message: Any, schema: InputSchema, max_rows: int = MAX_ROWS_PER_EVENT
) -> ResponsePrediction:
    """Read the scores of a logged response (a ``SeldonMessage`` from the model).

    Args:
        message: The parsed response body.
        schema: The served version's input schema (task and classes).
        max_rows: Most rows read.

    Returns:
        The scores and the version that answered.

    Raises:
        EventRefused: If the response holds no finite scores of the schema's shape.
    """
    if not isinstance(message, Mapping) or "data" not in message:
        raise EventRefused(REFUSED_MESSAGE, "the response has no 'data' (ndarray or tensor) scores")
    data = message["data"]
    ndarray = data.get("ndarray") if isinstance(data, Mapping) else None
    flat = isinstance(ndarray, list) and not any(isinstance(v, list) for v in ndarray)
    rows: Any
    if flat and schema.task == "regression":
        # A regressor answers a 1-D array: one prediction per row.
        rows = [[v] for v in ndarray]  # type: ignore[union-attr]
    else:
        try:
            rows = prediction_rows(message, max_rows=max_rows).rows
        except MessageError as exc:
            raise refusal(exc, "response") from exc
    try:
        scores = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EventRefused(
            REFUSED_MESSAGE, f"the response's scores are not numbers: {exc}"
        ) from exc
    if scores.ndim != 2 or len(scores) == 0:
        raise EventRefused(REFUSED_MESSAGE, "the response holds no rows of scores")
    if len(scores) > max_rows:
        raise EventRefused(
            REFUSED_TOO_MANY_ROWS, f"the response holds {len(scores)} rows; at most {max_rows}"
        )
    if not np.all(np.isfinite(scores)):
        raise EventRefused(REFUSED_MESSAGE, "the response's scores must be finite numbers")
    if schema.task == "regression":
        if scores.shape[1] != 1:
            raise EventRefused(
                REFUSED_COLUMNS, f"a regressor answers one value per row, got {scores.shape[1]}"
            )
        scores = scores[:, 0]
    else:
        classes = len(schema.classes or ())
        if scores.shape[1] != classes:
            raise EventRefused(
                REFUSED_COLUMNS,
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


def _label(value: Any, position: int, schema: InputSchema, rows: int) -> Any:
    def refused(message: str) -> EventRefused:
        return EventRefused(REFUSED_LABEL, message, {REFUSED_LABEL: rows})

    if schema.task == "regression":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise refused(f"truth label {position} must be a finite number, got {value!r}")
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
        raise refused(
            f"truth label {position} is {value!r}; the model's classes are {list(classes)}"
        )
    return candidate
