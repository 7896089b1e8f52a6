"""Join labelled feedback to the prediction it answers, for the quality windows.

The executor logs a prediction's response under ``Ce-Requestid`` (the prediction's
puid); the client's feedback echoes the response it got, whose ``meta.puid`` names the
same prediction. :class:`PredictionLog` remembers responses by puid, bounded by count
and by age (``label_delay_seconds``: a label later than that is not expected), oldest
forgotten first. A feedback whose puid is known takes its prediction out of the log (a
prediction is judged once); every other feedback is *unmatched* and never enters a
quality window, whatever its labels say.

Neither class locks: the :class:`~closedloop.drift.sidecar.monitor.DriftMonitor` calls
them under its own lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from closedloop.ml.schema import InputSchema

DEFAULT_CAPACITY = 100_000
LABEL = "_label"
SCORE = "_score"

Unmatched = Literal["no_puid", "unknown_puid", "expired", "other_version", "row_mismatch"]
UNMATCHED_REASONS: tuple[str, ...] = (
    "no_puid",
    "unknown_puid",
    "expired",
    "other_version",
    "row_mismatch",
)


@dataclass(frozen=True)
class LoggedPrediction:
    """One logged response.

    Attributes:
        scores: Its scores (see :class:`~closedloop.drift.sidecar.events.ResponsePrediction`).
        model_version: The version that answered, if the response said.
        at: When the response event arrived (Unix seconds).
    """

    scores: np.ndarray
    model_version: str | None
    at: float


class PredictionLog:
    """Logged predictions by puid, at most ``capacity`` of them, none older than ``max_age``.

    Args:
        max_age: Seconds a prediction waits for its label.
        capacity: Most predictions remembered; beyond it the oldest is forgotten.
    """

    def __init__(self, max_age: float, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1 or max_age <= 0:
            raise ValueError("need capacity >= 1 and max_age > 0")
        self.max_age = max_age
        self.capacity = capacity
        self._entries: OrderedDict[str, LoggedPrediction] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, puid: str, prediction: LoggedPrediction) -> int:
        """Remember a prediction (a repeated puid replaces the older one).

        Returns:
            How many predictions were forgotten to make room or because they expired.
        """
        self._entries.pop(puid, None)
        self._entries[puid] = prediction
        forgotten = self.expire(prediction.at)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            forgotten += 1
        return forgotten

    def take(self, puid: str, now: float) -> LoggedPrediction | Literal["unknown_puid", "expired"]:
        """Remove and return the prediction *puid* names, or why there is none."""
        prediction = self._entries.pop(puid, None)
        if prediction is None:
            return "unknown_puid"
        if now - prediction.at > self.max_age:
            return "expired"
        return prediction

    def expire(self, now: float) -> int:
        """Forget predictions older than ``max_age``; return how many."""
        forgotten = 0
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now - oldest.at <= self.max_age:
                break
            self._entries.popitem(last=False)
            forgotten += 1
        return forgotten


@dataclass(frozen=True)
class LabelledRows:
    """Labels joined to their predictions' scores, as :func:`closedloop.quality.assess` takes them.

    Attributes:
        y: Class indices (as floats) of a classifier, or targets of a regressor.
        scores: Positive-class probabilities (binary), class probabilities
            ``(rows, classes)`` (multi-class) or predictions (regression).
    """

    y: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def empty(cls) -> LabelledRows:
        """No rows."""
        return cls(np.empty(0, dtype=np.float64), np.empty(0, dtype=np.float64))

    @classmethod
    def join(cls, labels: Sequence[Any], scores: np.ndarray, schema: InputSchema) -> LabelledRows:
        """Pair checked labels (``feedback_rows``) with a response's scores.

        Raises:
            ValueError: If a label is not one of the schema's classes.
        """
        if schema.task == "regression":
            return cls(np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64))
        classes = list(schema.classes or ())
        index = {c: i for i, c in enumerate(classes)}
        y = np.asarray([index[label] for label in labels], dtype=np.float64)
        probabilities = np.asarray(scores, dtype=np.float64)
        return cls(y, probabilities[:, 1] if len(classes) == 2 else probabilities)

    @classmethod
    def concat(cls, parts: Sequence[LabelledRows]) -> LabelledRows:
        """The rows of *parts*, in order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.y for p in parts]), np.concatenate([p.scores for p in parts]))

    def to_frame(self) -> pd.DataFrame:
        """One float column of labels, one per score column (for a checkpoint)."""
        columns: dict[str, np.ndarray] = {LABEL: self.y}
        if self.scores.ndim == 2:
            for k in range(self.scores.shape[1]):
                columns[f"{SCORE}_{k}"] = self.scores[:, k]
        else:
            columns[SCORE] = self.scores
        return pd.DataFrame(columns, dtype=np.float64)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> LabelledRows:
        """Parse :meth:`to_frame` output.

        Raises:
            ValueError: If the columns are not those of :meth:`to_frame`.
        """
        if len(frame) == 0:
            return cls.empty()
        if LABEL not in frame.columns:
            raise ValueError(f"labelled rows need a {LABEL!r} column, got {list(frame.columns)}")
        y = frame[LABEL].to_numpy(dtype=np.float64)
        if SCORE in frame.columns:
            return cls(y, frame[SCORE].to_numpy(dtype=np.float64))
        width = sum(1 for c in frame.columns if str(c).startswith(f"{SCORE}_"))
        if width == 0:
            raise ValueError(f"labelled rows need score columns, got {list(frame.columns)}")
        names = [f"{SCORE}_{k}" for k in range(width)]
        return cls(y, frame[names].to_numpy(dtype=np.float64))
