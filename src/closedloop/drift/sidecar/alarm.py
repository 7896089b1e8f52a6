"""The drift CloudEvent: what a sidecar sends the retrain trigger when a window alerts.

A window alerts when its inputs drifted or its quality degraded
(:attr:`closedloop.drift.verdict.WindowVerdict.alert`); the trigger re-judges every
window it carries with the same :func:`~closedloop.drift.verdict.window_verdict`.

Binary-mode CloudEvent v1.0, built and parsed with the CloudEvents SDK:

* ``type``: :data:`DRIFT_EVENT_TYPE` (``io.closedloop.drift.detected``);
* ``source``: ``/closedloop/sidecar/<model>/<version>/<replica>``;
* ``id``: a UUID5 of ``(model, version, replica, window sequence)`` (:func:`alarm_id`), so
  every delivery of one window's alarm, retries and restarts included, carries the same
  id and the trigger can treat a repeat as a duplicate;
* ``subject``: the model name; ``time``: when the window closed;
* ``datacontenttype``: ``application/json``; data: :meth:`DriftAlarm.to_dict`, i.e.
  ``schema_version``, ``model_name``, ``model_version``, ``replica``, ``archive_uri``,
  ``p_value`` and ``effect_size_threshold`` (the sidecar's policy), ``window`` (the
  alerting window) and ``history`` (the windows before it, alerting or not, at most
  ``n - 1``), each window a :class:`WindowReport` with its input-drift scores and, when
  it held enough labelled rows, its ``quality`` (a
  :class:`~closedloop.quality.QualityResult`) and ``labels_stale``. Schema version 1
  events (before quality) are still read, as windows without quality.

The history is there because a sidecar only speaks when a window drifts: it is how the
trigger learns about the quiet windows in between and can apply "k of the last n".
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from closedloop.drift.policy import DriftPolicy
from closedloop.drift.verdict import WindowVerdict, window_verdict
from closedloop.errors import ClosedLoopError
from closedloop.events import DRIFT_TYPE, REQUIRED_ATTRIBUTES
from closedloop.quality.baseline import QualityError, QualityResult

DRIFT_EVENT_TYPE = DRIFT_TYPE
ALARM_SCHEMA_VERSION = 2
_READABLE_SCHEMA_VERSIONS = (1, 2)
_ID_NAMESPACE = uuid.UUID("6f1d0c4e-5a53-4c1b-9a57-0c3c1b5e8a21")

CloseReason = Literal["size", "age"]


class AlarmError(ClosedLoopError, ValueError):
    """A drift CloudEvent is malformed: missing attributes, wrong type or bad data."""


def alarm_id(model_name: str, model_version: str, replica: str, sequence: int) -> str:
    """Return the stable CloudEvent id of one window's drift alarm."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{model_name}/{model_version}/{replica}/{sequence}"))


def alarm_source(model_name: str, model_version: str, replica: str) -> str:
    """Return the CloudEvent source of a sidecar."""
    return f"/closedloop/sidecar/{model_name}/{model_version}/{replica}"


@dataclass(frozen=True)
class WindowReport:
    """The detector's answer for one closed window.

    Attributes:
        sequence: The window's number at its sidecar (1, 2, …).
        opened_at: When its first row arrived (Unix seconds).
        closed_at: When it closed (Unix seconds).
        n_rows: Rows it held.
        close_reason: ``size`` (full) or ``age`` (``window_max_age_seconds`` passed).
        p_values: Feature → p-value.
        distances: Feature → test statistic (KS statistic or chi-squared).
        effect_sizes: Feature → effect size on a 0-1 scale.
        drifted_features: Features that drifted under the sidecar's policy.
        quality: The window's labelled rows against the version's baseline, or
            ``None`` when it had none (or no baseline).
        labels_stale: Whether no label had arrived for ``label_delay_seconds``.
    """

    sequence: int
    opened_at: float
    closed_at: float
    n_rows: int
    close_reason: CloseReason
    p_values: Mapping[str, float]
    distances: Mapping[str, float]
    effect_sizes: Mapping[str, float]
    drifted_features: tuple[str, ...]
    quality: QualityResult | None = None
    labels_stale: bool = False

    @property
    def drifted(self) -> bool:
        """Whether the sidecar judged this window's inputs drifted."""
        return bool(self.drifted_features)

    def verdict(self, policy: DriftPolicy) -> WindowVerdict:
        """Judge this window under *policy* (the trigger re-judges with its own)."""
        return window_verdict(
            policy, self.p_values, self.effect_sizes, self.quality, self.labels_stale
        )

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-compatible data."""
        return {
            "sequence": self.sequence,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "n_rows": self.n_rows,
            "close_reason": self.close_reason,
            "p_values": dict(self.p_values),
            "distances": dict(self.distances),
            "effect_sizes": dict(self.effect_sizes),
            "drifted_features": list(self.drifted_features),
            "quality": None if self.quality is None else self.quality.to_dict(),
            "labels_stale": self.labels_stale,
        }

    @classmethod
    def from_dict(cls, data: Any) -> WindowReport:
        """Parse :meth:`to_dict` output.

        Raises:
            AlarmError: If a field is missing or has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise AlarmError(f"a window report is a JSON object, got {type(data).__name__}")
        try:
            reason = data["close_reason"]
            if reason not in ("size", "age"):
                raise AlarmError(f"close_reason must be 'size' or 'age', got {reason!r}")
            report = cls(
                sequence=_int(data["sequence"], "sequence", low=1),
                opened_at=_number(data["opened_at"], "opened_at"),
                closed_at=_number(data["closed_at"], "closed_at"),
                n_rows=_int(data["n_rows"], "n_rows", low=1),
                close_reason=reason,
                p_values=_feature_numbers(data["p_values"], "p_values"),
                distances=_feature_numbers(data["distances"], "distances"),
                effect_sizes=_feature_numbers(data["effect_sizes"], "effect_sizes"),
                drifted_features=tuple(str(f) for f in _list(data["drifted_features"])),
                quality=_quality(data.get("quality")),
                labels_stale=_flag(data.get("labels_stale", False), "labels_stale"),
            )
        except KeyError as exc:
            raise AlarmError(f"a window report lacks the field {exc.args[0]!r}") from exc
        if not report.p_values or set(report.p_values) != set(report.effect_sizes):
            raise AlarmError(
                "a window report needs p_values and effect_sizes for the same features"
            )
        return report


@dataclass(frozen=True)
class DriftAlarm:
    """One alerting window of one sidecar, with the windows before it.

    Attributes:
        model_name: The served model.
        model_version: The served version (the detector's version).
        replica: Which sidecar (pod name, or host and state directory locally).
        window: The alerting window.
        history: Earlier windows of the same sidecar, oldest first, at most ``n - 1``.
        p_value: The sidecar's family-wise p-value level.
        effect_size_threshold: The sidecar's effect-size threshold.
        archive_uri: Where the sidecar archives labelled feedback rows.
    """

    model_name: str
    model_version: str
    replica: str
    window: WindowReport
    history: tuple[WindowReport, ...]
    p_value: float
    effect_size_threshold: float
    archive_uri: str

    @property
    def id(self) -> str:
        """The CloudEvent id, stable for this window."""
        return alarm_id(self.model_name, self.model_version, self.replica, self.window.sequence)

    @property
    def source(self) -> str:
        """The CloudEvent source."""
        return alarm_source(self.model_name, self.model_version, self.replica)

    def windows(self) -> tuple[WindowReport, ...]:
        """The history followed by the alerting window."""
        return (*self.history, self.window)

    def to_dict(self) -> dict[str, Any]:
        """Return the event data as JSON-compatible data."""
        return {
            "schema_version": ALARM_SCHEMA_VERSION,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "replica": self.replica,
            "p_value": self.p_value,
            "effect_size_threshold": self.effect_size_threshold,
            "archive_uri": self.archive_uri,
            "window": self.window.to_dict(),
            "history": [w.to_dict() for w in self.history],
        }

    @classmethod
    def from_dict(cls, data: Any) -> DriftAlarm:
        """Parse :meth:`to_dict` output.

        Raises:
            AlarmError: If a field is missing or has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise AlarmError(f"drift event data must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version not in _READABLE_SCHEMA_VERSIONS:
            raise AlarmError(
                f"unsupported drift event schema_version {version!r} "
                f"(this trigger reads {list(_READABLE_SCHEMA_VERSIONS)})"
            )
        try:
            return cls(
                model_name=_text(data["model_name"], "model_name"),
                model_version=_text(data["model_version"], "model_version"),
                replica=_text(data["replica"], "replica"),
                window=WindowReport.from_dict(data["window"]),
                history=tuple(WindowReport.from_dict(w) for w in _list(data["history"])),
                p_value=_number(data["p_value"], "p_value"),
                effect_size_threshold=_number(
                    data["effect_size_threshold"], "effect_size_threshold"
                ),
                archive_uri=str(data.get("archive_uri") or ""),
            )
        except KeyError as exc:
            raise AlarmError(f"drift event data lacks the field {exc.args[0]!r}") from exc

    def to_http(self) -> tuple[dict[str, str], bytes]:
        """Return the headers and body of the binary-mode HTTP request."""
        from cloudevents.core.bindings.http import to_binary
        from cloudevents.core.formats.json import JSONFormat
        from cloudevents.core.v1.event import CloudEvent

        event = CloudEvent(
            {
                "type": DRIFT_EVENT_TYPE,
                "source": self.source,
                "id": self.id,
                "subject": self.model_name,
                "time": datetime.fromtimestamp(self.window.closed_at, tz=UTC),
                "datacontenttype": "application/json",
            },
            self.to_dict(),
        )
        message = to_binary(event, JSONFormat())
        return dict(message.headers), message.body

    @classmethod
    def from_http(cls, headers: Mapping[str, str], body: bytes) -> DriftAlarm:
        """Parse a binary-mode drift CloudEvent and check that its id matches its window.

        Raises:
            AlarmError: If the request is not a valid drift CloudEvent.
        """
        from cloudevents.core.bindings.http import HTTPMessage, from_http
        from cloudevents.core.exceptions import BaseCloudEventException
        from cloudevents.core.formats.json import JSONFormat

        lowered = {k.lower(): v for k, v in headers.items()}
        missing = [a for a in REQUIRED_ATTRIBUTES if not lowered.get(f"ce-{a}")]
        if missing:
            raise AlarmError(
                f"not a binary-mode CloudEvent: missing headers {['ce-' + m for m in missing]}"
            )
        try:
            event = from_http(HTTPMessage(lowered, body), JSONFormat())
        except (BaseCloudEventException, ValueError) as exc:
            raise AlarmError(f"invalid CloudEvent: {exc}") from exc
        if event.get_type() != DRIFT_EVENT_TYPE:
            raise AlarmError(
                f"unexpected CloudEvent type {event.get_type()!r}: expected {DRIFT_EVENT_TYPE!r}"
            )
        alarm = cls.from_dict(event.get_data())
        if event.get_id() != alarm.id:
            raise AlarmError(
                f"CloudEvent id {event.get_id()!r} does not match its window "
                f"(expected {alarm.id!r} for sequence {alarm.window.sequence})"
            )
        return alarm


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise AlarmError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AlarmError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise AlarmError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _quality(value: Any) -> QualityResult | None:
    if value is None:
        return None
    try:
        return QualityResult.from_dict(value)
    except QualityError as exc:
        raise AlarmError(f"a window report's quality is malformed: {exc}") from exc


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise AlarmError(f"{name} must be true or false, got {value!r}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise AlarmError(f"expected a JSON list, got {type(value).__name__}")
    return value


def _feature_numbers(value: Any, name: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise AlarmError(f"{name} must map feature names to numbers")
    out: dict[str, float] = {}
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float) or math.isnan(number):
            raise AlarmError(f"{name}[{key!r}] must be a number, got {number!r}")
        out[str(key)] = float(number)
    return out
