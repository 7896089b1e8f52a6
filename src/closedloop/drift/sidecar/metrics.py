"""The sidecar's Prometheus metrics, in a registry of their own, served at ``/metrics``.

Every series carries ``model`` and ``version`` labels. Per-window values (p-values,
distances, effect sizes, the drift flag, the quality gauges) describe the last
evaluated window; a quality gauge is NaN when that window's quality was unknown.

Events are counted once per batch of events taken together (:meth:`SidecarMetrics.events`,
:meth:`SidecarMetrics.refused`), with the labelled children cached: the event path
pays a few dictionary updates per event, not a Prometheus lock.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from closedloop.drift.verdict import WindowVerdict
    from closedloop.quality import QualityResult

PREFIX = "closedloop_sidecar"


class SidecarMetrics:
    """Metric objects bound to one model version.

    Args:
        model_name: The served model.
        model_version: The served version.
        registry: Where to register (a fresh one by default).
    """

    def __init__(
        self, model_name: str, model_version: str, registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.model_name = model_name
        self.model_version = model_version
        base = ("model", "version")
        r = self.registry

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, [*base, *labels], registry=r)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, [*base, *labels], registry=r)

        self._events = counter(
            "events", "CloudEvents received, by type and outcome.", "type", "outcome"
        )
        self._rejected = counter(
            "events_rejected",
            "CloudEvents that could not be read, answered 4xx, by reason: attributes, "
            "type, not_json, too_deep, too_large.",
            "reason",
        )
        self._rows_refused = counter(
            "rows_refused",
            "Rows the model server refuses, kept out of every window (the event is "
            "acknowledged), by event type and reason: the row check's reasons (missing, "
            "not_a_number, not_a_boolean, not_a_date, infinite), request_refused (a good "
            "row of a request refused whole), or message, too_many_rows, columns, label "
            "(a message refused before its rows are read counts as one row).",
            "type",
            "reason",
        )
        self.events_replayed = counter(
            "events_replayed", "Journal records replayed at start-up."
        ).labels(model_name, model_version)
        self.journal_sync_seconds = Histogram(
            f"{PREFIX}_journal_sync_seconds",
            "Time to write and fdatasync one group of journal records.",
            base,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1),
            registry=r,
        ).labels(model_name, model_version)
        self.journal_records_synced = counter(
            "journal_records_synced", "Journal records written and fsync'd."
        ).labels(model_name, model_version)
        self.journal_syncs = counter("journal_syncs", "Group commits (one fdatasync each).").labels(
            model_name, model_version
        )
        self.journal_failures = counter(
            "journal_failures",
            "Journal write or sync failures (the sidecar answers 503 until restarted).",
        ).labels(model_name, model_version)
        self._children: dict[tuple[object, ...], Counter] = {}
        self._grpc_skipped = counter(
            "grpc_events_skipped",
            "CloudEvents with a protobuf body (traffic on the executor's gRPC port), by "
            "type: answered 202 and kept out of every window (drift watches REST only).",
            "type",
        )
        self.rows_accepted = counter("rows_accepted", "Request rows accepted into windows.").labels(
            model_name, model_version
        )
        self.window_rows = gauge("window_rows", "Rows in the window being filled.").labels(
            model_name, model_version
        )
        self.window_fill = gauge(
            "window_fill_ratio", "Fill of the window being filled (rows / window_size)."
        ).labels(model_name, model_version)
        self.window_age = gauge(
            "window_age_seconds", "Age of the window being filled (0 while empty)."
        ).labels(model_name, model_version)
        self.windows_pending = gauge(
            "windows_pending", "Closed windows waiting for the detector."
        ).labels(model_name, model_version)
        self._windows = counter(
            "windows_evaluated",
            "Windows run through the detector, by outcome (true/false/error).",
            "drifted",
        )
        self.window_drift = gauge(
            "window_drift", "1 if the last evaluated window drifted, else 0."
        ).labels(model_name, model_version)
        self.window_sequence = gauge(
            "window_sequence", "Number of the last evaluated window."
        ).labels(model_name, model_version)
        self.window_n_rows = gauge("window_last_rows", "Rows of the last evaluated window.").labels(
            model_name, model_version
        )
        self._p_value = gauge("feature_p_value", "p-value per feature, last window.", "feature")
        self._distance = gauge(
            "feature_distance", "Test statistic per feature, last window.", "feature"
        )
        self._effect = gauge(
            "feature_effect_size", "Effect size (0-1) per feature, last window.", "feature"
        )
        self.detector_seconds = Histogram(
            f"{PREFIX}_detector_seconds",
            "Time to run the detector on one window.",
            base,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        ).labels(model_name, model_version)
        self.drift_events_emitted = counter(
            "drift_events_emitted", "Drift CloudEvents delivered to the trigger."
        ).labels(model_name, model_version)
        self.drift_events_failed = counter(
            "drift_events_failed", "Failed deliveries of drift CloudEvents (each retried)."
        ).labels(model_name, model_version)
        self.drift_events_dropped = counter(
            "drift_events_dropped",
            "Drift CloudEvents given up (rejected by the trigger, or outbox overflow).",
        ).labels(model_name, model_version)
        self.drift_events_pending = gauge(
            "drift_events_pending", "Drift CloudEvents waiting for delivery."
        ).labels(model_name, model_version)
        self.feedback_rows_archived = counter(
            "feedback_rows_archived", "Labelled rows written to the archive."
        ).labels(model_name, model_version)
        self.feedback_rows_buffered = gauge(
            "feedback_rows_buffered", "Labelled rows waiting for the archive."
        ).labels(model_name, model_version)
        self.feedback_archive_failures = counter(
            "feedback_archive_failures", "Failed archive writes (rows kept and retried)."
        ).labels(model_name, model_version)
        self.feedback_rows_dropped = counter(
            "feedback_rows_dropped", "Labelled rows dropped because the buffer overflowed."
        ).labels(model_name, model_version)
        self.feedback_joined = counter(
            "feedback_joined", "Feedback events joined to their logged prediction."
        ).labels(model_name, model_version)
        self._feedback_unmatched = counter(
            "feedback_unmatched",
            "Feedback events not joined to a prediction (kept out of quality windows), "
            "by reason: no_puid, unknown_puid, expired, other_version, row_mismatch.",
            "reason",
        )
        self.labelled_rows_dropped = counter(
            "labelled_rows_dropped", "Joined labelled rows over a window's cap, dropped."
        ).labels(model_name, model_version)
        self.predictions_logged = gauge(
            "predictions_logged", "Predictions waiting for their label (the join map)."
        ).labels(model_name, model_version)
        self._quality_value = gauge(
            "quality_value", "The quality metric on the last window's labelled rows.", "metric"
        )
        self._quality_baseline = gauge(
            "quality_baseline", "The quality metric on the served version's holdout.", "metric"
        )
        self.quality_drop = gauge(
            "quality_drop", "Baseline minus window quality, last window (positive = worse)."
        ).labels(model_name, model_version)
        self.quality_p_value = gauge(
            "quality_p_value", "p-value of the last window's loss increase."
        ).labels(model_name, model_version)
        self.labelled_rows = gauge(
            "labelled_rows", "Labelled rows joined to the last evaluated window."
        ).labels(model_name, model_version)
        self._verdicts = counter(
            "window_verdict",
            "Evaluated windows by verdict: degraded, input_drift, quiet, quality_unknown.",
            "verdict",
        )
        self.labels_stale = gauge(
            "labels_stale", "1 if no label was joined for label_delay_seconds, else 0."
        ).labels(model_name, model_version)
        self._rows_lost = counter(
            "rows_lost",
            "Window rows of a checkpoint or journal of another served version, dropped "
            "at start-up (reason version_changed).",
            "reason",
        )
        self._starts = counter("starts", "Starts, by how the previous run ended.", "previous")
        self.checkpoints = counter("checkpoints", "Checkpoints written.").labels(
            model_name, model_version
        )
        self.checkpoint_failures = counter(
            "checkpoint_failures", "Checkpoints that could not be written."
        ).labels(model_name, model_version)
        self.last_checkpoint = gauge(
            "last_checkpoint_timestamp_seconds", "When the last checkpoint was written."
        ).labels(model_name, model_version)

    def _child(self, metric: Counter, *labels: str) -> Counter:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(
                self.model_name, self.model_version, *labels
            )
        return child

    def event(self, kind: str, outcome: str, count: int = 1) -> None:
        """Count *count* events of *kind* (request/response/feedback/unknown) by *outcome*."""
        self._child(self._events, kind, outcome).inc(count)

    def events(self, counts: dict[tuple[str, str], int]) -> None:
        """Count events by ``(kind, outcome)``."""
        for (kind, outcome), count in counts.items():
            self._child(self._events, kind, outcome).inc(count)

    def rejected(self, reason: str, count: int = 1) -> None:
        """Count events that could not be read (answered 4xx)."""
        self._child(self._rejected, reason).inc(count)

    def refused(self, counts: dict[tuple[str, str], int]) -> None:
        """Count refused rows by ``(event kind, reason)``."""
        for (kind, reason), count in counts.items():
            self._child(self._rows_refused, kind, reason).inc(count)

    def journal_synced(self, seconds: float, records: int) -> None:
        """Record one group commit."""
        self.journal_sync_seconds.observe(seconds)
        self.journal_syncs.inc()
        self.journal_records_synced.inc(records)

    def grpc_event_skipped(self, kind: str) -> None:
        """Count one protobuf (gRPC) event of *kind* (request/response/feedback), skipped."""
        self._child(self._grpc_skipped, kind).inc()

    def window_evaluated(self, drifted: bool) -> None:
        """Count one evaluated window."""
        self._windows.labels(self.model_name, self.model_version, str(drifted).lower()).inc()
        self.window_drift.set(1 if drifted else 0)

    def window_evaluation_failed(self) -> None:
        """Count one window the detector could not evaluate."""
        self._windows.labels(self.model_name, self.model_version, "error").inc()

    def feature_scores(
        self, p_values: dict[str, float], distances: dict[str, float], effects: dict[str, float]
    ) -> None:
        """Publish the last window's per-feature scores."""
        for name, value in p_values.items():
            self._p_value.labels(self.model_name, self.model_version, name).set(value)
            self._distance.labels(self.model_name, self.model_version, name).set(distances[name])
            self._effect.labels(self.model_name, self.model_version, name).set(effects[name])

    def rows_lost(self, reason: str, rows: int) -> None:
        """Count rows dropped for *reason* (``version_changed``)."""
        self._rows_lost.labels(self.model_name, self.model_version, reason).inc(rows)

    def started(self, previous: str) -> None:
        """Count a start after a ``clean``, ``unclean`` or ``none`` (fresh) previous run."""
        self._starts.labels(self.model_name, self.model_version, previous).inc()

    def feedback_unmatched(self, reason: str) -> None:
        """Count one feedback event kept out of the quality windows."""
        self._child(self._feedback_unmatched, reason).inc()

    def window_judged(
        self,
        verdict: WindowVerdict,
        quality: QualityResult | None,
        labelled_rows: int,
        metric: str | None,
    ) -> None:
        """Publish the last window's quality and count its verdict.

        Args:
            verdict: The policy's verdict on the window.
            quality: Its quality result, if it was measured.
            labelled_rows: Labelled rows joined to it.
            metric: The compared metric (resolved), if the version has a baseline.
        """
        if verdict.quality_degraded:
            name = "degraded"
        elif verdict.input_drift:
            name = "input_drift"
        elif verdict.quality_degraded is None:
            name = "quality_unknown"
        else:
            name = "quiet"
        self._verdicts.labels(self.model_name, self.model_version, name).inc()
        self.labelled_rows.set(labelled_rows)
        if quality is not None:
            metric = quality.metric
        if metric is not None:
            self._quality_value.labels(self.model_name, self.model_version, metric).set(
                math.nan if quality is None else quality.value
            )
        self.quality_drop.set(math.nan if quality is None else quality.drop)
        self.quality_p_value.set(math.nan if quality is None else quality.p_value)

    def quality_baseline(self, metric: str, value: float) -> None:
        """Publish the served version's holdout value of the compared metric."""
        self._quality_baseline.labels(self.model_name, self.model_version, metric).set(value)
