"""The sidecar's exception tree.

Two ways an event is not taken, answered differently:

* :class:`EventRejected` — the event cannot be read at all (not a binary-mode
  CloudEvent, a body that is not JSON, nested too deeply to parse, or too large): a client error,
  answered 400 (413 for ``too_large``) and counted in ``events_rejected_total``;
* :class:`EventRefused` — a readable event whose message or rows the model server
  refuses. The executor logs a request before the model checks it, so such events
  arrive in normal operation: they are acknowledged (202, the executor must not retry
  them), their rows are kept out of every window and counted by reason in
  ``rows_refused_total``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from closedloop.errors import ClosedLoopError

RejectReason = Literal["attributes", "type", "not_json", "too_deep", "too_large"]

REFUSED_MESSAGE = "message"
"""The message is not one the server reads (``closedloop.serving.messages`` refuses it)."""
REFUSED_TOO_MANY_ROWS = "too_many_rows"
"""More rows than the server's ``max_rows``."""
REFUSED_COLUMNS = "columns"
"""Names or width do not fit the schema (wrong width, missing, extra or reordered names)."""
REFUSED_WITH_REQUEST = "request_refused"
"""A good row of a request the server refuses whole because another of its rows is refused."""
REFUSED_LABEL = "label"
"""Feedback whose truth labels do not fit the model (count, kind or class)."""
MESSAGE_REASONS: tuple[str, ...] = (
    REFUSED_MESSAGE,
    REFUSED_TOO_MANY_ROWS,
    REFUSED_COLUMNS,
    REFUSED_WITH_REQUEST,
    REFUSED_LABEL,
)
"""Refusal reasons of the sidecar's own, beside :data:`closedloop.ml.rowplan.REASONS`."""


class SidecarError(ClosedLoopError):
    """Base class of every drift-sidecar failure."""


class EventRejected(SidecarError):
    """An incoming CloudEvent cannot be read; it is answered 4xx and never buffered.

    Attributes:
        reason: A short label for the ``events_rejected_total`` metric.
    """

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


class EventRefused(SidecarError):
    """The model server refuses this event's message or rows: acknowledged, nothing taken.

    Attributes:
        reason: The first (or only) reason: one of :data:`closedloop.ml.rowplan.REASONS`
            or :data:`MESSAGE_REASONS`.
        rows: Refused rows by reason. A message refused before its rows can be read
            counts as one row.
    """

    def __init__(self, reason: str, message: str, rows: Mapping[str, int] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.rows: dict[str, int] = dict(rows) if rows else {reason: 1}


class ModelLoadError(SidecarError):
    """The served version's detector or schema could not be fetched or loaded."""


class CheckpointError(SidecarError):
    """The state directory cannot be written or holds an unreadable checkpoint."""


class JournalError(SidecarError):
    """The event journal cannot be written: nothing more is acknowledged until a restart."""
