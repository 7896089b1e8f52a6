"""Holdout evaluation of a fitted pipeline, with an HTML report.

Classification metrics use the positive-class probability (binary) or the class
probabilities (multi-class); hard predictions take the most probable class (0.5 for
binary). ``roc_auc`` and the ROC curve are left out when the holdout holds a single
class, and the curve's first threshold (scikit-learn's ``inf``) is written as 1.0 so
the result stays valid JSON. ``f1``, ``precision`` and ``recall`` are for the
positive class (binary) or macro averages (multi-class).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.pipeline import Pipeline

from closedloop.ml.schema import InputSchema
from closedloop.ml.train import encode_target, predict_scores

MAX_ROC_POINTS = 200
_HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics and curves of one model on one holdout.

    Attributes:
        task: ``classification`` or ``regression``.
        metrics: Metric name → value (all finite).
        n_rows: Holdout size.
        roc_curve: ``(fpr, tpr, thresholds)`` with at most 200 points (binary only).
        confusion_matrix: Counts, rows = true class, columns = predicted class.
        labels: Class labels of the confusion matrix rows/columns, as strings.
        histogram: ``{"edges": [...], "<series>": [counts...]}``: scores per true
            class (classification) or residuals (regression).
    """

    task: str
    metrics: Mapping[str, float]
    n_rows: int
    roc_curve: tuple[list[float], list[float], list[float]] | None = None
    confusion_matrix: list[list[int]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    histogram: Mapping[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {
            "task": self.task,
            "metrics": dict(self.metrics),
            "n_rows": self.n_rows,
            "roc_curve": None if self.roc_curve is None else [list(v) for v in self.roc_curve],
            "confusion_matrix": [list(r) for r in self.confusion_matrix],
            "labels": list(self.labels),
            "histogram": {k: list(v) for k, v in self.histogram.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Build a result from :meth:`to_dict` output."""
        curve = data.get("roc_curve")
        return cls(
            task=str(data["task"]),
            metrics={k: float(v) for k, v in data["metrics"].items()},
            n_rows=int(data["n_rows"]),
            roc_curve=None if curve is None else (list(curve[0]), list(curve[1]), list(curve[2])),
            confusion_matrix=[[int(x) for x in row] for row in data.get("confusion_matrix", [])],
            labels=[str(x) for x in data.get("labels", [])],
            histogram={k: [float(x) for x in v] for k, v in data.get("histogram", {}).items()},
        )

    def to_html(self, title: str = "Model evaluation") -> str:
        """A self-contained HTML report: metrics table and PNG charts inlined as base64.

        Args:
            title: Page heading.

        Returns:
            The HTML page.
        """
        figures = _figures(self)
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in self.metrics.items()
        )
        images = "".join(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
            for name, png in figures
        )
        return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #d0d7de; padding: 4px 8px; }}
figure {{ display: inline-block; margin: 1em; }}
img {{ max-width: 480px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{self.task}, {self.n_rows} holdout rows</p>
<table><tr><th>metric</th><th>value</th></tr>{rows}</table>
{images}
</body></html>
"""


def _downsample(length: int) -> np.ndarray:
    if length <= MAX_ROC_POINTS:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, MAX_ROC_POINTS).round().astype(int))


def _histogram(series: Mapping[str, np.ndarray], edges: np.ndarray) -> dict[str, list[float]]:
    result = {"edges": [float(e) for e in edges]}
    for name, values in series.items():
        counts, _ = np.histogram(values, bins=edges)
        result[name] = [float(c) for c in counts]
    return result


def _classification(y: np.ndarray, scores: np.ndarray, classes: Sequence[Any]) -> EvaluationResult:
    n_classes = len(classes)
    labels = np.arange(n_classes)
    binary = scores.ndim == 1
    probabilities = np.column_stack([1.0 - scores, scores]) if binary else scores
    predicted = probabilities.argmax(axis=1)
    average = "binary" if binary else "macro"
    metrics = {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "f1": float(skm.f1_score(y, predicted, average=average, labels=labels, zero_division=0)),
        "precision": float(
            skm.precision_score(y, predicted, average=average, labels=labels, zero_division=0)
        ),
        "recall": float(
            skm.recall_score(y, predicted, average=average, labels=labels, zero_division=0)
        ),
        "log_loss": float(skm.log_loss(y, probabilities, labels=labels)),
    }
    roc = None
    if np.unique(y).size > 1:
        if binary:
            metrics["roc_auc"] = float(skm.roc_auc_score(y, scores))
            fpr, tpr, thresholds = skm.roc_curve(y, scores)
            keep = _downsample(len(fpr))
            thresholds = np.where(np.isfinite(thresholds), thresholds, 1.0)
            roc = (
                [float(v) for v in fpr[keep]],
                [float(v) for v in tpr[keep]],
                [float(v) for v in thresholds[keep]],
            )
        elif np.unique(y).size == n_classes:
            metrics["roc_auc"] = float(
                skm.roc_auc_score(y, probabilities, multi_class="ovr", labels=labels)
            )
    confusion = skm.confusion_matrix(y, predicted, labels=labels)
    positive = probabilities[:, -1] if binary else probabilities.max(axis=1)
    histogram = _histogram(
        {f"true {classes[c]}": positive[y == c] for c in labels},
        np.linspace(0.0, 1.0, _HISTOGRAM_BINS + 1),
    )
    return EvaluationResult(
        task="classification",
        metrics=metrics,
        n_rows=len(y),
        roc_curve=roc,
        confusion_matrix=[[int(x) for x in row] for row in confusion],
        labels=[str(c) for c in classes],
        histogram=histogram,
    )


def _regression(y: np.ndarray, predicted: np.ndarray) -> EvaluationResult:
    residuals = predicted - y
    metrics = {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, predicted))),
        "mae": float(skm.mean_absolute_error(y, predicted)),
    }
    if len(y) > 1 and np.var(y) > 0:
        metrics["r2"] = float(skm.r2_score(y, predicted))
    low, high = float(residuals.min()), float(residuals.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    histogram = _histogram({"residuals": residuals}, np.linspace(low, high, _HISTOGRAM_BINS + 1))
    return EvaluationResult(task="regression", metrics=metrics, n_rows=len(y), histogram=histogram)


def evaluate_model(
    pipeline: Pipeline, holdout_df: pd.DataFrame, schema: InputSchema
) -> EvaluationResult:
    """Evaluate a fitted pipeline on holdout rows.

    Args:
        pipeline: A fitted served pipeline.
        holdout_df: Rows with the feature columns and the target.
        schema: The model's input schema.

    Returns:
        Metrics (classification: accuracy, f1, precision, recall, log_loss and, with
        both classes present, roc_auc; regression: rmse, mae, r2), curves and counts.

    Raises:
        ValueError: If the holdout is empty or has missing/unknown labels.
    """
    if len(holdout_df) == 0:
        raise ValueError("holdout is empty")
    y = encode_target(holdout_df[schema.target], schema)
    scores = predict_scores(pipeline, holdout_df, schema)
    if schema.task == "regression":
        result = _regression(y, scores)
    else:
        result = _classification(y, scores, schema.classes or ())
    if not all(math.isfinite(v) for v in result.metrics.values()):
        raise ValueError(f"non-finite metrics: {dict(result.metrics)}")
    return result


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures(result: EvaluationResult) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: list[tuple[str, str]] = []
    try:
        if result.roc_curve is not None:
            fig, ax = plt.subplots(figsize=(4.5, 4))
            fpr, tpr, _ = result.roc_curve
            ax.plot(fpr, tpr, label=f"AUC = {result.metrics.get('roc_auc', float('nan')):.3f}")
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
            ax.legend(loc="lower right")
            figures.append(("ROC curve", _png(fig)))
        if result.confusion_matrix:
            matrix = np.asarray(result.confusion_matrix)
            fig, ax = plt.subplots(figsize=(4.5, 4))
            ax.imshow(matrix, cmap="Blues")
            for (i, j), count in np.ndenumerate(matrix):
                dark = count > matrix.max() / 2
                ax.text(
                    j, i, str(count), ha="center", va="center", color="white" if dark else "black"
                )
            ticks = range(len(result.labels))
            ax.set_xticks(ticks, result.labels)
            ax.set_yticks(ticks, result.labels)
            ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
            figures.append(("Confusion matrix", _png(fig)))
        if result.histogram:
            edges = np.asarray(result.histogram["edges"])
            fig, ax = plt.subplots(figsize=(4.5, 4))
            for name, counts in result.histogram.items():
                if name != "edges":
                    ax.stairs(counts, edges, label=name)
            if result.task == "classification":
                title, xlabel = "Score histogram", f"predicted probability of {result.labels[-1]}"
            else:
                title, xlabel = "Residuals", "prediction - target"
            ax.set(title=title, xlabel=xlabel, ylabel="rows", yscale="log")
            ax.legend()
            figures.append((title, _png(fig)))
    finally:
        plt.close("all")
    return figures
