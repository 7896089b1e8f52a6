"""A Seldon user model that answers with a bare XGBoost booster: the anchor of ``make bench``.

It serves the booster of a registered closedloop version (saved by the benchmark with
``Booster.save_model``) and answers ``booster.inplace_predict(X)`` on rows that are
already transformed (the output of the pipeline's ``features`` step): no schema check,
no feature step, no metrics. What remains is Seldon's wrapper plus the model itself,
the floor the closedloop server is measured against.

Parameters (``PREDICTIVE_UNIT_PARAMETERS``): ``booster_path``, the saved booster
(``.json`` or ``.ubj``); ``nthread``, XGBoost threads per prediction (default 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost as xgb


class BoosterModel:
    """Predict class probabilities with an XGBoost booster on already-transformed rows."""

    def __init__(self, booster_path: str = "", nthread: str | int = 1) -> None:
        if not booster_path:
            raise ValueError("BoosterModel needs the parameter booster_path")
        self.booster_path = booster_path
        self.nthread = int(nthread)
        self._booster: xgb.Booster | None = None

    def load(self) -> None:
        """Load the booster (the wrapper calls this in every worker, after the fork)."""
        booster = xgb.Booster()
        booster.load_model(self.booster_path)
        booster.set_param({"nthread": self.nthread})
        self._booster = booster

    def predict(self, X: Any, features_names: Any = None, **kwargs: Any) -> np.ndarray:
        """Return probabilities shaped as the closedloop server's: (n, 2) when binary."""
        if self._booster is None:
            self.load()
        assert self._booster is not None
        scores = self._booster.inplace_predict(np.asarray(X, dtype=np.float64))
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim == 1:
            return np.column_stack([1.0 - scores, scores])
        return scores
