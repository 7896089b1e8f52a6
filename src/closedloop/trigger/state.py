"""The trigger's state and audit trail on S3: nothing that matters lives only in memory.

Layout below ``--state-uri`` (e.g. ``s3://closedloop/trigger``)::

    index/<model>                                         a model the trigger has seen
    models/<model>/alarms/<id>.json                       first receipt of an alarm id (create:
                                                          a repeat of the id loses = duplicate)
    models/<model>/windows/<YYYY-MM-DD>/<closed_ms>-<id>.json
                                                          the alarm, filed by when its window
                                                          closed (for "k of the last n")
    models/<model>/decided/<id>.json                      the alarm was decided (create)
    models/<model>/runs/<NNNNNN>.lock                     run N claimed (create: exactly one
                                                          decision wins it); body: the run
    models/<model>/runs/<NNNNNN>.json                     run N's latest state (replaced)
    models/<model>/runs/<NNNNNN>.attempt-<K>              lease for submission attempt K
    audit/<model>/<YYYY-MM-DD>/<at_us>-<kind>-<uid>.json  one record per decision or run
                                                          event, never rewritten

Every first-writer-wins step is a conditional create (``IfNoneMatch="*"``), so N trigger
replicas, or one restarted mid-way, agree on which alarm was seen, which decision got
run N, and who submits it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from closedloop.drift.sidecar.alarm import DriftAlarm
from closedloop.storage import AlreadyExistsError, ObjectNotFoundError, Store, join_uri
from closedloop.trigger.errors import UnfilableAlarmError

RunStatus = Literal["pending", "submitted", "running", "succeeded", "failed", "rejected"]
IN_FLIGHT: frozenset[str] = frozenset({"pending", "submitted", "running"})
_RUN_KEY = re.compile(r"/runs/(\d{6})\.(lock|json)$")
_ALARM_CACHE_SIZE = 10_000
_WINDOW_KEY = re.compile(r"/(\d{13})-([0-9a-f-]{36})\.json$")
# A model name or version is one key segment: it must not climb out of its prefix.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
LATEST_FILABLE_TIME = 10**10
"""Windows open and close before this (Unix seconds, in 2286): their keys hold 13-digit ms."""


def check_filable(alarm: DriftAlarm) -> None:
    """Refuse an alarm whose names or times cannot be filed under the state's keys.

    The model name and version become key segments (``models/<model>/…``); every
    window's times become dates and 13-digit millisecond keys.

    Raises:
        UnfilableAlarmError: If a name is not one safe segment or a time is out of range.
    """
    for field_name, value in (
        ("model_name", alarm.model_name),
        ("model_version", alarm.model_version),
    ):
        if not _SEGMENT.fullmatch(value):
            raise UnfilableAlarmError(
                f"{field_name} {value[:80]!r} cannot be filed: use at most 128 letters, "
                "digits, '.', '_' and '-', starting with a letter or digit"
            )
    for window in alarm.windows():
        for field_name, at in (("opened_at", window.opened_at), ("closed_at", window.closed_at)):
            if not 0 <= at < LATEST_FILABLE_TIME:
                raise UnfilableAlarmError(
                    f"window {window.sequence}: {field_name} {at!r} is not a Unix time "
                    f"between 0 and {LATEST_FILABLE_TIME}"
                )


@dataclass(frozen=True)
class RunRecord:
    """A retraining run the trigger claimed, and where it stands.

    Attributes:
        model_name: The model retrained.
        number: Its number for the model (1, 2, …).
        run_name: The deterministic run name given to the backend.
        alarm_id: The alarm whose decision claimed it.
        model_version: The version whose drift started it.
        claimed_at: When the decision claimed it (the cooldown counts from here).
        claimed_by: Which trigger replica claimed it.
        backend: ``kfp`` or ``local``.
        arguments: The pipeline arguments.
        status: ``pending`` (not yet accepted by the backend), ``submitted``,
            ``running``, ``succeeded``, ``failed`` or ``rejected``.
        backend_run_id: The backend's id once submitted.
        submitted_by: Which trigger replica submitted it.
        attempts: Submission attempts so far.
        next_attempt_at: When the next attempt is due (Unix seconds).
        last_error: The last submission or run error.
        updated_at: When this record was written.
    """

    model_name: str
    number: int
    run_name: str
    alarm_id: str
    model_version: str
    claimed_at: float
    claimed_by: str
    backend: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    status: RunStatus = "pending"
    backend_run_id: str | None = None
    submitted_by: str | None = None
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    updated_at: float = 0.0

    @property
    def in_flight(self) -> bool:
        """Whether the run has not finished (pending submission included)."""
        return self.status in IN_FLIGHT

    def with_(self, **changes: Any) -> RunRecord:
        """Return a copy with some fields changed."""
        return replace(self, **changes)

    def to_json(self) -> bytes:
        """Serialize to JSON."""
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunRecord:
        """Parse what :meth:`to_json` wrote."""
        return cls(**json.loads(data))


@dataclass(frozen=True)
class AuditRecord:
    """One decision (fired or suppressed, and why) or one run event.

    Attributes:
        kind: ``decision`` or ``run``.
        model_name: The model.
        at: When (Unix seconds).
        by: Which trigger replica.
        outcome: ``fired``/``suppressed`` for decisions; ``submitted``, ``retrying``,
            ``rejected``, ``succeeded`` or ``failed`` for runs.
        reason: The policy reason (decisions) or the backend's word (runs).
        detail: One human sentence.
        alarm_id: The alarm decided, if any.
        model_version: The version that drifted, if known.
        run_number: The run concerned, if any.
        run_name: Its name, if any.
        windows: Considered/drifted windows and drifted rows (decisions).
        policy: The policy applied (decisions).
    """

    kind: Literal["decision", "run"]
    model_name: str
    at: float
    by: str
    outcome: str
    reason: str
    detail: str
    alarm_id: str | None = None
    model_version: str | None = None
    run_number: int | None = None
    run_name: str | None = None
    windows: Mapping[str, int] | None = None
    policy: Mapping[str, Any] | None = None

    def to_json(self) -> bytes:
        """Serialize to JSON."""
        data = asdict(self)
        data["at_iso"] = datetime.fromtimestamp(self.at, tz=UTC).isoformat()
        return json.dumps(data, sort_keys=True, allow_nan=False).encode()


class TriggerStore:
    """Read and write the trigger's state below one root.

    Args:
        store: The storage layer.
        state_uri: The root, e.g. ``s3://closedloop/trigger``.
    """

    def __init__(self, store: Store, state_uri: str) -> None:
        self.store = store
        self.root = state_uri.rstrip("/")
        # Stored alarms never change: parsed ones are kept to spare S3 reads.
        self._alarm_cache: OrderedDict[str, DriftAlarm] = OrderedDict()

    def _model(self, model: str, *parts: str) -> str:
        return join_uri(self.root, "models", model, *parts)

    # -- models -----------------------------------------------------------------------
    def register_model(self, model: str) -> None:
        """Record that *model* exists (idempotent)."""
        try:
            self.store.create(join_uri(self.root, "index", model), b"")
        except AlreadyExistsError:
            return

    def models(self) -> list[str]:
        """Every model the trigger has seen."""
        prefix = join_uri(self.root, "index") + "/"
        return sorted(uri[len(prefix) :] for uri in self.store.list(prefix))

    # -- alarms -----------------------------------------------------------------------
    def _alarm_uri(self, alarm: DriftAlarm) -> str:
        return self._model(alarm.model_name, "alarms", f"{alarm.id}.json")

    def record_alarm(self, alarm: DriftAlarm, received_at: float) -> bool:
        """Store the first receipt of an alarm id.

        Returns:
            True if this is the first receipt, False if the id was seen before.
        """
        body = json.dumps({"received_at": received_at, "alarm": alarm.to_dict()}).encode()
        try:
            self.store.create(self._alarm_uri(alarm), body)
        except AlreadyExistsError:
            return False
        return True

    def alarm_received_at(self, alarm: DriftAlarm) -> float:
        """When the first receipt of *alarm* was stored."""
        return float(json.loads(self.store.read_bytes(self._alarm_uri(alarm)))["received_at"])

    def index_alarm(self, alarm: DriftAlarm) -> None:
        """File the alarm under the day and time its window closed (idempotent)."""
        closed_ms = round(alarm.window.closed_at * 1000)
        day = datetime.fromtimestamp(alarm.window.closed_at, tz=UTC).strftime("%Y-%m-%d")
        uri = self._model(alarm.model_name, "windows", day, f"{closed_ms:013d}-{alarm.id}.json")
        try:
            self.store.create(uri, json.dumps(alarm.to_dict()).encode())
        except AlreadyExistsError:
            return

    def recent_alarms(self, model: str, since: float, until: float) -> list[DriftAlarm]:
        """Alarms of *model* whose window closed in ``(since, until]``."""
        first = datetime.fromtimestamp(since, tz=UTC).date()
        last = datetime.fromtimestamp(until, tz=UTC).date()
        days = [first + timedelta(days=d) for d in range((last - first).days + 1)]
        found: list[DriftAlarm] = []
        for day in days:
            for uri in self.store.list(self._model(model, "windows", day.isoformat())):
                match = _WINDOW_KEY.search(uri)
                if not match or not since * 1000 < int(match.group(1)) <= until * 1000:
                    continue
                alarm = self._alarm_cache.get(uri)
                if alarm is None:
                    alarm = DriftAlarm.from_dict(json.loads(self.store.read_bytes(uri)))
                    self._alarm_cache[uri] = alarm
                    while len(self._alarm_cache) > _ALARM_CACHE_SIZE:
                        self._alarm_cache.popitem(last=False)
                found.append(alarm)
        return found

    def is_decided(self, model: str, alarm_id: str) -> bool:
        """Whether a decision was recorded for *alarm_id*."""
        return self.store.exists(self._model(model, "decided", f"{alarm_id}.json"))

    def mark_decided(self, model: str, alarm_id: str, audit: AuditRecord) -> None:
        """Record that *alarm_id* was decided (a repeat keeps the first record)."""
        try:
            self.store.create(self._model(model, "decided", f"{alarm_id}.json"), audit.to_json())
        except AlreadyExistsError:
            return

    # -- runs -------------------------------------------------------------------------
    def run_numbers(self, model: str) -> list[int]:
        """Numbers of the model's claimed runs, ascending."""
        numbers = set()
        for uri in self.store.list(self._model(model, "runs")):
            match = _RUN_KEY.search(uri)
            if match:
                numbers.add(int(match.group(1)))
        return sorted(numbers)

    def run(self, model: str, number: int) -> RunRecord:
        """The latest state of run *number* (the claim itself if never updated)."""
        try:
            return RunRecord.from_json(self.store.read_bytes(self._run_uri(model, number, "json")))
        except ObjectNotFoundError:
            return RunRecord.from_json(self.store.read_bytes(self._run_uri(model, number, "lock")))

    def recent_runs(self, model: str, count: int) -> list[RunRecord]:
        """The model's last *count* runs, newest first."""
        numbers = self.run_numbers(model)[-count:] if count > 0 else []
        return [self.run(model, n) for n in reversed(numbers)]

    def claim_run(self, record: RunRecord) -> bool:
        """Claim run ``record.number``; False if another decision claimed it first."""
        try:
            self.store.create(
                self._run_uri(record.model_name, record.number, "lock"), record.to_json()
            )
        except AlreadyExistsError:
            return False
        return True

    def save_run(self, record: RunRecord) -> None:
        """Replace the run's latest state."""
        self.store.publish(
            self._run_uri(record.model_name, record.number, "json"), record.to_json()
        )

    def claim_attempt(self, record: RunRecord, attempt: int, holder: str, now: float) -> bool:
        """Take the lease of submission attempt *attempt*; False if someone holds it."""
        uri = self._model(record.model_name, "runs", f"{record.number:06d}.attempt-{attempt}")
        try:
            self.store.create(uri, json.dumps({"holder": holder, "at": now}).encode())
        except AlreadyExistsError:
            return False
        return True

    def attempt_lease(self, record: RunRecord, attempt: int) -> tuple[str, float] | None:
        """Who took the lease of *attempt* and when, or None if it is free."""
        uri = self._model(record.model_name, "runs", f"{record.number:06d}.attempt-{attempt}")
        try:
            lease = json.loads(self.store.read_bytes(uri))
        except ObjectNotFoundError:
            return None
        return str(lease["holder"]), float(lease["at"])

    def _run_uri(self, model: str, number: int, suffix: str) -> str:
        return self._model(model, "runs", f"{number:06d}.{suffix}")

    # -- audit ------------------------------------------------------------------------
    def audit(self, record: AuditRecord) -> str:
        """Write one audit record under a time-ordered key; return its URI."""
        at = datetime.fromtimestamp(record.at, tz=UTC)
        uri = join_uri(
            self.root,
            "audit",
            record.model_name,
            at.strftime("%Y-%m-%d"),
            f"{round(record.at * 1_000_000):016d}-{record.kind}-{uuid.uuid4().hex[:12]}.json",
        )
        self.store.create(uri, record.to_json())
        return uri

    def audit_records(self, model: str) -> list[dict[str, Any]]:
        """Every audit record of *model*, oldest first."""
        prefix = join_uri(self.root, "audit", model)
        return [json.loads(self.store.read_bytes(uri)) for uri in self.store.list(prefix)]
