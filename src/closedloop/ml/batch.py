"""Scoring a batch: the server's row check and compiled pipeline, on a whole frame.

Batch inference follows the model server's rules exactly (:mod:`closedloop.ml.rowplan`):
a row the server would refuse is refused here too, named with its row number and
reason, and the other rows are still scored — one bad row never fails a run. A frame
that lacks a column the model takes is a data problem and stops the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from closedloop.ml.compiled import CompiledPipeline
from closedloop.ml.rowplan import CheckedRows, RowError, RowPlan
from closedloop.ml.schema import InputSchema

REFUSED_COLUMN = "refused"
"""Column of the predictions frame: why a row was not scored ("" when it was)."""


@dataclass(frozen=True, eq=False)
class BatchScores:
    """Scores of the accepted rows of a batch and the refused rows.

    Attributes:
        scores: Positive-class probability (binary), class probabilities ``(n, K)``
            (multi-class) or values (regression), for the accepted rows only.
        positions: Row positions (0-based) of the accepted rows in the input.
        refused: The refused rows, with their reasons.
        unknown_categories: Unknown categories among the accepted rows, per column.
        n_rows: Rows in the input.
    """

    scores: np.ndarray
    positions: np.ndarray
    refused: tuple[RowError, ...]
    unknown_categories: dict[str, int]
    n_rows: int

    def refusals_by_reason(self) -> dict[str, int]:
        """Refused rows per reason."""
        counts: dict[str, int] = {}
        for error in self.refused:
            counts[error.reason] = counts.get(error.reason, 0) + 1
        return counts


def score_checked(
    checked: CheckedRows, pipeline: Any, schema: InputSchema, compiled: CompiledPipeline | None
) -> np.ndarray:
    """Scores of checked rows, as :func:`closedloop.ml.train.predict_scores` returns them."""
    if compiled is not None:
        output = compiled.predict(checked)
    elif schema.task == "classification":
        output = np.asarray(pipeline.predict_proba(checked.frame), dtype=np.float64)
    else:
        output = np.asarray(pipeline.predict(checked.frame), dtype=np.float64)
    if schema.task == "regression":
        return output
    if output.shape[1] == 2:
        return output[:, 1]
    # float32 model outputs: renormalise so rows sum to 1 in float64.
    return output / output.sum(axis=1, keepdims=True)


def score_batch(
    frame: pd.DataFrame,
    pipeline: Any,
    schema: InputSchema,
    timings: dict[str, float] | None = None,
) -> BatchScores:
    """Check every row as the server does, then score the accepted ones.

    Args:
        frame: Rows holding at least the schema's feature columns.
        pipeline: The version's fitted pipeline.
        schema: Its input schema (with the fitted cleaning).
        timings: If given, receives the seconds spent checking (``check``) and
            scoring (``predict``).

    Returns:
        Scores of the accepted rows and the refused rows.

    Raises:
        SchemaError: A feature column is missing or the frame has no rows.
    """
    started = time.perf_counter()
    plan = RowPlan(schema)
    checked = plan.check_frame(frame)
    accepted, positions = checked.accepted()
    checked_at = time.perf_counter()
    compiled = CompiledPipeline.compile(
        pipeline, schema.task == "classification", plan.numeric_names
    )
    if len(positions):
        scores = score_checked(accepted, pipeline, schema, compiled)
    else:
        scores = np.empty(
            (0,)
            if schema.task == "regression" or len(schema.classes or ()) == 2
            else (0, len(schema.classes or ()))
        )
    if timings is not None:
        timings["check"] = checked_at - started
        timings["predict"] = time.perf_counter() - checked_at
    return BatchScores(
        scores=scores,
        positions=positions,
        refused=checked.errors,
        unknown_categories=dict(accepted.unknown_categories),
        n_rows=checked.n_rows,
    )


def predictions_frame(
    frame: pd.DataFrame, batch: BatchScores, schema: InputSchema, version: str
) -> pd.DataFrame:
    """The input rows plus ``score``, ``prediction``, ``model_version`` and ``refused``.

    Refused rows keep their place with an empty prediction and the reason in
    :data:`REFUSED_COLUMN`.
    """
    out = frame.reset_index(drop=True).copy()
    n = len(out)
    scores = batch.scores
    prediction = np.full(n, None, dtype=object)
    if schema.task == "classification":
        classes = list(schema.classes or ())
        score = np.full(n, np.nan)
        if scores.ndim == 1:
            score[batch.positions] = scores
            labels = np.asarray(classes, dtype=object)[(scores >= 0.5).astype(int)]
        else:
            score[batch.positions] = scores.max(axis=1) if len(scores) else []
            labels = (
                np.asarray(classes, dtype=object)[np.argmax(scores, axis=1)] if len(scores) else []
            )
        prediction[batch.positions] = labels
        out["score"] = score
        out["prediction"] = prediction
    else:
        values = np.full(n, np.nan)
        values[batch.positions] = scores
        out["prediction"] = values
    reasons = np.full(n, "", dtype=object)
    for error in batch.refused:
        reasons[error.row] = error.describe()
    out["model_version"] = version
    out[REFUSED_COLUMN] = reasons
    return out
