"""Window metrics and per-row losses on labelled predictions.

Scores follow :mod:`closedloop.ml.gate`: the positive-class probability for binary
classification (1-D), class probabilities for multi-class (2-D), predictions for
regression; labels are class indices (classification) or targets (regression). The
metric functions themselves are the gate's (:data:`closedloop.ml.gate.METRICS`), so a
window's ROC AUC and the gate's ROC AUC are one computation.

Per-row loss is the proper scoring rule whose mean *is* a metric: log loss for
classification, absolute error for regression. Its mean over a window estimates the
model's expected loss, which is what the degradation test compares.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from closedloop.ml.gate import LOWER_IS_BETTER, METRICS

QualityMetric = Literal["roc_auc", "accuracy", "log_loss", "mae", "rmse"]
QUALITY_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("roc_auc", "log_loss", "accuracy"),
    "regression": ("mae", "rmse"),
}
# Log loss of one row is capped here (p = 1e-6): one confident miss must not decide a window.
_MAX_ROW_LOG_LOSS = -math.log(1e-6)


def default_metric(task: str, n_classes: int = 2) -> str:
    """The metric a policy's ``quality_metric: "auto"`` stands for.

    ROC AUC for binary classification (accuracy is blind on imbalanced data: a model
    that misses every fraud is still 98 % accurate), accuracy for multi-class, MAE for
    regression.
    """
    if task == "regression":
        return "mae"
    return "roc_auc" if n_classes <= 2 else "accuracy"


def metrics_for(task: str) -> tuple[str, ...]:
    """The metrics reported for a task's windows.

    Raises:
        ValueError: On an unknown task.
    """
    try:
        return QUALITY_METRICS[task]
    except KeyError as exc:
        raise ValueError(
            f"unknown task {task!r}; expected one of {sorted(QUALITY_METRICS)}"
        ) from exc


def _arrays(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    return y, s


def window_metrics(task: str, y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Every metric of :func:`metrics_for` on one window; NaN where undefined.

    ROC AUC is undefined on a window holding one class; that is reported as NaN, not
    as an error: a window says nothing about ranking then.
    """
    y, s = _arrays(y_true, scores)
    out: dict[str, float] = {}
    for name in metrics_for(task):
        if len(y) == 0:
            out[name] = math.nan
            continue
        if task == "classification":
            y = y.astype(int)
        try:
            out[name] = float(METRICS[name](y, s))
        except ValueError:
            out[name] = math.nan
    return out


def row_losses(task: str, y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-row loss: capped log loss (classification) or absolute error (regression)."""
    y, s = _arrays(y_true, scores)
    if task == "regression":
        return np.abs(y.astype(np.float64) - s)
    probabilities = s if s.ndim == 2 else np.column_stack([1.0 - s, s])
    picked = probabilities[np.arange(len(y)), y.astype(int)]
    return np.minimum(-np.log(np.clip(picked, 1e-300, 1.0)), _MAX_ROW_LOG_LOSS)


def worse_by(metric: str, baseline: float, value: float) -> float:
    """How much worse *value* is than *baseline*, in the metric's units (positive = worse)."""
    return value - baseline if metric in LOWER_IS_BETTER else baseline - value
