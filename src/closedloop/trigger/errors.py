"""The retrain trigger's exception tree."""

from __future__ import annotations

from closedloop.errors import ClosedLoopError


class TriggerError(ClosedLoopError):
    """Base class of every retrain-trigger failure."""


class PipelineNotFoundError(TriggerError):
    """``--pipeline`` names no registered pipeline, importable function or compiled file."""


class BackendError(TriggerError):
    """A pipeline backend could not start or query a run."""


class BackendUnavailableError(BackendError):
    """The backend is down or timed out: the run stays pending and is retried."""


class BackendRejectedError(BackendError):
    """The backend refused the run for good (bad package or arguments): not retried."""


class DecisionInProgressError(TriggerError):
    """The same alarm id is being decided by another receipt: retry later (HTTP 503)."""


class UnfilableAlarmError(TriggerError, ValueError):
    """A drift event names or times what the state cannot file under its keys (HTTP 400)."""
