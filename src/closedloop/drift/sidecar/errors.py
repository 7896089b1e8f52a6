"""The sidecar's exception tree."""

from __future__ import annotations

from typing import Literal

from closedloop.errors import ClosedLoopError

RejectReason = Literal["attributes", "type", "payload", "schema", "too_large"]


class SidecarError(ClosedLoopError):
    """Base class of every drift-sidecar failure."""


class EventRejected(SidecarError):
    """An incoming CloudEvent is invalid; it is answered 400 and never buffered.

    Attributes:
        reason: A short label for the ``events_rejected_total`` metric.
    """

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


class ModelLoadError(SidecarError):
    """The served version's detector or schema could not be fetched or loaded."""


class CheckpointError(SidecarError):
    """The state directory cannot be written or holds an unreadable checkpoint."""
