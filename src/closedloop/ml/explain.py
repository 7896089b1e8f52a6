"""Global and per-row explanations, in terms of the model's input columns.

* XGBoost models: exact TreeSHAP contributions from
  ``Booster.predict(DMatrix, pred_contribs=True)`` on the engineered matrix. The
  contributions of the engineered columns of one input (``amount`` and
  ``amount__log1p``, the one-hot columns of ``channel``, ...) are summed per row,
  which SHAP's additivity allows, before averaging absolute values. Contributions
  are in margin units (log-odds for classification).
* other models: permutation importance of the raw input columns (scored with ROC AUC,
  negative log loss for multi-class, or negative RMSE), i.e. the mean drop in score
  when a column is shuffled.

The model server imports this module for :func:`explain_rows`; matplotlib is imported
only inside :meth:`Explanation.to_html`.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from closedloop.ml.schema import InputSchema
from closedloop.ml.train import encode_target, feature_frame

ExplanationMethod = Literal["xgboost_shap", "permutation"]
BASE_VALUE_KEY = "__base_value__"


@dataclass(frozen=True)
class Explanation:
    """Importance of each input column.

    Attributes:
        method: ``xgboost_shap`` (mean absolute SHAP value) or ``permutation`` (mean
            score drop when the column is shuffled).
        importances: Input column → importance, most important first.
        n_rows: Rows the explanation was computed on.
    """

    method: ExplanationMethod
    importances: Mapping[str, float]
    n_rows: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict (importances as an ordered list)."""
        return {
            "method": self.method,
            "importances": [[name, value] for name, value in self.importances.items()],
            "n_rows": self.n_rows,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Explanation:
        """Build an explanation from :meth:`to_dict` output."""
        return cls(
            method=data["method"],
            importances={str(name): float(value) for name, value in data["importances"]},
            n_rows=int(data["n_rows"]),
        )

    def _unit(self) -> str:
        if self.method == "xgboost_shap":
            return "mean |SHAP value| (margin units)"
        return "mean score drop when shuffled"

    def to_markdown(self) -> str:
        """A Markdown table of importances, most important first."""
        lines = [
            f"**Feature importance** ({self.method}, {self.n_rows} rows; {self._unit()})",
            "",
            "| rank | feature | importance |",
            "|---:|---|---:|",
        ]
        for rank, (name, value) in enumerate(self.importances.items(), start=1):
            lines.append(f"| {rank} | `{name}` | {value:.4g} |")
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """A self-contained HTML page with a horizontal bar chart (base64 PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(self.importances)[::-1]
        values = [self.importances[n] for n in names]
        fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.2))
        try:
            ax.barh(names, values, color="#0969da")
            ax.set(xlabel=self._unit(), title=f"Feature importance ({self.method})")
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        finally:
            plt.close(fig)
        png = base64.b64encode(buffer.getvalue()).decode("ascii")
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{v:.4g}</td></tr>"
            for n, v in self.importances.items()
        )
        return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Feature importance</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; }}
td, th {{ border: 1px solid #d0d7de; padding: 4px 8px; }}
table {{ border-collapse: collapse; }}</style></head><body>
<h1>Feature importance</h1>
<p>{html.escape(self.method)}, {self.n_rows} rows; {html.escape(self._unit())}</p>
<img alt="feature importance" src="data:image/png;base64,{png}">
<table><tr><th>feature</th><th>importance</th></tr>{rows}</table>
</body></html>
"""


def _xgboost_model(pipeline: Pipeline) -> Any | None:
    from xgboost import XGBModel

    model = pipeline.named_steps.get("model")
    return model if isinstance(model, XGBModel) else None


def _contributions_by_input(
    pipeline: Pipeline, rows: pd.DataFrame, schema: InputSchema
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row SHAP contributions summed per input column, and the base values.

    Returns ``(contributions, base)``: ``(n, n_inputs[, ...])`` following
    ``schema.feature_names``; multi-class adds a class axis in the middle.
    """
    import xgboost

    model = _xgboost_model(pipeline)
    features = pipeline.named_steps["features"]
    matrix = features.transform(feature_frame(rows, schema))
    raw = model.get_booster().predict(xgboost.DMatrix(matrix), pred_contribs=True)
    sources = features.feature_sources_
    names = list(schema.feature_names)
    # One-hot mapping matrix: engineered column j belongs to input column i.
    mapping = np.zeros((len(sources), len(names)))
    for j, source in enumerate(sources):
        mapping[j, names.index(source)] = 1.0
    by_input = raw[..., :-1] @ mapping
    return by_input, raw[..., -1]


def explain_global(
    pipeline: Pipeline, df: pd.DataFrame, schema: InputSchema, max_rows: int = 2000, seed: int = 0
) -> Explanation:
    """Rank the input columns by importance (see the module docstring for methods).

    Args:
        pipeline: A fitted served pipeline.
        df: Rows to explain on (with the target for permutation importance).
        schema: The model's input schema.
        max_rows: At most this many rows, sampled with ``seed``.
        seed: Sampling (and permutation) seed.

    Returns:
        The explanation, most important column first.

    Raises:
        ValueError: If ``df`` is empty.
    """
    if len(df) == 0:
        raise ValueError("cannot explain on an empty frame")
    sample = df.sample(n=max_rows, random_state=seed) if len(df) > max_rows else df
    names = list(schema.feature_names)
    if _xgboost_model(pipeline) is not None:
        contributions, _ = _contributions_by_input(pipeline, sample, schema)
        magnitude = np.abs(contributions)
        # Multi-class: average over the class axis as well.
        values = magnitude.reshape(len(sample), -1, len(names)).mean(axis=(0, 1))
        method: ExplanationMethod = "xgboost_shap"
    else:
        from sklearn.inspection import permutation_importance

        y = encode_target(sample[schema.target], schema)
        if schema.task == "regression":
            scoring = "neg_root_mean_squared_error"
        elif len(schema.classes or ()) == 2:
            scoring = "roc_auc"
        else:
            scoring = "neg_log_loss"
        result = permutation_importance(
            pipeline,
            feature_frame(sample, schema),
            y,
            scoring=scoring,
            n_repeats=5,
            random_state=seed,
        )
        values = result.importances_mean
        method = "permutation"
    order = np.argsort(-values, kind="stable")
    return Explanation(
        method=method,
        importances={names[i]: float(values[i]) for i in order},
        n_rows=len(sample),
    )


def explain_rows(
    pipeline: Pipeline, rows_df: pd.DataFrame, schema: InputSchema
) -> list[dict[str, float]]:
    """Per-row SHAP contributions of each input column (XGBoost pipelines only).

    Each dict maps every input column to its contribution and :data:`BASE_VALUE_KEY`
    to the base value; they sum to the model's margin (log-odds for binary
    classification, the prediction for regression).

    Args:
        pipeline: A fitted served pipeline whose model is XGBoost.
        rows_df: Coerced rows (see :func:`closedloop.ml.schema.check_frame`).
        schema: The model's input schema.

    Returns:
        One dict per row, in row order.

    Raises:
        ValueError: If the model is not XGBoost or is multi-class.
    """
    model = _xgboost_model(pipeline)
    if model is None:
        kind = type(pipeline.named_steps.get("model")).__name__
        raise ValueError(f"per-row explanations need an XGBoost model; this pipeline has {kind}")
    if schema.task == "classification" and len(schema.classes or ()) > 2:
        raise ValueError("per-row explanations support binary classification and regression only")
    contributions, base = _contributions_by_input(pipeline, rows_df, schema)
    names = list(schema.feature_names)
    return [
        {
            **{name: float(value) for name, value in zip(names, row, strict=True)},
            BASE_VALUE_KEY: float(b),
        }
        for row, b in zip(contributions, base, strict=True)
    ]
