"""A version's quality baseline and the test of one window against it.

:class:`QualityBaseline` is measured once, when a version is trained, on its holdout:
the most recent labelled slice, which it did not train on. It keeps the holdout's
metrics and a sample of its per-row losses, and is saved with the version
(:data:`QUALITY_BASELINE_FILE`).

:func:`assess` compares one window of labelled live rows with it:

* the **drop**: the window's metric against the baseline's, in the metric's units
  (positive = worse), e.g. ``0.81 → 0.74`` ROC AUC is a drop of ``0.07``;
* the **p-value** of a one-sided Welch t-test that the window's mean per-row loss
  (log loss, or absolute error) is larger than the baseline's
  (:func:`scipy.stats.ttest_ind`, ``equal_var=False``, ``alternative="greater"``).

Why a test on the mean loss, and not a rank test or a stream detector: mean log loss
*is* the model's expected loss, the quantity that matters. When a concept changes in a
rare class (fraud), only a few per cent of rows change; rank tests (KS, Cramér-von
Mises, Mann-Whitney) barely move, while those rows' losses move the mean a lot.
Sequential error-rate detectors (DDM, ADWIN on 0/1 errors) watch accuracy at a fixed
threshold, which imbalanced data hides. Per-row log loss is capped (at p = 1e-6) so
one confident miss cannot decide a window, and windows hold hundreds of rows, so the
t statistic's normal approximation holds.

Whether a result is *degraded* is decided by the drift policy
(:func:`closedloop.drift.verdict.window_verdict`): significant **and** a drop of at
least ``min_quality_drop``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from closedloop.errors import ClosedLoopError
from closedloop.quality.metrics import (
    default_metric,
    metrics_for,
    row_losses,
    window_metrics,
    worse_by,
)

QUALITY_BASELINE_FILE = "quality_baseline.json"
BASELINE_SCHEMA_VERSION = 1
_MAX_BASELINE_ROWS = 5000


class QualityError(ClosedLoopError, ValueError):
    """A quality baseline or result is malformed, or labels and scores do not fit."""


def _finite_or_nan(value: Any, name: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QualityError(f"{name} must be a number, got {value!r}")
    return float(value)


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True, eq=False)
class QualityBaseline:
    """A version's quality on its holdout.

    Attributes:
        task: ``classification`` or ``regression``.
        n_classes: Classes of a classifier (0 for regression).
        metrics: Metric → value on the holdout (NaN where undefined).
        losses: Per-row losses of (a sample of) the holdout.
        n_rows: Holdout rows measured.
    """

    task: str
    n_classes: int
    metrics: Mapping[str, float]
    losses: np.ndarray = field(repr=False)
    n_rows: int

    @classmethod
    def from_holdout(
        cls,
        task: str,
        y_true: np.ndarray,
        scores: np.ndarray,
        n_classes: int = 2,
        seed: int = 0,
    ) -> QualityBaseline:
        """Measure a baseline on holdout labels and the version's scores.

        Raises:
            QualityError: On an empty holdout or mismatched lengths.
        """
        try:
            metrics = window_metrics(task, y_true, scores)
            losses = row_losses(task, y_true, scores)
        except ValueError as exc:
            raise QualityError(f"cannot measure a quality baseline: {exc}") from exc
        if len(losses) == 0:
            raise QualityError("cannot measure a quality baseline on an empty holdout")
        if len(losses) > _MAX_BASELINE_ROWS:
            rng = np.random.default_rng(seed)
            losses = rng.choice(losses, size=_MAX_BASELINE_ROWS, replace=False)
        return cls(
            task=task,
            n_classes=0 if task == "regression" else int(n_classes),
            metrics=metrics,
            losses=np.asarray(losses, dtype=np.float64),
            n_rows=len(np.asarray(y_true)),
        )

    def metric_name(self, metric: str) -> str:
        """Resolve ``"auto"`` to this task's default metric.

        Raises:
            QualityError: If the metric is not reported for this task.
        """
        name = default_metric(self.task, self.n_classes) if metric == "auto" else metric
        if name not in metrics_for(self.task):
            raise QualityError(
                f"quality metric {name!r} is not measured for {self.task}; "
                f"choose one of {list(metrics_for(self.task))} or 'auto'"
            )
        return name

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible data (NaN metrics as null)."""
        return {
            "schema_version": BASELINE_SCHEMA_VERSION,
            "task": self.task,
            "n_classes": self.n_classes,
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "losses": [float(v) for v in self.losses],
            "n_rows": self.n_rows,
        }

    def to_json(self) -> bytes:
        """Serialize for the registry."""
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: Any) -> QualityBaseline:
        """Parse :meth:`to_dict` output.

        Raises:
            QualityError: If a field is missing or malformed.
        """
        if not isinstance(data, Mapping):
            raise QualityError(f"a quality baseline is a JSON object, got {type(data).__name__}")
        try:
            task = data["task"]
            if task not in ("classification", "regression"):
                raise QualityError(f"unknown task {task!r} in a quality baseline")
            losses = np.asarray(data["losses"], dtype=np.float64)
            if losses.ndim != 1 or len(losses) == 0 or not np.all(np.isfinite(losses)):
                raise QualityError(
                    "a quality baseline's losses must be a non-empty list of numbers"
                )
            metrics = {
                str(k): _finite_or_nan(v, f"metrics.{k}") for k, v in dict(data["metrics"]).items()
            }
            return cls(
                task=task,
                n_classes=int(data["n_classes"]),
                metrics=metrics,
                losses=losses,
                n_rows=int(data["n_rows"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, QualityError):
                raise
            raise QualityError(f"malformed quality baseline: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> QualityBaseline:
        """Parse :meth:`to_json` output.

        Raises:
            QualityError: If it is not JSON or not a baseline.
        """
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise QualityError(f"a quality baseline is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


@dataclass(frozen=True)
class QualityResult:
    """One window of labelled rows against the version's baseline.

    Attributes:
        metric: The compared metric.
        baseline_value: Its value on the version's holdout.
        value: Its value on the window (NaN when undefined, e.g. one class only).
        drop: ``baseline - value`` in the better direction (positive = worse; NaN if
            either is undefined).
        p_value: One-sided Welch t-test that the window's mean loss is larger.
        mean_loss: The window's mean per-row loss.
        baseline_mean_loss: The baseline's.
        n_rows: Labelled rows in the window.
        metrics: Every metric of the window.
    """

    metric: str
    baseline_value: float
    value: float
    drop: float
    p_value: float
    mean_loss: float
    baseline_mean_loss: float
    n_rows: int
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible data (NaN as null)."""
        return {
            "metric": self.metric,
            "baseline_value": _json_number(self.baseline_value),
            "value": _json_number(self.value),
            "drop": _json_number(self.drop),
            "p_value": _json_number(self.p_value),
            "mean_loss": _json_number(self.mean_loss),
            "baseline_mean_loss": _json_number(self.baseline_mean_loss),
            "n_rows": self.n_rows,
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> QualityResult:
        """Parse :meth:`to_dict` output.

        Raises:
            QualityError: If a field is missing or malformed.
        """
        if not isinstance(data, Mapping):
            raise QualityError(f"a quality result is a JSON object, got {type(data).__name__}")
        try:
            n_rows = data["n_rows"]
            if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 0:
                raise QualityError(f"n_rows must be a non-negative integer, got {n_rows!r}")
            metrics = data.get("metrics", {})
            if not isinstance(metrics, Mapping):
                raise QualityError("metrics must be an object")
            return cls(
                metric=str(data["metric"]),
                baseline_value=_finite_or_nan(data["baseline_value"], "baseline_value"),
                value=_finite_or_nan(data["value"], "value"),
                drop=_finite_or_nan(data["drop"], "drop"),
                p_value=_finite_or_nan(data["p_value"], "p_value"),
                mean_loss=_finite_or_nan(data["mean_loss"], "mean_loss"),
                baseline_mean_loss=_finite_or_nan(data["baseline_mean_loss"], "baseline_mean_loss"),
                n_rows=n_rows,
                metrics={str(k): _finite_or_nan(v, f"metrics.{k}") for k, v in metrics.items()},
            )
        except KeyError as exc:
            raise QualityError(f"a quality result lacks {exc.args[0]!r}") from exc


def assess(
    baseline: QualityBaseline, y_true: np.ndarray, scores: np.ndarray, metric: str = "auto"
) -> QualityResult:
    """Test one window of labelled rows against the version's baseline.

    Args:
        baseline: The version's baseline.
        y_true: The window's labels (class indices) or targets.
        scores: The version's scores for those rows.
        metric: The compared metric, or ``"auto"`` (see
            :func:`~closedloop.quality.metrics.default_metric`).

    Returns:
        The result; with fewer than two rows, p-value and drop are NaN (no evidence).

    Raises:
        QualityError: On mismatched lengths or a metric this task does not measure.
    """
    from scipy import stats

    name = baseline.metric_name(metric)
    try:
        metrics = window_metrics(baseline.task, y_true, scores)
        losses = row_losses(baseline.task, y_true, scores)
    except ValueError as exc:
        raise QualityError(f"cannot assess a quality window: {exc}") from exc
    base_value = float(baseline.metrics.get(name, math.nan))
    value = metrics[name]
    drop = worse_by(name, base_value, value)
    p_value = math.nan
    if len(losses) >= 2:
        if np.ptp(losses) == 0.0 and np.ptp(baseline.losses) == 0.0:
            p_value = 0.0 if losses[0] > baseline.losses[0] else 1.0
        else:
            test = stats.ttest_ind(losses, baseline.losses, equal_var=False, alternative="greater")
            p_value = float(test.pvalue)
    return QualityResult(
        metric=name,
        baseline_value=base_value,
        value=value,
        drop=drop,
        p_value=p_value,
        mean_loss=float(np.mean(losses)) if len(losses) else math.nan,
        baseline_mean_loss=float(np.mean(baseline.losses)),
        n_rows=len(losses),
        metrics=metrics,
    )
