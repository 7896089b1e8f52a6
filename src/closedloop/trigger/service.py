"""The retrain trigger: alarms in, at most one retraining run per policy out.

:meth:`RetrainTrigger.handle` decides one alarm:

1. store its first receipt under its id (conditional create). A repeated id that was
   decided is a duplicate, answered without a decision; one still being decided
   elsewhere is waited for briefly, then answered 503 so the sender retries; one whose
   receipt never got decided (the trigger died mid-way) for ``orphan_seconds`` is
   decided now;
2. file it by the time its window closed, pool the windows of the model version from
   its own history and the other replicas' alarms (filed in the last
   :data:`~closedloop.trigger.policy.POOL_LOOKBACK_SECONDS`), re-judge each with the
   trigger's policy and apply :func:`~closedloop.trigger.policy.decide` with the
   model's recent runs;
3. to fire, claim the next run number (conditional create of ``runs/<N>.lock``): if
   another replica claimed it first, the decision becomes ``suppressed`` (``lost_race``);
4. record the decision (``decided/<id>``) and an audit record, fired or suppressed.

Submission is not done in the request: the claimed run is ``pending`` and the
reconciler thread submits it (right away, woken by the claim), retrying with capped
exponential backoff while the backend is down. Each attempt first takes a lease
(``runs/<N>.attempt-<K>``, conditional create), so replicas never submit concurrently,
and first asks the backend for a run of the same deterministic name, so an attempt
whose answer was lost is adopted rather than repeated. The reconciler also follows
submitted runs to the end, which frees the "one run in flight" slot.

Pipeline arguments: the fixed ``--pipeline-arg`` values, plus those of the following
that the pipeline declares: ``model_name``, ``model_version`` (the drifted version),
``registry_uri``, ``archive_uri`` (where the sidecar archives labelled feedback),
``alarm_id``, ``drift_started_at`` (Unix time the first counting window the alarm
carries opened, or the start of an earlier run for the same version whose model the
gate rejected, so a retry trains on more data) and ``reference_uri`` (the drifted version's training data, from its
registry lineage, unless given with ``--pipeline-arg``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar.alarm import DriftAlarm
from closedloop.storage import StorageError
from closedloop.trigger.backends import Backend, RunRequest
from closedloop.trigger.errors import (
    BackendRejectedError,
    BackendUnavailableError,
    DecisionInProgressError,
)
from closedloop.trigger.metrics import TriggerMetrics
from closedloop.trigger.policy import (
    POOL_LOOKBACK_SECONDS,
    Decision,
    RunSummary,
    decide,
    last_windows,
    observe,
)
from closedloop.trigger.state import (
    AuditRecord,
    RunRecord,
    RunStatus,
    TriggerStore,
    check_filable,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TriggerSettings:
    """How the trigger runs.

    Attributes:
        state_uri: Root of the S3 state and audit trail.
        registry_uri: The model registry (offered to the pipeline as ``registry_uri``).
        replica: This trigger's id in records and leases (pod name, or host name); two
            triggers running at once must not share one.
        pipeline_arguments: Fixed pipeline arguments (``--pipeline-arg key=value``).
        reconcile_seconds: How often pending and running runs are looked at.
        retry_initial_seconds: First delay before re-submitting to a backend that is down.
        retry_max_seconds: Largest such delay.
        orphan_seconds: After this long, an alarm received but never decided is decided
            again on its next delivery.
        lease_seconds: After this long, a submission attempt whose holder went silent
            is given up and the next attempt may start.
        in_progress_wait_seconds: How long a repeat of an alarm that another replica is
            deciding waits for that decision before the sender is told to retry.
    """

    state_uri: str
    registry_uri: str
    replica: str
    pipeline_arguments: Mapping[str, str] = field(default_factory=dict)
    reconcile_seconds: float = 2.0
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    orphan_seconds: float = 30.0
    lease_seconds: float = 120.0
    in_progress_wait_seconds: float = 5.0


@dataclass(frozen=True)
class AlarmOutcome:
    """The answer to one alarm.

    Attributes:
        alarm_id: The alarm.
        status: ``decided`` or ``duplicate``.
        decision: ``fired`` or ``suppressed`` (None for a duplicate).
        reason: The policy reason, ``lost_race`` or ``duplicate``.
        detail: One human sentence.
        run: The run started, if fired.
    """

    alarm_id: str
    status: Literal["decided", "duplicate"]
    decision: Literal["fired", "suppressed"] | None
    reason: str
    detail: str
    run: RunRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible data for the HTTP answer."""
        out: dict[str, Any] = {
            "alarm_id": self.alarm_id,
            "status": self.status,
            "decision": self.decision,
            "reason": self.reason,
            "detail": self.detail,
        }
        if self.run is not None:
            out["run"] = {
                "number": self.run.number,
                "name": self.run.run_name,
                "status": self.run.status,
            }
        return out


class RetrainTrigger:
    """Decides alarms against the policy and drives the runs it starts.

    Args:
        settings: How to run.
        policy: The drift policy.
        backend: Where runs execute.
        state: The S3 state.
        metrics: Metrics to update (a fresh set by default).
        clock: Source of the current time.
    """

    def __init__(
        self,
        settings: TriggerSettings,
        policy: DriftPolicy,
        backend: Backend,
        state: TriggerStore,
        metrics: TriggerMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.backend = backend
        self.state = state
        self.metrics = metrics or TriggerMetrics()
        self._clock = clock
        self._declared = backend.declared_inputs()
        self._model_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._models: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reconcile_loop, name="reconciler", daemon=True)

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> None:
        """Load the known models and start the reconciler (pending runs go first)."""
        self._models.update(self.state.models())
        self._thread.start()

    def stop(self) -> None:
        """Stop the reconciler and the backend."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        self.backend.close()

    def healthy(self) -> bool:
        """Whether the reconciler runs."""
        return self._thread.is_alive() and not self._stop.is_set()

    def status(self) -> dict[str, object]:
        """A small summary for ``/healthz``."""
        return {
            "status": "ok" if self.healthy() else "unhealthy",
            "replica": self.settings.replica,
            "backend": self.backend.name,
            "models": sorted(self._models),
        }

    def _lock_for(self, model: str) -> threading.Lock:
        with self._locks_lock:
            return self._model_locks.setdefault(model, threading.Lock())

    # -- alarms -----------------------------------------------------------------------
    def handle(self, alarm: DriftAlarm) -> AlarmOutcome:
        """Decide one alarm (see the module docstring).

        Raises:
            DecisionInProgressError: Another receipt of the same id is being decided
                elsewhere; the sender should retry.
            StorageError: If S3 cannot be reached; nothing was decided, the sender retries.
            UnfilableAlarmError: If the alarm's names or times cannot be filed; nothing
                was stored.
        """
        check_filable(alarm)
        model = alarm.model_name
        in_progress = False
        with self._lock_for(model):
            now = self._clock()
            if model not in self._models:
                self.state.register_model(model)
                self._models.add(model)
            if self.state.record_alarm(alarm, now):
                self.metrics.alarm(model, "accepted")
            elif self.state.is_decided(model, alarm.id):
                return self._duplicate(alarm, "already decided")
            elif now - self.state.alarm_received_at(alarm) < self.settings.orphan_seconds:
                in_progress = True
            else:
                log.warning("alarm %s was received but never decided: deciding it now", alarm.id)
                recorded = self._decide_orphan(alarm, now)
                if recorded is not None:
                    return recorded
            if not in_progress:
                self.state.index_alarm(alarm)
                decision = self._decide(alarm, now)
                run = self._claim(alarm, now) if decision.fire else None
                outcome = self._record(alarm, decision, run, now)
                if run is not None:
                    self._wake.set()
                return outcome
        return self._await_decision(alarm)

    def _await_decision(self, alarm: DriftAlarm) -> AlarmOutcome:
        """Wait (bounded) for another replica's decision on the same alarm id."""
        deadline = time.monotonic() + self.settings.in_progress_wait_seconds
        while time.monotonic() < deadline:
            if self.state.is_decided(alarm.model_name, alarm.id):
                return self._duplicate(alarm, "already decided")
            time.sleep(0.2)
        raise DecisionInProgressError(
            f"alarm {alarm.id} is being decided by another receipt; retry later"
        )

    def _decide_orphan(self, alarm: DriftAlarm, now: float) -> AlarmOutcome | None:
        """Record the decision of an alarm whose receipt claimed a run before dying."""
        runs = self.state.recent_runs(alarm.model_name, 1)
        if not runs or runs[0].alarm_id != alarm.id:
            return None
        decision = Decision(True, "fire", "decided before an interruption", 0, 0, 0)
        return self._record(alarm, decision, runs[0], now)

    def _duplicate(self, alarm: DriftAlarm, why: str) -> AlarmOutcome:
        self.metrics.alarm(alarm.model_name, "duplicate")
        return AlarmOutcome(alarm.id, "duplicate", None, "duplicate", f"alarm {why}")

    def _decide(self, alarm: DriftAlarm, now: float) -> Decision:
        until = alarm.window.closed_at
        stored = self.state.recent_alarms(alarm.model_name, until - POOL_LOOKBACK_SECONDS, until)
        pooled = [obs for a in (*stored, alarm) for obs in observe(a, self.policy)]
        windows = last_windows(pooled, self.policy, alarm.model_version, until)
        runs = self.state.recent_runs(alarm.model_name, max(self.policy.daily_cap, 1))
        summaries = [RunSummary(r.number, r.claimed_at, r.in_flight) for r in runs]
        return decide(self.policy, alarm.window.verdict(self.policy), windows, summaries, now)

    def _claim(self, alarm: DriftAlarm, now: float) -> RunRecord | None:
        numbers = self.state.run_numbers(alarm.model_name)
        number = (numbers[-1] if numbers else 0) + 1
        record = RunRecord(
            model_name=alarm.model_name,
            number=number,
            run_name=f"retrain-{alarm.model_name}-{number:04d}-{alarm.id[:8]}",
            alarm_id=alarm.id,
            model_version=alarm.model_version,
            claimed_at=now,
            claimed_by=self.settings.replica,
            backend=self.backend.name,
            arguments=self._arguments(alarm),
            updated_at=now,
        )
        return record if self.state.claim_run(record) else None

    def _arguments(self, alarm: DriftAlarm) -> dict[str, Any]:
        started = [w.opened_at for w in alarm.windows() if w.verdict(self.policy).counts]
        # A rejected run leaves the same version degraded: the retry reads from where
        # the first run of this version started, so each retry has more data.
        for run in self.state.recent_runs(alarm.model_name, max(self.policy.daily_cap, 1) + 3):
            earlier = run.arguments.get("drift_started_at")
            if run.model_version == alarm.model_version and isinstance(earlier, int | float):
                started.append(float(earlier))
        offered: dict[str, Any] = {
            "model_name": alarm.model_name,
            "model_version": alarm.model_version,
            "registry_uri": self.settings.registry_uri,
            "archive_uri": alarm.archive_uri,
            "alarm_id": alarm.id,
            "drift_started_at": min(started, default=alarm.window.opened_at),
        }
        if (
            "reference_uri" in self._declared
            and "reference_uri" not in self.settings.pipeline_arguments
        ):
            offered["reference_uri"] = self._reference_uri(alarm)
        arguments = {k: v for k, v in offered.items() if k in self._declared and v}
        arguments.update(self.settings.pipeline_arguments)
        return arguments

    def _reference_uri(self, alarm: DriftAlarm) -> str | None:
        """The training data of the drifted version, from its registry lineage."""
        from closedloop.registry import Registry, RegistryError

        try:
            manifest = Registry(self.state.store, self.settings.registry_uri).manifest(
                alarm.model_name, alarm.model_version
            )
        except (RegistryError, StorageError) as exc:
            log.warning(
                "no reference data for %s %s: %s", alarm.model_name, alarm.model_version, exc
            )
            return None
        return manifest.lineage.dataset_uri or None

    def _record(
        self, alarm: DriftAlarm, decision: Decision, run: RunRecord | None, now: float
    ) -> AlarmOutcome:
        fired = run is not None
        reason = decision.reason
        detail = decision.detail
        if decision.fire and run is None:
            reason, detail = "lost_race", "another decision claimed the next run first"
        elif run is not None:
            detail = f"{detail}: run {run.number} ({run.run_name})"
        audit = AuditRecord(
            kind="decision",
            model_name=alarm.model_name,
            at=now,
            by=self.settings.replica,
            outcome="fired" if fired else "suppressed",
            reason=reason,
            detail=detail,
            alarm_id=alarm.id,
            model_version=alarm.model_version,
            run_number=run.number if run else None,
            run_name=run.run_name if run else None,
            windows={
                "considered": decision.windows_considered,
                "drifted": decision.windows_drifted,
                "drifted_rows": decision.drifted_rows,
            },
            policy=self.policy.to_dict(),
        )
        self.state.audit(audit)
        self.state.mark_decided(alarm.model_name, alarm.id, audit)
        self.metrics.decision(alarm.model_name, audit.outcome, reason)
        log.info(
            "alarm %s of %s: %s (%s) %s", alarm.id, alarm.model_name, audit.outcome, reason, detail
        )
        return AlarmOutcome(
            alarm.id, "decided", "fired" if fired else "suppressed", reason, detail, run
        )

    # -- runs -------------------------------------------------------------------------
    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.reconcile()
            except StorageError as exc:
                log.warning("reconciling runs: %s", exc)
            self._wake.wait(self.settings.reconcile_seconds)

    def reconcile(self) -> None:
        """Submit due pending runs and follow submitted ones, for every known model."""
        pending = 0
        for model in sorted(self._models):
            if self._stop.is_set():
                return
            runs = self.state.recent_runs(model, 1)
            last = runs[0] if runs else None
            if last is not None and last.in_flight:
                last = self._advance(last)
            self.metrics.in_flight(model, last is not None and last.in_flight)
            pending += last is not None and last.status == "pending"
        self.metrics.pending.set(pending)

    def _advance(self, record: RunRecord) -> RunRecord:
        now = self._clock()
        if record.status == "pending":
            return self._attempt(record, now) if now >= record.next_attempt_at else record
        if not self.backend.shared and record.submitted_by != self.settings.replica:
            return record  # only the submitting process can see a local run
        assert record.backend_run_id is not None
        try:
            state = self.backend.state(record.backend_run_id)
        except BackendUnavailableError as exc:
            log.warning("run %s: cannot read its state: %s", record.run_name, exc)
            return record
        except BackendRejectedError as exc:
            return self._finish(record, "failed", str(exc), now)
        if state == "succeeded":
            return self._finish(record, "succeeded", None, now)
        if state == "failed":
            return self._finish(record, "failed", "the pipeline run failed", now)
        if state == "unknown":
            return self._finish(
                record, "failed", "the backend does not know the run (the trigger restarted)", now
            )
        if record.status != "running":
            record = record.with_(status="running", updated_at=now)
            self.state.save_run(record)
        return record

    def _attempt(self, record: RunRecord, now: float) -> RunRecord:
        attempt = record.attempts + 1
        if not self.state.claim_attempt(record, attempt, self.settings.replica, now):
            lease = self.state.attempt_lease(record, attempt)
            # Only this thread submits for this replica, so a lease in its own name is
            # left by an earlier incarnation that died mid-attempt: move on at once.
            # Another replica's lease is waited out.
            if lease is not None and (
                lease[0] == self.settings.replica or now - lease[1] > self.settings.lease_seconds
            ):
                log.warning("run %s: attempt %d was abandoned; moving on", record.run_name, attempt)
                record = record.with_(attempts=attempt, updated_at=now)
                self.state.save_run(record)
            return record
        try:
            run_id = self.backend.find(record.run_name)
            adopted = run_id is not None
            if run_id is None:
                run_id = self.backend.submit(RunRequest(record.run_name, record.arguments))
        except BackendUnavailableError as exc:
            delay = min(
                self.settings.retry_initial_seconds * 2 ** (attempt - 1),
                self.settings.retry_max_seconds,
            )
            record = record.with_(
                attempts=attempt, next_attempt_at=now + delay, last_error=str(exc), updated_at=now
            )
            self.state.save_run(record)
            self.metrics.submit_failure(record.model_name, self.backend.name)
            self._audit_run(
                record,
                "retrying",
                "backend_unavailable",
                f"{exc}; next attempt in {delay:.1f} s",
                now,
            )
            return record
        except BackendRejectedError as exc:
            return self._finish(record.with_(attempts=attempt), "rejected", str(exc), now)
        record = record.with_(
            status="submitted",
            backend_run_id=run_id,
            submitted_by=self.settings.replica,
            attempts=attempt,
            last_error=None,
            updated_at=now,
        )
        self.state.save_run(record)
        self.metrics.submitted(record.model_name, self.backend.name)
        how = "adopted the run an earlier attempt created" if adopted else "created"
        self._audit_run(
            record, "submitted", "adopted" if adopted else "created", f"{how}: {run_id}", now
        )
        return record

    def _finish(
        self, record: RunRecord, status: RunStatus, error: str | None, now: float
    ) -> RunRecord:
        record = record.with_(status=status, last_error=error, updated_at=now)
        self.state.save_run(record)
        self.metrics.finished(record.model_name, status)
        self._audit_run(record, status, status, error or "the pipeline run finished", now)
        return record

    def _audit_run(
        self, record: RunRecord, outcome: str, reason: str, detail: str, now: float
    ) -> None:
        log.info("run %s: %s (%s)", record.run_name, outcome, detail)
        self.state.audit(
            AuditRecord(
                kind="run",
                model_name=record.model_name,
                at=now,
                by=self.settings.replica,
                outcome=outcome,
                reason=reason,
                detail=detail,
                alarm_id=record.alarm_id,
                model_version=record.model_version,
                run_number=record.number,
                run_name=record.run_name,
            )
        )
