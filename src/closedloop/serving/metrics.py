"""The model server's Prometheus metrics, recorded directly with ``prometheus_client``.

Seldon's wrapper can take custom metrics returned with every answer, but it stores
them through a ``multiprocessing.Manager`` (two round trips per request) and pickles
histograms: most of a one-row request's time. These metrics are recorded in place
instead: in a ``seldon-core-microservice`` started by
:mod:`closedloop.serving.microservice`, ``PROMETHEUS_MULTIPROC_DIR`` is set before any
worker starts, so each gunicorn worker (and the gRPC process) writes its values to
memory-mapped files there and the wrapper's metrics endpoint merges them with its own.

Every series is per ``version`` where it concerns one. The feedback gauges are per
process (a ``pid`` label, ``multiprocess_mode="liveall"``); ``closedloop_served_version``
and ``closedloop_model_load_failing`` are the highest value over the live processes.

Names (kept from the first build, which dashboards and alerts use):

* ``closedloop_prediction_requests_total``, ``closedloop_predicted_rows_total``,
  ``closedloop_predicted_class_total`` (``predicted_class``),
  ``closedloop_predict_duration_seconds`` (histogram),
  ``closedloop_unknown_categories_total`` (``column``),
  ``closedloop_explanations_total``;
* ``closedloop_rejected_requests_total`` (``reason``: ``bad_message``, ``bad_input``,
  ``too_large``, ``bad_feedback``, ``not_ready``);
* ``closedloop_feedback_rows_total``, ``closedloop_feedback_correct_total``,
  ``closedloop_feedback_accuracy`` (classification) or
  ``closedloop_feedback_abs_error_total``, ``closedloop_feedback_squared_error_total``,
  ``closedloop_feedback_mae``, ``closedloop_feedback_rmse`` (regression);
* ``closedloop_model_swaps_total``, ``closedloop_model_load_failures_total``
  (``reason``: ``refused`` or ``unavailable``), ``closedloop_served_version``,
  ``closedloop_model_load_failing``;
* ``closedloop_request_logger_events_total`` (``outcome``: ``sent``,
  ``dropped_queue_full``, ``send_failed``; local mode).
"""

from __future__ import annotations

import math
import threading

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

# Seconds; one-row predictions take about a millisecond, 10,000-row ones tens of them.
_DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

PREDICTION_REQUESTS = Counter(
    "closedloop_prediction_requests", "Prediction requests answered", ["version"]
)
PREDICTED_ROWS = Counter("closedloop_predicted_rows", "Rows predicted", ["version"])
PREDICTED_CLASS = Counter(
    "closedloop_predicted_class", "Rows predicted per class", ["version", "predicted_class"]
)
PREDICT_DURATION = Histogram(
    "closedloop_predict_duration_seconds",
    "Time from a checked message to its answer, per request",
    ["version"],
    buckets=_DURATION_BUCKETS,
)
UNKNOWN_CATEGORIES = Counter(
    "closedloop_unknown_categories",
    "Categorical values not seen in training",
    ["version", "column"],
)
EXPLANATIONS = Counter("closedloop_explanations", "Rows explained", ["version"])
REJECTED = Counter("closedloop_rejected_requests", "Requests refused", ["reason"])
FEEDBACK_ROWS = Counter("closedloop_feedback_rows", "Labelled rows scored", ["version"])
FEEDBACK_CORRECT = Counter(
    "closedloop_feedback_correct", "Labelled rows predicted right", ["version"]
)
FEEDBACK_ACCURACY = Gauge(
    "closedloop_feedback_accuracy",
    "Accuracy on the labelled rows this process scored",
    ["version"],
    multiprocess_mode="liveall",
)
FEEDBACK_ABS_ERROR = Counter(
    "closedloop_feedback_abs_error", "Sum of absolute errors on labelled rows", ["version"]
)
FEEDBACK_SQUARED_ERROR = Counter(
    "closedloop_feedback_squared_error", "Sum of squared errors on labelled rows", ["version"]
)
FEEDBACK_MAE = Gauge(
    "closedloop_feedback_mae",
    "Mean absolute error on the labelled rows this process scored",
    ["version"],
    multiprocess_mode="liveall",
)
FEEDBACK_RMSE = Gauge(
    "closedloop_feedback_rmse",
    "Root mean squared error on the labelled rows this process scored",
    ["version"],
    multiprocess_mode="liveall",
)
MODEL_SWAPS = Counter("closedloop_model_swaps", "Versions put into service", ["version"])
LOAD_FAILURES = Counter(
    "closedloop_model_load_failures", "Failed attempts to load a version", ["version", "reason"]
)
SERVED_VERSION = Gauge(
    "closedloop_served_version",
    "Number of the version served (the highest over the live processes; 0 before one serves)",
    multiprocess_mode="livemax",
)
LOAD_FAILING = Gauge(
    "closedloop_model_load_failing",
    "1 while a process's last attempt to load the wanted version failed",
    multiprocess_mode="livemax",
)
LOGGER_EVENTS = Counter(
    "closedloop_request_logger_events", "Request-logger events by outcome", ["outcome"]
)


def record_prediction(
    version: str,
    class_names: list[str] | None,
    output: np.ndarray,
    unknown: dict[str, int],
    seconds: float,
) -> None:
    """Count one answered prediction request."""
    requests, rows, duration, classes = _version_series(version, class_names)
    requests.inc()
    rows.inc(len(output))
    if class_names:
        if len(output) == 1:
            classes[int(output[0].argmax())].inc()
        else:
            counts = np.bincount(output.argmax(axis=1), minlength=len(class_names))
            for name, count in zip(class_names, counts.tolist(), strict=True):
                if count:
                    PREDICTED_CLASS.labels(version, name).inc(count)
    for column, count in unknown.items():
        UNKNOWN_CATEGORIES.labels(version, column).inc(count)
    duration.observe(seconds)


_SERIES: dict[tuple[str, tuple[str, ...]], tuple] = {}


def _version_series(version: str, class_names: list[str] | None) -> tuple:
    """The labelled series of one version, looked up once (labels() costs a lock and a dict)."""
    key = (version, tuple(class_names or ()))
    series = _SERIES.get(key)
    if series is None:
        series = (
            PREDICTION_REQUESTS.labels(version),
            PREDICTED_ROWS.labels(version),
            PREDICT_DURATION.labels(version),
            [PREDICTED_CLASS.labels(version, name) for name in class_names or ()],
        )
        _SERIES[key] = series
    return series


class FeedbackQuality:
    """Running quality of each version on the labelled rows this process scored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, list[float]] = {}

    def record(self, version: str, classification: bool, rows: int, first: float, second: float):
        """Add one feedback call: (correct, 0) or (abs error sum, squared error sum)."""
        with self._lock:
            totals = self._totals.setdefault(version, [0.0, 0.0, 0.0])
            totals[0] += rows
            totals[1] += first
            totals[2] += second
            n, sum_first, sum_second = totals
        FEEDBACK_ROWS.labels(version).inc(rows)
        if classification:
            FEEDBACK_CORRECT.labels(version).inc(first)
            FEEDBACK_ACCURACY.labels(version).set(sum_first / n)
        else:
            FEEDBACK_ABS_ERROR.labels(version).inc(first)
            FEEDBACK_SQUARED_ERROR.labels(version).inc(second)
            FEEDBACK_MAE.labels(version).set(sum_first / n)
            FEEDBACK_RMSE.labels(version).set(math.sqrt(sum_second / n))


class LoggerCounts:
    """Mirror a request logger's running counts into ``closedloop_request_logger_events_total``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen = {"sent": 0, "dropped_queue_full": 0, "send_failed": 0}

    def sync(self, sent: int, dropped: int, failed: int) -> None:
        """Add what the logger counted since the previous call."""
        with self._lock:
            for outcome, total in (
                ("sent", sent),
                ("dropped_queue_full", dropped),
                ("send_failed", failed),
            ):
                delta = total - self._seen[outcome]
                if delta > 0:
                    LOGGER_EVENTS.labels(outcome).inc(delta)
                    self._seen[outcome] = total
