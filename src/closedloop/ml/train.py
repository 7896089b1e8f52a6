"""Model configuration, the served pipeline, and training.

The served artifact is one scikit-learn :class:`~sklearn.pipeline.Pipeline` with two
steps, ``("features", TabularFeatures)`` and ``("model", estimator)``. It takes a
frame of the schema's feature columns (see :mod:`closedloop.ml.schema` for dtypes)
and, for classification, predicts class *indices* ``0..K-1`` into
``schema.classes``; :func:`encode_target` does the mapping for training labels.

Estimators per ``kind`` (classification / regression):

* ``xgboost``: ``XGBClassifier`` / ``XGBRegressor`` (``tree_method="hist"``);
  ``n_jobs=None`` lets XGBoost use every core OpenMP allows, so training takes all
  cores and a server started with ``OMP_NUM_THREADS=1`` runs single-threaded;
* ``random_forest``: ``RandomForestClassifier`` / ``RandomForestRegressor``;
* ``logistic_regression``: standardisation then ``LogisticRegression`` / ``Ridge``;
* ``gradient_boosting``: ``HistGradientBoostingClassifier`` / ``...Regressor`` (the
  histogram variant: the classic one is far slower for no gain here).

``ModelConfig.params`` override the defaults below and go to the final estimator's
``set_params``; a name the estimator's ``get_params`` does not list is refused (XGBoost
would otherwise accept it silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier, XGBRegressor

from closedloop.ml.features import make_features
from closedloop.ml.schema import InputSchema

ModelKind = Literal["xgboost", "random_forest", "logistic_regression", "gradient_boosting"]
MODEL_KINDS: tuple[str, ...] = (
    "xgboost",
    "random_forest",
    "logistic_regression",
    "gradient_boosting",
)


@dataclass(frozen=True)
class ModelConfig:
    """Which estimator to train, with which hyperparameters and seed.

    Attributes:
        kind: One of :data:`MODEL_KINDS`.
        params: Hyperparameters passed to the estimator (JSON-serializable values).
        seed: Random seed of the estimator.
    """

    kind: ModelKind
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; choose from {MODEL_KINDS}")
        # A private copy keeps the frozen config from changing under the caller's dict.
        object.__setattr__(self, "params", dict(self.params))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {"kind": self.kind, "params": dict(self.params), "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build a config from :meth:`to_dict` output."""
        return cls(kind=data["kind"], params=dict(data.get("params", {})), seed=int(data["seed"]))


def _default_estimator(kind: str, task: str, seed: int) -> BaseEstimator:
    classification = task == "classification"
    if kind == "xgboost":
        common = {
            "n_estimators": 200,
            "max_depth": 4,
            "learning_rate": 0.1,
            "subsample": 0.9,
            "colsample_bytree": 0.9,
            "tree_method": "hist",
            "n_jobs": None,
            "random_state": seed,
        }
        if classification:
            return XGBClassifier(eval_metric="logloss", **common)
        return XGBRegressor(**common)
    if kind == "random_forest":
        cls = RandomForestClassifier if classification else RandomForestRegressor
        return cls(n_estimators=200, min_samples_leaf=2, random_state=seed)
    if kind == "logistic_regression":
        if classification:
            return LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
        return Ridge(alpha=1.0)
    cls = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
    return cls(max_iter=200, learning_rate=0.1, random_state=seed)


def make_estimator(config: ModelConfig, schema: InputSchema) -> BaseEstimator:
    """Build the unfitted ``model`` step for a config and the schema's task.

    Args:
        config: Estimator kind, hyperparameters and seed.
        schema: Decides classification or regression.

    For regression, ``logistic_regression`` is ``Ridge`` and a ``C`` parameter (the
    inverse regularisation strength of the classifier) becomes ``alpha = 1 / C``, so
    one search space serves both tasks.

    Returns:
        An estimator; for ``logistic_regression`` a scaler + linear model pipeline.

    Raises:
        ValueError: If a parameter name is not one of the estimator's.
    """
    estimator = _default_estimator(config.kind, schema.task, config.seed)
    params = dict(config.params)
    if config.kind == "logistic_regression" and schema.task == "regression" and "C" in params:
        params["alpha"] = 1.0 / float(params.pop("C"))
    # XGBoost would take any name and ignore it with a warning at fit time: refuse early.
    unknown = sorted(set(params) - set(estimator.get_params(deep=False)))
    if unknown:
        raise ValueError(
            f"unknown parameters {unknown} for {config.kind} ({type(estimator).__name__})"
        )
    estimator.set_params(**params)
    if config.kind == "logistic_regression":
        return Pipeline([("scale", StandardScaler()), ("estimator", estimator)])
    return estimator


def build_pipeline(schema: InputSchema, config: ModelConfig, engineer: bool = True) -> Pipeline:
    """Build the unfitted served pipeline: feature step then model.

    Args:
        schema: The model's input schema.
        config: Estimator kind, hyperparameters and seed.
        engineer: Whether the feature step adds engineered features.

    Returns:
        ``Pipeline([("features", ...), ("model", ...)])``.
    """
    return Pipeline(
        [
            ("features", make_features(schema, engineer=engineer)),
            ("model", make_estimator(config, schema)),
        ]
    )


def feature_frame(df: pd.DataFrame, schema: InputSchema) -> pd.DataFrame:
    """Select the schema's feature columns, in order.

    Raises:
        ValueError: If a feature column is missing.
    """
    missing = [c for c in schema.feature_names if c not in df.columns]
    if missing:
        raise ValueError(f"feature columns missing from frame: {missing}")
    return df.loc[:, list(schema.feature_names)]


def encode_target(values: pd.Series, schema: InputSchema) -> np.ndarray:
    """Map labels to model targets: class indices, or floats for regression.

    Args:
        values: The target column.
        schema: Provides the task and the class order.

    Returns:
        ``int64`` class indices into ``schema.classes``, or ``float64`` values.

    Raises:
        ValueError: On missing labels or a label not in ``schema.classes``.
    """
    if values.isna().any():
        raise ValueError(
            f"target {schema.target!r} has {int(values.isna().sum())} missing values; "
            "drop them (clean_dataset does) before training or scoring"
        )
    if schema.task == "regression":
        return values.to_numpy(dtype=np.float64)
    classes = schema.classes or ()
    # Labels that came back from CSV as strings still match their classes.
    index = {str(c): i for i, c in enumerate(classes)}
    index.update({c: i for i, c in enumerate(classes)})
    encoded = np.empty(len(values), dtype=np.int64)
    for position, label in enumerate(values.to_numpy()):
        key = label.item() if isinstance(label, np.generic) else label
        if key not in index:
            raise ValueError(
                f"target {schema.target!r} row {position}: label {key!r} is not one of "
                f"{list(classes)}"
            )
        encoded[position] = index[key]
    return encoded


def predict_scores(pipeline: Pipeline, df: pd.DataFrame, schema: InputSchema) -> np.ndarray:
    """Score rows: positive-class probability (binary), class probabilities, or values.

    Args:
        pipeline: A fitted served pipeline.
        df: Rows holding the feature columns (other columns are ignored).
        schema: The model's input schema.

    Returns:
        Shape ``(n,)`` for binary classification and regression, ``(n, K)`` for
        multi-class classification.
    """
    features = feature_frame(df, schema)
    if schema.task == "regression":
        return np.asarray(pipeline.predict(features), dtype=np.float64)
    probabilities = np.asarray(pipeline.predict_proba(features), dtype=np.float64)
    if probabilities.shape[1] == 2:
        return probabilities[:, 1]
    # float32 model outputs: renormalise so rows sum to 1 in float64.
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def train_model(
    train_df: pd.DataFrame, schema: InputSchema, config: ModelConfig, engineer: bool = True
) -> Pipeline:
    """Fit the served pipeline on training rows.

    Args:
        train_df: Cleaned rows with the feature columns and the target.
        schema: The model's input schema.
        config: Estimator kind, hyperparameters and seed.
        engineer: Whether the feature step adds engineered features.

    Returns:
        The fitted pipeline.

    Raises:
        ValueError: If columns or labels are missing, or a classification target has
            a single class.
    """
    if schema.target not in train_df.columns:
        raise ValueError(f"target column {schema.target!r} not in training frame")
    y = encode_target(train_df[schema.target], schema)
    if schema.task == "classification" and np.unique(y).size < 2:
        raise ValueError("training rows hold a single class; a classifier needs two or more")
    pipeline = build_pipeline(schema, config, engineer=engineer)
    pipeline.fit(feature_frame(train_df, schema), y)
    return pipeline
