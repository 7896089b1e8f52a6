"""The sidecar's core, without HTTP: check events, journal them, fill windows, run the detector, alarm.

:meth:`DriftMonitor.submit` takes a batch of events (those that arrived together). It
checks each one completely before taking the lock (:mod:`.intake`: the model server's
own message and row checks; nothing is shared, so a bad event touches no state); under
the lock it dedupes on ``(source, id)``, takes the rows into the window or the feedback
buffer, and appends the event to the journal (:mod:`.journal`) in the same order; then,
outside the lock, one journal sync puts the whole batch on disk (group commit) and only
then does it return: every result it returns is durable. A duplicate is answered only
after that sync too, so it is never acknowledged ahead of the event it repeats.

Besides the callers' threads, :class:`DriftMonitor` owns these:

* the **evaluator** runs the detector on closed windows, in order, once their rows are
  durable, tests the labelled predictions joined to each window against the version's
  quality baseline (:func:`closedloop.quality.assess`), publishes the scores and, for
  an alerting window only (input drift or quality loss), hands a :class:`DriftAlarm` to
  the emitter;
* the **ticker** closes windows by age (journaled, so a replay closes them alike),
  refreshes the gauges and writes a checkpoint every ``checkpoint_interval`` seconds
  when something changed;
* the **archiver** writes feedback batches to S3 when one is due;
* the **emitter** (:class:`~closedloop.drift.sidecar.emitter.AlarmEmitter`) delivers
  drift events to the trigger.

Restart (:meth:`DriftMonitor.open`): the checkpoint, then every journal record after it,
each taken again through the same checks; a checkpoint starts a new journal segment and
removes the ones it covers. An acknowledged event is never lost nor taken twice.

Quality: response events are remembered by puid (:class:`~closedloop.drift.sidecar.join.PredictionLog`);
a feedback event whose ``response.meta.puid`` names a remembered prediction of the served
version joins its labels to that prediction's scores, and the labelled rows go with the
window being filled. Feedback that does not join is archived all the same but counted as
unmatched and kept out of every window. The journal keeps each feedback's join, so a
replay joins it the same way; the prediction log itself is not checkpointed, so
feedback for predictions made before a checkpoint and a restart counts as
``unknown_puid``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar.alarm import DriftAlarm, WindowReport
from closedloop.drift.sidecar.archive import FeedbackArchive, archive_fields
from closedloop.drift.sidecar.emitter import AlarmEmitter
from closedloop.drift.sidecar.errors import (
    CheckpointError,
    EventRefused,
    EventRejected,
    JournalError,
)
from closedloop.drift.sidecar.events import MAX_ROWS_PER_EVENT, SeldonEvent, parse_attributes
from closedloop.drift.sidecar.frames import feature_fields
from closedloop.drift.sidecar.intake import CheckedEvent, check_event
from closedloop.drift.sidecar.join import (
    DEFAULT_CAPACITY,
    LabelledRows,
    LoggedPrediction,
    PredictionLog,
)
from closedloop.drift.sidecar.journal import (
    Journal,
    JournalRecord,
    RecordKind,
    list_segments,
    read_segment,
    segment_path,
)
from closedloop.drift.sidecar.loader import ServedDetector
from closedloop.drift.sidecar.metrics import SidecarMetrics
from closedloop.drift.sidecar.state import Checkpoint, StateDir
from closedloop.drift.sidecar.window import ClosedWindow, Deduper, WindowBuffer, row_count
from closedloop.drift.verdict import clean_scores, drifted_features
from closedloop.ml.rowplan import RowPlan
from closedloop.quality import QualityError, QualityResult, assess
from closedloop.storage import Store

log = logging.getLogger(__name__)

Outcome = Literal[
    "accepted", "duplicate", "ignored", "buffered", "recorded", "skipped", "refused", "rejected"
]
Previous = Literal["none", "clean", "unclean"]
_KINDS: dict[RecordKind, str] = {
    RecordKind.REQUEST: "request",
    RecordKind.RESPONSE: "response",
    RecordKind.FEEDBACK: "feedback",
}


@dataclass(frozen=True)
class MonitorSettings:
    """How one sidecar runs.

    Attributes:
        replica: This sidecar's id in alarm ids and sources (stable across restarts).
        state_dir: Where checkpoints, the journal and the outbox live.
        trigger_url: Where drift CloudEvents go.
        archive_uri: Root of the feedback archive.
        checkpoint_interval: Seconds between periodic checkpoints (bounds the journal
            replayed after a hard kill; nothing acknowledged is lost either way).
        dedupe_capacity: How many ``(source, id)`` keys are remembered.
        archive_batch_rows: Feedback rows per archive batch.
        archive_flush_seconds: Longest a feedback row waits for its batch.
        emit_timeout: Seconds per delivery attempt of a drift event.
        emit_backoff_max: Longest delay between delivery attempts.
        tick_seconds: How often windows are checked for age.
        prediction_capacity: Most predictions remembered while they wait for feedback.
        max_rows: The model server's ``max_rows``: most rows of one message.
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
    max_rows: int = MAX_ROWS_PER_EVENT


@dataclass(frozen=True)
class IngestResult:
    """What happened to one event.

    Attributes:
        kind: ``request``, ``response``, ``feedback`` or ``unknown``.
        outcome: ``accepted`` (rows went into windows), ``buffered`` (feedback rows
            went to the archive buffer), ``recorded`` (a response remembered for the
            join), ``duplicate``, ``refused`` (the model server refuses it: nothing
            taken, its rows counted by reason), ``ignored`` (a response that cannot be
            joined), ``skipped`` (a protobuf body, logged from the gRPC port: not
            monitored) or ``rejected`` (unreadable: a client error).
        rows: Rows taken (for ``refused``: rows refused).
        reason: Why it was refused or rejected.
        error: The refusal's or rejection's message.
    """

    kind: str
    outcome: Outcome
    rows: int = 0
    reason: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class StartReport:
    """How the monitor resumed.

    Attributes:
        previous: ``none`` (fresh state directory), ``clean`` or ``unclean`` (hard kill).
        rows_restored: Window rows taken back from the checkpoint.
        events_replayed: Journal records replayed after the checkpoint.
        rows_replayed: Window rows those records gave back.
        rows_lost: Window rows dropped because they were taken for another version.
        windows_pending: Closed windows to evaluate first.
        next_sequence: Number of the window being filled.
    """

    previous: Previous
    rows_restored: int
    events_replayed: int
    rows_replayed: int
    rows_lost: int
    windows_pending: int
    next_sequence: int


class DriftMonitor:
    """Windows, journal, detector, checkpoints, alarms and the feedback archive of one sidecar.

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
        self.plan = RowPlan(served.schema)
        self.metrics = metrics or SidecarMetrics(served.model_name, served.version)
        self._clock = clock
        self.state = StateDir(
            settings.state_dir, feature_fields(self.schema), archive_fields(self.schema)
        )
        self.journal = Journal(
            self.state.path, served.model_name, served.version, self.metrics.journal_synced
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
        self._dirty = False
        self._opened = False
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
        """Resume: load the checkpoint, replay the journal after it, checkpoint, start the journal.

        Raises:
            CheckpointError: If the state directory or its checkpoint is unusable.
            JournalError: If a journal segment cannot be read.
        """
        checkpoint = self.state.read_checkpoint()
        segments = list_segments(self.state.path)
        unclean = self.state.was_running()
        previous: Previous = (
            "none" if checkpoint is None and not segments else "unclean" if unclean else "clean"
        )
        first = checkpoint.journal_segment if checkpoint is not None else 0
        self._buffer = WindowBuffer(
            self.policy.window_size,
            self.policy.window_max_age_seconds,
            self.policy.min_rows,
            checkpoint.open_window.sequence if checkpoint is not None else 1,
        )
        restored, lost = self._restore(checkpoint) if checkpoint is not None else (0, 0)
        self._rows_accepted = checkpoint.rows_accepted if checkpoint is not None else 0
        before = self._rows_accepted
        replayed = 0
        for number in segments:
            if number < first:
                # Covered by the checkpoint: left behind by a kill after it was published.
                segment_path(self.state.path, number).unlink(missing_ok=True)
                continue
            replayed += self._replay_segment(number)
        rows_replayed = self._rows_accepted - before
        # Labels count as stale only after label_delay_seconds without one from now on.
        self._last_label_at = self._clock()
        self.journal.start(max([first, *(n + 1 for n in segments)]))
        self._opened = True
        self.state.mark_running()
        self.metrics.started(previous)
        self.metrics.events_replayed.inc(replayed)
        if lost:
            self.metrics.rows_lost("version_changed", lost)
        self.checkpoint(force=True)
        report = StartReport(
            previous,
            restored,
            replayed,
            rows_replayed,
            lost,
            len(self._pending),
            self._buffer.sequence,
        )
        log.info(
            "resumed %s %s: previous run %s, %d rows restored from the checkpoint, %d journal "
            "records replayed (%d rows), %d windows pending, filling window %d",
            self.model_name,
            self.model_version,
            previous,
            restored,
            replayed,
            rows_replayed,
            report.windows_pending,
            report.next_sequence,
        )
        return report

    def _restore(self, checkpoint: Checkpoint) -> tuple[int, int]:
        """Take the checkpoint's state back; return (window rows restored, rows dropped)."""
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
            return 0, window_rows
        self._history.extend(checkpoint.history)
        self._pending.extend(checkpoint.pending)
        self._pending.extend(self._buffer.restore(checkpoint.open_window))
        return window_rows, 0

    def _replay_segment(self, number: int) -> int:
        segment = read_segment(self.state.path, number)
        if segment.torn_bytes:
            log.warning(
                "journal segment %d ends with %d bytes of a record cut short (never "
                "acknowledged): ignored",
                number,
                segment.torn_bytes,
            )
        if segment.records and (
            segment.model_name != self.model_name or segment.model_version != self.model_version
        ):
            log.warning(
                "journal segment %d holds %d events for %s %s: not replayed",
                number,
                len(segment.records),
                segment.model_name,
                segment.model_version,
            )
            return 0
        with self._work:
            for record in segment.records:
                self._replay(record)
        return len(segment.records)

    def _replay(self, record: JournalRecord) -> None:
        """Take one journal record again, as it was taken (the caller holds the lock)."""
        if record.kind == RecordKind.CLOSE:
            sequence = int(record.extra_json()["sequence"])
            if self._buffer.sequence == sequence:
                closed = self._buffer.close(record.at, "age")
                if closed is not None:
                    self._pending.append(closed)
            return
        event = SeldonEvent(_KINDS[record.kind], record.id, record.source, record.request_id)
        checked = check_event(event, record.body, self.plan, self.schema, self.settings.max_rows)
        if checked.verdict == "take":
            self._take(checked, record.at, [], record.extra_json())
        else:  # the checks changed since it was taken: cannot happen for one version
            log.error("journal record %s/%s no longer passes its checks", record.source, record.id)

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
        self.journal.close()
        self.emitter.stop()
        self.state.mark_stopped()
        log.info("stopped cleanly; state in %s", self.state.path)

    def healthy(self) -> bool:
        """Whether every worker thread runs and the journal writes."""
        return (
            not self._stopping.is_set()
            and bool(self._threads)
            and all(t.is_alive() for t in self._threads)
            and self.emitter.is_alive()
            and self.journal.failed is None
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
                "feedback_rows_buffered": self.archive.buffered,
                "journal_segment": self.journal.segment,
            }

    # -- events -----------------------------------------------------------------------
    def ingest(self, headers: Mapping[str, str], body: bytes) -> IngestResult:
        """Take one CloudEvent and wait until it is durable (the in-process interface).

        Raises:
            EventRejected: If the event cannot be read; nothing was changed.
            JournalError: If the journal cannot write it.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        result = self.submit([(lowered, body)])[0]
        if result.outcome == "rejected":
            raise EventRejected(result.reason, result.error or "")  # type: ignore[arg-type]
        return result

    def submit(self, events: Sequence[tuple[Mapping[str, str], bytes]]) -> list[IngestResult]:
        """Check and take events that arrived together; return once they are on disk.

        :meth:`take`, then one journal sync for the whole batch (group commit), run in
        the caller's thread.

        Args:
            events: ``(headers, body)`` of each event, header names in lower case.

        Returns:
            One result per event, in order: each is durable when this returns.

        Raises:
            JournalError: If the journal cannot write (nothing may be acknowledged).
        """
        results, ticket = self.take(events)
        self.journal.sync(ticket)
        return results

    def take(
        self, events: Sequence[tuple[Mapping[str, str], bytes]]
    ) -> tuple[list[IngestResult], int]:
        """Check and take events that arrived together, without waiting for the disk.

        Args:
            events: ``(headers, body)`` of each event, header names in lower case.

        Returns:
            One result per event, in order, and the journal ticket to sync
            (:meth:`Journal.sync`) before any of them is answered.

        Raises:
            JournalError: If the journal has failed (nothing was taken).
        """
        if self.journal.failed is not None:
            raise self.journal.failed
        results: list[IngestResult | None] = [None] * len(events)
        checked: list[tuple[int, CheckedEvent]] = []
        for i, (headers, body) in enumerate(events):
            try:
                event = parse_attributes(headers)
            except EventRejected as exc:
                results[i] = IngestResult("unknown", "rejected", reason=exc.reason, error=str(exc))
                continue
            checked.append(
                (i, check_event(event, body, self.plan, self.schema, self.settings.max_rows))
            )
        now = self._clock()
        records: list[bytes] = []
        taken: list[tuple[int, CheckedEvent, Outcome, Any]] = []
        with self._work:
            for i, item in checked:
                if item.verdict == "take":
                    outcome, detail = self._take(item, now, records, None)
                    taken.append((i, item, outcome, detail))
                else:
                    results[i] = self._not_taken(item)
            # A duplicate waits for everything before it: the event it repeats may still
            # be on its way to the disk.
            ticket = self.journal.append(records) if taken else 0
        for i, item, outcome, _ in taken:
            rows = row_count(item.rows) if item.rows is not None else len(item.prediction or ())
            count = 0 if outcome == "duplicate" else rows
            results[i] = IngestResult(item.event.kind, outcome, count)
        done = [r for r in results if r is not None]
        self._count(done, checked, taken)
        return done, ticket

    def _not_taken(self, item: CheckedEvent) -> IngestResult:
        kind = item.event.kind
        if item.verdict == "skipped":
            self._warn_grpc(kind)
            return IngestResult(kind, "skipped")
        error = item.error
        if item.verdict == "ignored":
            if error is not None:
                log.debug("response %s cannot be joined: %s", item.event.request_id, error)
            return IngestResult(kind, "ignored")
        assert error is not None
        if isinstance(error, EventRejected):
            return IngestResult(kind, "rejected", reason=error.reason, error=str(error))
        assert isinstance(error, EventRefused)
        return IngestResult(
            kind, "refused", sum(error.rows.values()), reason=error.reason, error=str(error)
        )

    def _take(
        self, item: CheckedEvent, now: float, records: list[bytes], replayed_join: Any
    ) -> tuple[Outcome, Any]:
        """Take a checked event into the state and journal it (the caller holds the lock).

        Args:
            item: The event.
            now: When it was taken (the time its rows carry).
            records: Where its journal record goes (none on replay).
            replayed_join: On replay, the feedback's join as journaled.

        Returns:
            The outcome, and for a feedback how its join went (None: joined).
        """
        event = item.event
        if event.kind == "response":
            assert item.prediction is not None and event.request_id is not None
            self._predictions.add(
                event.request_id,
                LoggedPrediction(item.prediction.scores, item.prediction.model_version, now),
            )
            records.append(
                JournalRecord(
                    RecordKind.RESPONSE, now, event.source, event.id, event.request_id,
                    body=item.body,
                ).encode()
            )  # fmt: skip
            return "recorded", None
        if event.key in self._dedupe:
            return "duplicate", None
        self._dedupe.add(event.key)
        self._dirty = True
        assert item.rows is not None
        if event.kind == "request":
            closed = self._buffer.add(item.rows, now)
            self._rows_accepted += row_count(item.rows)
            if closed:
                self._pending.extend(closed)
                self._work.notify_all()
            records.append(
                JournalRecord(
                    RecordKind.REQUEST, now, event.source, event.id, event.request_id,
                    body=item.body,
                ).encode()
            )  # fmt: skip
            return "accepted", None
        assert item.labels is not None
        self.archive.add(
            item.rows.frame,
            item.labels,
            event_id=event.id,
            event_source=event.source,
            model_version=self.model_version,
            received_at=now,
        )
        unmatched, dropped, join = self._join(item.puid, item.labels, now, replayed_join)
        records.append(
            JournalRecord(
                RecordKind.FEEDBACK, now, event.source, event.id, event.request_id,
                extra=join, body=item.body,
            ).encode()
        )  # fmt: skip
        return "buffered", (unmatched, dropped)

    def _join(
        self, puid: str | None, labels: list[Any], now: float, replayed: Any
    ) -> tuple[str | None, int, bytes]:
        """Join checked labels to their prediction (the caller holds the lock).

        Args:
            puid: The prediction the feedback names.
            labels: Its checked labels.
            now: When it arrived.
            replayed: On replay, the join as journaled (it decides, not the prediction log).

        Returns:
            Why the feedback did not join (``None`` if it did), how many of its labelled
            rows overflowed the window's cap, and the join to journal.
        """
        found: LoggedPrediction | str
        if replayed is not None:
            if puid is not None:
                self._predictions.take(puid, now)
            if "unmatched" in replayed:
                return str(replayed["unmatched"]), 0, b""
            found = LoggedPrediction(np.asarray(replayed["scores"], dtype=np.float64), None, now)
        elif puid is None:
            return "no_puid", 0, orjson.dumps({"unmatched": "no_puid"})
        else:
            found = self._predictions.take(puid, now)
            if isinstance(found, str):
                return found, 0, orjson.dumps({"unmatched": found})
            if found.model_version is not None and found.model_version != self.model_version:
                return "other_version", 0, orjson.dumps({"unmatched": "other_version"})
            if len(found.scores) != len(labels):
                return "row_mismatch", 0, orjson.dumps({"unmatched": "row_mismatch"})
        dropped = self._buffer.add_labels(LabelledRows.join(labels, found.scores, self.schema))
        self._last_label_at = now
        return (
            None,
            dropped,
            orjson.dumps({"scores": found.scores}, option=orjson.OPT_SERIALIZE_NUMPY),
        )

    def _count(
        self,
        results: list[IngestResult],
        checked: list[tuple[int, CheckedEvent]],
        taken: list[tuple[int, CheckedEvent, Outcome, Any]],
    ) -> None:
        events: Counter[tuple[str, str]] = Counter()
        rejected: Counter[str] = Counter()
        refused: Counter[tuple[str, str]] = Counter()
        rows = 0
        for result in results:
            events[(result.kind, result.outcome)] += 1
            if result.outcome == "rejected":
                rejected[result.reason or "unknown"] += 1
            elif result.outcome == "accepted":
                rows += result.rows
            elif result.outcome == "skipped":
                self.metrics.grpc_event_skipped(result.kind)
        for _, item in checked:
            if item.verdict == "refused" and isinstance(item.error, EventRefused):
                for reason, count in item.error.rows.items():
                    refused[(item.event.kind, reason)] += count
        self.metrics.events(events)
        for reason, count in rejected.items():
            self.metrics.rejected(reason, count)
        if refused:
            self.metrics.refused(refused)
        if rows:
            self.metrics.rows_accepted.inc(rows)
        for _, item, outcome, detail in taken:
            if item.event.kind == "feedback" and outcome == "buffered":
                unmatched, dropped = detail
                if unmatched is None:
                    self.metrics.feedback_joined.inc()
                else:
                    self.metrics.feedback_unmatched(unmatched)
                if dropped:
                    self.metrics.labelled_rows_dropped.inc(dropped)
                self.metrics.feedback_rows_buffered.set(self.archive.buffered)
            elif item.event.kind == "response":
                self.metrics.predictions_logged.set(len(self._predictions))

    def _warn_grpc(self, kind: str) -> None:
        # Drift watches REST traffic only: the executor logs gRPC calls with protobuf
        # bodies. Refusing them (4xx) would only make the executor log an error per call
        # (it never retries), so they are answered 2xx, counted, and touch no state.
        if not self._grpc_warned:
            self._grpc_warned = True
            log.warning(
                "%s events with a protobuf body (gRPC traffic) are not monitored: drift "
                "watches REST (JSON) traffic only; counting them in "
                "closedloop_sidecar_grpc_events_skipped_total",
                kind,
            )

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
                ticket = self.journal.appended
            try:
                # Nothing leaves the process before the rows it was judged on are durable.
                self.journal.sync(ticket)
            except JournalError as exc:
                log.error("window %d is not evaluated: %s", window.sequence, exc)
                return
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
                close = JournalRecord(
                    RecordKind.CLOSE, now, extra=orjson.dumps({"sequence": closed.sequence})
                )
                try:
                    self.journal.append([close.encode()])
                except JournalError as exc:
                    log.error(
                        "the age close of window %d is not journaled: %s", closed.sequence, exc
                    )
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
        if closed is not None:
            with contextlib.suppress(JournalError):  # logged where it failed
                self.journal.sync()
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
                # Later events go to a new segment: the checkpoint covers the older ones.
                segment = self.journal.rotate() if self._opened else self.journal.segment
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
                    journal_segment=segment,
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
            if self._opened:
                self.journal.discard_before(segment)
                with contextlib.suppress(JournalError):  # logged where it failed
                    self.journal.sync()
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
