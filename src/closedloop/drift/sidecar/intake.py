"""One event checked, before it touches any state: what the monitor will take from it.

:func:`check_event` is pure (no lock, no state): it reads the body once and runs the
model server's checks (:mod:`~closedloop.drift.sidecar.events`). The live path and the
journal replay both go through it, so a replayed event is taken exactly as it was
the first time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from closedloop.drift.sidecar.errors import EventRefused, EventRejected
from closedloop.drift.sidecar.events import (
    ResponsePrediction,
    SeldonEvent,
    check_rows,
    feedback_puid,
    feedback_rows,
    read_body,
    request_message,
    response_prediction,
)
from closedloop.ml.rowplan import CheckedRows, RowPlan
from closedloop.ml.schema import InputSchema

Verdict = Literal["take", "rejected", "refused", "skipped", "ignored"]


@dataclass(slots=True)
class CheckedEvent:
    """What the checks made of one event.

    Attributes:
        event: Its attributes.
        body: Its body as posted (journaled as is).
        verdict: ``take`` (rows or a prediction to take), ``rejected`` (unreadable:
            4xx), ``refused`` (the server refuses it: acknowledged, nothing taken),
            ``skipped`` (a protobuf body) or ``ignored`` (a response that cannot be
            joined).
        error: The rejection or refusal.
        rows: The checked rows of a request or feedback.
        labels: A feedback's labels, one per row.
        puid: The prediction a feedback names.
        prediction: A response's scores.
    """

    event: SeldonEvent
    body: bytes
    verdict: Verdict = "take"
    error: EventRejected | EventRefused | None = None
    rows: CheckedRows | None = None
    labels: list[Any] | None = None
    puid: str | None = None
    prediction: ResponsePrediction | None = None


def check_event(
    event: SeldonEvent, body: bytes, plan: RowPlan, schema: InputSchema, max_rows: int
) -> CheckedEvent:
    """Read *body* and check it as the model server checks the message it logs.

    Args:
        event: The event's checked attributes.
        body: Its body.
        plan: The served version's row checks.
        schema: The served version's schema (labels, response scores).
        max_rows: The model server's ``max_rows``.
    """
    checked = CheckedEvent(event, body)
    if event.encoding == "protobuf":
        checked.verdict = "skipped"
        return checked
    try:
        data = read_body(body)
    except EventRejected as exc:
        checked.verdict, checked.error = "rejected", exc
        return checked
    try:
        if event.kind == "request":
            checked.rows = check_rows(plan, request_message(data, max_rows))
        elif event.kind == "feedback":
            checked.rows, checked.labels = feedback_rows(data, plan, schema, max_rows)
            checked.puid = feedback_puid(data)
        elif event.request_id is None:
            checked.verdict = "ignored"
        else:
            checked.prediction = response_prediction(data, schema, max_rows)
    except EventRefused as exc:
        # A response that cannot be joined is best effort, as the executor's logging.
        checked.verdict = "ignored" if event.kind == "response" else "refused"
        checked.error = exc
    return checked
