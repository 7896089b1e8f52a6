"""Random search over model configs, candidate scoring and selection."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import mean_squared_error, roc_auc_score
from sklearn.pipeline import Pipeline

from closedloop.ml.schema import InputSchema
from closedloop.ml.train import MODEL_KINDS, ModelConfig, encode_target, predict_scores


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return round(float(math.exp(rng.uniform(math.log(low), math.log(high)))), 6)


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _xgboost_space(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "n_estimators": _pick(rng, (100, 200, 400)),
        "max_depth": int(rng.integers(3, 9)),
        "learning_rate": _log_uniform(rng, 0.02, 0.3),
        "subsample": round(float(rng.uniform(0.6, 1.0)), 3),
        "colsample_bytree": round(float(rng.uniform(0.6, 1.0)), 3),
        "min_child_weight": _log_uniform(rng, 1.0, 10.0),
        "reg_lambda": _log_uniform(rng, 0.1, 10.0),
    }


def _random_forest_space(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "n_estimators": _pick(rng, (100, 200, 400)),
        "max_depth": _pick(rng, (None, 6, 10, 16)),
        "min_samples_leaf": _pick(rng, (1, 2, 5, 10)),
        "max_features": _pick(rng, ("sqrt", 0.5, 0.8)),
    }


def _logistic_regression_space(rng: np.random.Generator) -> dict[str, Any]:
    return {"C": _log_uniform(rng, 1e-3, 1e2)}


def _gradient_boosting_space(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "max_iter": _pick(rng, (100, 200, 400)),
        "learning_rate": _log_uniform(rng, 0.02, 0.3),
        "max_leaf_nodes": _pick(rng, (15, 31, 63)),
        "l2_regularization": _log_uniform(rng, 1e-3, 1.0),
    }


SEARCH_SPACES: dict[str, Callable[[np.random.Generator], dict[str, Any]]] = {
    "xgboost": _xgboost_space,
    "random_forest": _random_forest_space,
    "logistic_regression": _logistic_regression_space,
    "gradient_boosting": _gradient_boosting_space,
}


def candidate_configs(n: int, seed: int, kinds: Sequence[str] = MODEL_KINDS) -> list[ModelConfig]:
    """Draw ``n`` configs by random search; the same arguments give the same list.

    Kinds take turns (``kinds[i % len(kinds)]``) so every kind is tried when
    ``n >= len(kinds)``; hyperparameters are drawn from one generator seeded with
    ``seed``. Every config carries ``seed`` as its estimator seed. (For the
    ``regression`` task ``logistic_regression`` means ``Ridge``; see
    :func:`closedloop.ml.train.make_estimator` for how ``C`` maps to ``alpha``.)

    Args:
        n: Number of configs.
        seed: Seed of the search.
        kinds: Model kinds to search over.

    Returns:
        ``n`` configs.

    Raises:
        ValueError: If ``n`` is negative, ``kinds`` is empty or holds an unknown kind.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if not kinds:
        raise ValueError("kinds must not be empty")
    unknown = [k for k in kinds if k not in SEARCH_SPACES]
    if unknown:
        raise ValueError(f"unknown model kinds {unknown}; choose from {MODEL_KINDS}")
    rng = np.random.default_rng(seed)
    configs = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        configs.append(ModelConfig(kind=kind, params=SEARCH_SPACES[kind](rng), seed=seed))
    return configs


@dataclass(frozen=True)
class CandidateResult:
    """One trained candidate and its validation score.

    Attributes:
        config: The candidate's config.
        score: Validation score; higher is better.
        metric: Name of the score (``roc_auc``, ``roc_auc_ovr`` or ``neg_rmse``).
        name: Identifier of the candidate (e.g. its branch or task name).
    """

    config: ModelConfig
    score: float
    metric: str
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {
            "config": self.config.to_dict(),
            "score": self.score,
            "metric": self.metric,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateResult:
        """Build a result from :meth:`to_dict` output."""
        return cls(
            config=ModelConfig.from_dict(data["config"]),
            score=float(data["score"]),
            metric=str(data["metric"]),
            name=str(data.get("name", "")),
        )


def score_metric_name(schema: InputSchema) -> str:
    """Name of the metric :func:`score_candidate` returns for this schema."""
    if schema.task == "regression":
        return "neg_rmse"
    return "roc_auc" if len(schema.classes or ()) == 2 else "roc_auc_ovr"


def score_candidate(pipeline: Pipeline, valid_df: pd.DataFrame, schema: InputSchema) -> float:
    """Score a fitted pipeline on validation rows; higher is better.

    Binary classification: ROC AUC of the positive-class probability. Multi-class:
    macro one-vs-rest ROC AUC. Regression: negative RMSE.

    Args:
        pipeline: A fitted served pipeline.
        valid_df: Validation rows with features and target.
        schema: The model's input schema.

    Returns:
        The score.

    Raises:
        ValueError: If the validation rows hold a single class.
    """
    y = encode_target(valid_df[schema.target], schema)
    scores = predict_scores(pipeline, valid_df, schema)
    if schema.task == "regression":
        return -float(np.sqrt(mean_squared_error(y, scores)))
    if np.unique(y).size < 2:
        raise ValueError("validation rows hold a single class; ROC AUC is undefined")
    if scores.ndim == 1:
        return float(roc_auc_score(y, scores))
    return float(roc_auc_score(y, scores, multi_class="ovr", labels=np.arange(scores.shape[1])))


def select_best(results: Sequence[CandidateResult]) -> CandidateResult:
    """Return the best-scoring candidate.

    NaN scores rank last. Ties go to the kind listed first in :data:`MODEL_KINDS`,
    then to the smaller ``json.dumps(params, sort_keys=True)``, then to the smaller
    name, so the choice never depends on the order of ``results``.

    Args:
        results: Scored candidates (one metric).

    Returns:
        The selected candidate.

    Raises:
        ValueError: If ``results`` is empty or mixes metrics.
    """
    if not results:
        raise ValueError("no candidates to select from")
    metrics = {r.metric for r in results}
    if len(metrics) > 1:
        raise ValueError(f"candidates were scored with different metrics: {sorted(metrics)}")

    def key(result: CandidateResult) -> tuple[float, int, str, str]:
        score = -math.inf if math.isnan(result.score) else result.score
        return (
            -score,
            MODEL_KINDS.index(result.config.kind),
            json.dumps(result.config.params, sort_keys=True, default=str),
            result.name,
        )

    return min(results, key=key)
