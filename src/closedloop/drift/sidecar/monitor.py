"""The sidecar's core, without HTTP: check events, fill windows, run the detector, alarm.

:class:`DriftMonitor` owns four threads besides the caller's:

* the **evaluator** runs the detector on closed windows, in order, tests the labelled
  predictions joined to each window against the version's quality baseline
  (:func:`closedloop.quality.assess`), publishes the scores and, for an alerting window
  only (input drift or quality loss), hands a :class:`DriftAlarm` to the emitter;
* the **ticker** closes windows by age, refreshes the gauges and writes a checkpoint
  every ``checkpoint_interval`` seconds when something changed;
* the **archiver** writes feedback batches to S3 when one is due;
* the **emitter** (:class:`~closedloop.drift.sidecar.emitter.AlarmEmitter`) delivers
  drift events to the trigger.

:meth:`DriftMonitor.ingest` is called for every HTTP request. It checks the event
completely before taking the lock, so a bad event is answered without touching any
state; under the lock it dedupes on ``(source, id)`` and buffers the rows.

Quality: response events are remembered by puid (:class:`~closedloop.drift.sidecar.join.PredictionLog`);
a feedback event whose ``response.meta.puid`` names a remembered prediction of the served
version joins its labels to that prediction's scores, and the labelled rows go with the
window being filled. Feedback that does not join is archived all the same but counted as
unmatched and kept out of every window. The labelled rows of open and pending windows are
checkpointed with them; the prediction log is not, so feedback for predictions made
before a restart counts as ``unknown_puid``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar.alarm import DriftAlarm, WindowReport
from closedloop.drift.sidecar.archive import FeedbackArchive, archive_fields
from closedloop.drift.sidecar.emitter import AlarmEmitter
from closedloop.drift.sidecar.errors import CheckpointError, EventRejected
from closedloop.drift.sidecar.events import (
    SeldonEvent,
    feedback_puid,
    feedback_rows,
    parse_event,
    request_rows,
    response_prediction,
)
from closedloop.drift.sidecar.frames import feature_fields
from closedloop.drift.sidecar.join import (
    DEFAULT_CAPACITY,
    LabelledRows,
    LoggedPrediction,
    PredictionLog,
)
from closedloop.drift.sidecar.loader import ServedDetector
from closedloop.drift.sidecar.metrics import SidecarMetrics
from closedloop.drift.sidecar.state import Checkpoint, Ledger, LedgerValues, StateDir
from closedloop.drift.sidecar.window import ClosedWindow, Deduper, WindowBuffer
from closedloop.drift.verdict import clean_scores, drifted_features
from closedloop.quality import QualityError, QualityResult, assess
from closedloop.storage import Store

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

Outcome = Literal["accepted", "duplicate", "ignored", "buffered", "recorded", "skipped"]
Previous = Literal["none", "clean", "unclean"]


@dataclass(frozen=True)
class MonitorSettings:
    """How one sidecar runs.

    Attributes:
        replica: This sidecar's id in alarm ids and sources (stable across restarts).
        state_dir: Where checkpoints, the ledger and the outbox live.
        trigger_url: Where drift CloudEvents go.
        archive_uri: Root of the feedback archive.
        checkpoint_interval: Seconds between periodic checkpoints (bounds the loss
            after a hard kill).
        dedupe_capacity: How many ``(source, id)`` keys are remembered.
        archive_batch_rows: Feedback rows per archive batch.
        archive_flush_seconds: Longest a feedback row waits for its batch.
        emit_timeout: Seconds per delivery attempt of a drift event.
        emit_backoff_max: Longest delay between delivery attempts.
        tick_seconds: How often windows are checked for age.
        prediction_capacity: Most predictions remembered while they wait for feedback.
    """

    replica: str
    state_dir: Path
    trigger_url: str
    archive_uri: str
    checkpoint_interval: float = 10.0
    dedupe_capacity: int = 20_000
    archive_batch_rows: int = 1000
    archive_flush_seconds: float = 60.0
    emit_timeout: float = 5.0
    emit_backoff_max: float = 30.0
    tick_seconds: float = 0.5
    prediction_capacity: int = DEFAULT_CAPACITY


@dataclass(frozen=True)
class IngestResult:
    """What happened to one accepted request.

    Attributes:
        kind: ``request``, ``response`` or ``feedback``.
        outcome: ``accepted`` (rows went into windows), ``buffered`` (feedback rows
            went to the archive buffer), ``recorded`` (a response remembered for the
            join), ``duplicate``, ``ignored`` (a response that cannot be joined) or
            ``skipped`` (a protobuf body, logged from the gRPC port: not monitored).
        rows: Rows taken.
    """

    kind: str
    outcome: Outcome
    rows: int


@dataclass(frozen=True)
class StartReport:
    """How the monitor resumed.

    Attributes:
        previous: ``none`` (fresh state directory), ``clean`` or ``unclean`` (hard kill).
        rows_restored: Window rows taken back from the checkpoint.
        rows_lost: Rows whose fate is unknown (accepted after the last checkpoint).
        windows_pending: Closed windows to evaluate first.
        next_sequence: Number of the window being filled.
    """

    previous: Previous
    rows_restored: int
    rows_lost: int
    windows_pending: int
    next_sequence: int


class DriftMonitor:
    """Windows, detector, checkpoints, alarms and the feedback archive of one sidecar.

    Args:
        settings: How to run.
        policy: The drift policy.
        served: The served version's detector and schema.
        store: The storage layer (for the feedback archive).
        metrics: Metrics to update (a fresh set by default).
        clock: Source of the current time.
    """

    def __init__(
        self,
        settings: MonitorSettings,
        policy: DriftPolicy,
        served: ServedDetector,
        store: Store,
        metrics: SidecarMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.served = served
        self.schema = served.schema
        self.metrics = metrics or SidecarMetrics(served.model_name, served.version)
        self._clock = clock
        self.state = StateDir(
            settings.state_dir, feature_fields(self.schema), archive_fields(self.schema)
        )
        self.archive = FeedbackArchive(
            store,
            settings.archive_uri,
            served.model_name,
            self.schema,
            batch_rows=settings.archive_batch_rows,
            flush_seconds=settings.archive_flush_seconds,
            clock=clock,
        )
        self.emitter = AlarmEmitter(
            self.state,
            settings.trigger_url,
            self.metrics,
            timeout=settings.emit_timeout,
            backoff_max=settings.emit_backoff_max,
        )
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._checkpoint_lock = threading.Lock()
        self._stopping = threading.Event()
        self._buffer = WindowBuffer(
            policy.window_size, policy.window_max_age_seconds, policy.min_rows
        )
        self._dedupe = Deduper(settings.dedupe_capacity)
        self._predictions = PredictionLog(policy.label_delay_seconds, settings.prediction_capacity)
        self._last_label_at = clock()
        self._quality_metric = self._resolve_quality_metric()
        self._pending: deque[ClosedWindow] = deque()
        self._history: deque[WindowReport] = deque(maxlen=policy.n - 1)
        self._rows_accepted = 0
        self._ledger: Ledger | None = None
        self._dirty = False
        self._last_checkpoint = 0.0
        self._threads: list[threading.Thread] = []
        self._grpc_warned = False

    def _resolve_quality_metric(self) -> str | None:
        baseline = self.served.quality_baseline
        if baseline is None:
            return None
        try:
            metric = baseline.metric_name(self.policy.quality_metric)
        except QualityError as exc:
            log.error("quality is not measured: %s", exc)
            return None
        self.metrics.quality_baseline(metric, float(baseline.metrics.get(metric, float("nan"))))
        return metric

    @property
    def model_name(self) -> str:
        """The served model."""
        return self.served.model_name

    @property
    def model_version(self) -> str:
        """The served version."""
        return self.served.version

    # -- life cycle -------------------------------------------------------------------
    def open(self) -> StartReport:
        """Resume from the state directory, count what a hard kill lost, and checkpoint.

        Raises:
            CheckpointError: If the state directory is unusable.
        """
        checkpoint = self.state.read_checkpoint()
        self._ledger = self.state.ledger()
        before = self._ledger.read()
        unclean = self.state.was_running()
        previous: Previous = (
            "none" if checkpoint is None and before is None else "unclean" if unclean else "clean"
        )
        lost = 0
        if unclean and before is not None:
            lost = max(0, before.rows_accepted - (checkpoint.rows_accepted if checkpoint else 0))
        elif unclean:
            log.warning("the previous run stopped uncleanly and its ledger is unreadable")
        next_sequence = 1
        if checkpoint is not None:
            next_sequence = checkpoint.open_window.sequence
        if unclean and before is not None:
            # Windows up to the ledger's number may have closed and alarmed after the
            # checkpoint: never give their numbers (hence alarm ids) to other rows.
            next_sequence = max(next_sequence, before.max_sequence + 1)
        self._buffer = WindowBuffer(
            self.policy.window_size,
            self.policy.window_max_age_seconds,
            self.policy.min_rows,
            next_sequence,
        )
        restored = self._restore(checkpoint) if checkpoint is not None else 0
        self._rows_accepted = checkpoint.rows_accepted if checkpoint is not None else 0
        # Labels count as stale only after label_delay_seconds without one from now on.
        self._last_label_at = self._clock()
        self._ledger.write(LedgerValues(self._rows_accepted, self._buffer.sequence))
        self.state.mark_running()
        self.metrics.started(previous)
        if lost:
            log.warning("%d rows accepted after the last checkpoint were lost by a hard kill", lost)
            self.metrics.rows_lost("unclean_stop", lost)
        self.checkpoint(force=True)
        report = StartReport(previous, restored, lost, len(self._pending), self._buffer.sequence)
        log.info(
            "resumed %s %s: previous run %s, %d rows restored, %d lost, %d windows pending, "
            "filling window %d",
            self.model_name,
            self.model_version,
            previous,
            restored,
            lost,
            report.windows_pending,
            report.next_sequence,
        )
        return report

    def _restore(self, checkpoint: Checkpoint) -> int:
        self._dedupe.extend(checkpoint.dedupe_keys)
        feedback = checkpoint.feedback
        if len(feedback):
            expected = [f.name for f in self.archive.fields]
            if list(feedback.columns) == expected:
                self.archive.restore(feedback)
            else:
                log.warning("dropping %d feedback rows of another schema", len(feedback))
                self.metrics.feedback_rows_dropped.inc(len(feedback))
        window_rows = len(checkpoint.open_window.frame) + sum(
            len(w.frame) for w in checkpoint.pending
        )
        if (
            checkpoint.model_version != self.model_version
            or checkpoint.model_name != self.model_name
        ):
            log.warning(
                "the checkpoint was for %s %s; dropping its %d window rows",
                checkpoint.model_name,
                checkpoint.model_version,
                window_rows,
            )
            self.metrics.rows_lost("version_changed", window_rows)
            return 0
        self._history.extend(checkpoint.history)
        self._pending.extend(checkpoint.pending)
        self._pending.extend(self._buffer.restore(checkpoint.open_window))
        return window_rows

    def start(self) -> None:
        """Start the evaluator, ticker, archiver and emitter threads."""
        self._stopping.clear()
        for name, target in (
            ("drift-evaluator", self._evaluate_loop),
            ("drift-ticker", self._tick_loop),
            ("feedback-archiver", self._archive_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.emitter.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Evaluate closed windows, flush feedback, write the final checkpoint, stop."""
        with self._work:
            self._stopping.set()
            self._work.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        self._threads = []
        self._flush_archive()
        self.checkpoint(force=True)
        self.emitter.stop()
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        self.state.mark_stopped()
        log.info("stopped cleanly; state in %s", self.state.path)

    def healthy(self) -> bool:
        """Whether every worker thread runs."""
        return (
            not self._stopping.is_set()
            and bool(self._threads)
            and all(t.is_alive() for t in self._threads)
            and self.emitter.is_alive()
        )

    def status(self) -> dict[str, object]:
        """A small JSON-compatible summary for ``/healthz``."""
        with self._lock:
            return {
                "status": "ok" if self.healthy() else "unhealthy",
                "model": self.model_name,
                "version": self.model_version,
                "replica": self.settings.replica,
                "window_sequence": self._buffer.sequence,
                "window_rows": self._buffer.rows,
                "window_labelled_rows": self._buffer.labelled_rows,
                "windows_pending": len(self._pending),
                "rows_accepted": self._rows_accepted,
            }

    # -- events -----------------------------------------------------------------------
    def ingest(self, headers: Mapping[str, str], body: bytes) -> IngestResult:
        """Check one CloudEvent and take it into windows or the archive buffer.

        Raises:
            EventRejected: If the event is invalid; nothing was changed.
        """
        kind = "unknown"
        try:
            event = parse_event(headers, body)
            kind = event.kind
            if event.encoding == "protobuf":
                return self._skip_protobuf(event)
            if event.kind == "response":
                return self._ingest_response(event)
            if event.kind == "request":
                frame = request_rows(event.data, self.schema)
            else:
                frame, labels = feedback_rows(event.data, self.schema)
        except EventRejected as exc:
            self.metrics.rejected(exc.reason)
            self.metrics.event(kind, "rejected")
            raise
        now = self._clock()
        with self._work:
            if event.key in self._dedupe:
                self.metrics.event(kind, "duplicate")
                return IngestResult(kind, "duplicate", 0)
            self._dedupe.add(event.key)
            self._dirty = True
            if event.kind == "request":
                closed = self._buffer.add(frame, now)
                self._rows_accepted += len(frame)
                assert self._ledger is not None
                self._ledger.write(LedgerValues(self._rows_accepted, self._buffer.sequence))
                if closed:
                    self._pending.extend(closed)
                    self._work.notify_all()
            else:
                self.archive.add(
                    frame,
                    labels,
                    event_id=event.id,
                    event_source=event.source,
                    model_version=self.model_version,
                    received_at=now,
                )
                unmatched, dropped = self._join(feedback_puid(event.data), labels, now)
        if event.kind == "request":
            self.metrics.rows_accepted.inc(len(frame))
            self.metrics.event(kind, "accepted")
            return IngestResult(kind, "accepted", len(frame))
        if unmatched is None:
            self.metrics.feedback_joined.inc()
        else:
            self.metrics.feedback_unmatched(unmatched)
        if dropped:
            self.metrics.labelled_rows_dropped.inc(dropped)
        self.metrics.event(kind, "buffered")
        self.metrics.feedback_rows_buffered.set(self.archive.buffered)
        return IngestResult(kind, "buffered", len(frame))

    def _skip_protobuf(self, event: SeldonEvent) -> IngestResult:
        # Drift watches REST traffic only: the executor logs gRPC calls with protobuf
        # bodies. Refusing them (4xx) would only make the executor log an error per call
        # (it never retries), so they are answered 2xx, counted, and touch no state.
        if not self._grpc_warned:
            self._grpc_warned = True
            log.warning(
                "%s events with a protobuf body (gRPC traffic) are not monitored: drift "
                "watches REST (JSON) traffic only; counting them in "
                "closedloop_sidecar_grpc_events_skipped_total",
                event.kind,
            )
        self.metrics.grpc_event_skipped(event.kind)
        self.metrics.event(event.kind, "skipped")
        return IngestResult(event.kind, "skipped", 0)

    def _ingest_response(self, event: SeldonEvent) -> IngestResult:
        # As the executor's logging, best effort: a response that cannot be joined (no
        # puid, no scores of the model's shape) is counted, not refused.
        # A repeated response replaces the same entry, so it needs no dedupe.
        if event.request_id is None:
            self.metrics.event("response", "ignored")
            return IngestResult("response", "ignored", 0)
        try:
            prediction = response_prediction(event.data, self.schema)
        except EventRejected as exc:
            log.debug("response %s cannot be joined: %s", event.request_id, exc)
            self.metrics.event("response", "ignored")
            return IngestResult("response", "ignored", 0)
        logged = LoggedPrediction(prediction.scores, prediction.model_version, self._clock())
        with self._lock:
            self._predictions.add(event.request_id, logged)
            size = len(self._predictions)
        self.metrics.predictions_logged.set(size)
        self.metrics.event("response", "recorded")
        return IngestResult("response", "recorded", len(prediction))

    def _join(self, puid: str | None, labels: pd.Series, now: float) -> tuple[str | None, int]:
        """Join checked labels to their prediction (the caller holds the lock).

        Returns:
            Why the feedback did not join (``None`` if it did), and how many of its
            labelled rows overflowed the window's cap.
        """
        if puid is None:
            return "no_puid", 0
        found = self._predictions.take(puid, now)
        if isinstance(found, str):
            return found, 0
        if found.model_version is not None and found.model_version != self.model_version:
            return "other_version", 0
        values = labels.tolist()
        if len(found.scores) != len(values):
            return "row_mismatch", 0
        dropped = self._buffer.add_labels(LabelledRows.join(values, found.scores, self.schema))
        self._last_label_at = now
        return None, dropped

    # -- evaluation -------------------------------------------------------------------
    def _evaluate_loop(self) -> None:
        while True:
            with self._work:
                while not self._pending and not self._stopping.is_set():
                    self._work.wait(1.0)
                if not self._pending:
                    return
                window = self._pending[0]
                history = tuple(self._history)
            report = self._evaluate(window)
            if report is not None and report.verdict(self.policy).alert:
                # Into the outbox before the window leaves the pending queue: a kill in
                # between re-evaluates the window and re-sends the same alarm id.
                self.emitter.submit(
                    DriftAlarm(
                        model_name=self.model_name,
                        model_version=self.model_version,
                        replica=self.settings.replica,
                        window=report,
                        history=history,
                        p_value=self.policy.p_value,
                        effect_size_threshold=self.policy.effect_size_threshold,
                        archive_uri=self.settings.archive_uri,
                    )
                )
            with self._work:
                self._pending.popleft()
                if report is not None:
                    self._history.append(report)
                self._dirty = True

    def _evaluate(self, window: ClosedWindow) -> WindowReport | None:
        started = time.perf_counter()
        try:
            result = self.served.detector.score(window.frame)
        except (ValueError, TypeError) as exc:
            log.exception("window %d could not be evaluated: %s", window.sequence, exc)
            self.metrics.window_evaluation_failed()
            return None
        self.metrics.detector_seconds.observe(time.perf_counter() - started)
        p_values = clean_scores(result.p_values, 1.0)
        effects = clean_scores(result.effect_sizes, 0.0)
        distances = clean_scores(result.distances, 0.0)
        drifted = drifted_features(self.policy, p_values, effects)
        quality = self._assess(window)
        report = WindowReport(
            sequence=window.sequence,
            opened_at=window.opened_at,
            closed_at=window.closed_at,
            n_rows=len(window.frame),
            close_reason=window.reason,
            p_values=p_values,
            distances=distances,
            effect_sizes=effects,
            drifted_features=drifted,
            quality=quality,
            labels_stale=window.closed_at - self._last_label_at > self.policy.label_delay_seconds,
        )
        verdict = report.verdict(self.policy)
        self.metrics.feature_scores(p_values, distances, effects)
        self.metrics.window_judged(verdict, quality, len(window.labels), self._quality_metric)
        self.metrics.window_sequence.set(window.sequence)
        self.metrics.window_n_rows.set(report.n_rows)
        self.metrics.window_evaluated(report.drifted)
        log.info(
            "window %d (%d rows, %d labelled, closed by %s): %s; min p %.3g, max effect %.3f",
            window.sequence,
            report.n_rows,
            len(window.labels),
            window.reason,
            verdict.summary(),
            min(p_values.values()),
            max(effects.values()),
        )
        return report

    def _assess(self, window: ClosedWindow) -> QualityResult | None:
        baseline = self.served.quality_baseline
        labels = window.labels
        if baseline is None or self._quality_metric is None or len(labels) < 2:
            return None
        try:
            return assess(baseline, labels.y, labels.scores, self._quality_metric)
        except QualityError as exc:
            log.warning("window %d: quality not measured: %s", window.sequence, exc)
            return None

    # -- periodic work ----------------------------------------------------------------
    def _tick_loop(self) -> None:
        while not self._stopping.wait(self.settings.tick_seconds):
            self.tick()

    def tick(self) -> None:
        """Close an old window, refresh the gauges, checkpoint when due."""
        now = self._clock()
        with self._work:
            closed = self._buffer.close_if_old(now)
            if closed is not None:
                self._pending.append(closed)
                self._dirty = True
                self._work.notify_all()
            rows, opened = self._buffer.rows, self._buffer.opened_at
            pending = len(self._pending)
            self._predictions.expire(now)
            logged = len(self._predictions)
            stale = now - self._last_label_at > self.policy.label_delay_seconds
        self.metrics.predictions_logged.set(logged)
        self.metrics.labels_stale.set(1 if stale else 0)
        self.metrics.window_rows.set(rows)
        self.metrics.window_fill.set(rows / self.policy.window_size)
        self.metrics.window_age.set(0.0 if opened is None else max(0.0, now - opened))
        self.metrics.windows_pending.set(pending)
        if now - self._last_checkpoint >= self.settings.checkpoint_interval:
            self.checkpoint()

    def checkpoint(self, force: bool = False) -> bool:
        """Write a checkpoint if anything changed since the last one (or if *force*).

        Returns:
            Whether a checkpoint was written.
        """
        with self._checkpoint_lock:
            with self._lock:
                if not (self._dirty or force):
                    return False
                snapshot = Checkpoint(
                    model_name=self.model_name,
                    model_version=self.model_version,
                    written_at=self._clock(),
                    rows_accepted=self._rows_accepted,
                    open_window=self._buffer.snapshot(),
                    pending=tuple(self._pending),
                    history=tuple(self._history),
                    dedupe_keys=tuple(self._dedupe.keys()),
                    feedback=self.archive.snapshot(),
                )
                self._dirty = False
            try:
                self.state.write_checkpoint(snapshot)
            except CheckpointError as exc:
                log.error("%s", exc)
                self.metrics.checkpoint_failures.inc()
                with self._lock:
                    self._dirty = True
                return False
            self._last_checkpoint = snapshot.written_at
            self.metrics.checkpoints.inc()
            self.metrics.last_checkpoint.set(snapshot.written_at)
            return True

    def _archive_loop(self) -> None:
        while not self._stopping.wait(1.0):
            if self.archive.due():
                self._flush_archive()

    def _flush_archive(self) -> None:
        result = self.archive.flush()
        if result.rows_written:
            self.metrics.feedback_rows_archived.inc(result.rows_written)
            with self._lock:
                self._dirty = True
        if result.error:
            log.warning("feedback archive write failed (rows kept): %s", result.error)
            self.metrics.feedback_archive_failures.inc()
        self.metrics.feedback_rows_buffered.set(self.archive.buffered)
        dropped = self.archive.take_dropped()
        if dropped:
            log.warning("the feedback buffer overflowed: %d rows dropped", dropped)
            self.metrics.feedback_rows_dropped.inc(dropped)
