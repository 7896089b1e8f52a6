"""train_model called directly: one served pipeline around the fitted feature step."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
from closedloop.components.conftest import (
    FAST_CONFIG,
    Prepared,
    artifact_in,
    artifact_out,
    dataset_in,
)
from closedloop.components.training.train_model.component import train_model
from kfp import dsl
from sklearn.pipeline import Pipeline

from closedloop.ml.train import feature_frame, predict_scores


def run(prepared: Prepared, tmp_path: Path, config: dict) -> dsl.Model:
    model = artifact_out(dsl.Model, tmp_path, "model")
    train_model.python_func(
        train=dataset_in(prepared.train),
        schema=artifact_in(dsl.Artifact, prepared.schema),
        features=artifact_in(dsl.Model, prepared.features),
        config=json.dumps(config),
        model=model,
    )
    return model


def test_trains_features_plus_estimator(prepared: Prepared, tmp_path: Path) -> None:
    model = run(prepared, tmp_path, FAST_CONFIG)
    pipeline = joblib.load(model.path)
    assert isinstance(pipeline, Pipeline)
    assert [name for name, _ in pipeline.steps] == ["features", "model"]
    assert type(pipeline.named_steps["model"]).__name__ == "XGBClassifier"
    assert model.metadata == {"kind": "xgboost", "config": FAST_CONFIG, "framework": "xgboost"}
    # The feature step is the one engineer_features fitted, not a refit.
    schema = prepared.input_schema()
    holdout = prepared.frame("holdout")
    fitted = joblib.load(prepared.features)
    np.testing.assert_array_equal(
        np.asarray(pipeline.named_steps["features"].transform(feature_frame(holdout, schema))),
        np.asarray(fitted.transform(feature_frame(holdout, schema))),
    )
    scores = predict_scores(pipeline, holdout, schema)
    assert scores.shape == (len(holdout),)
    assert ((scores >= 0) & (scores <= 1)).all()
    # It learned something: fraud rows score higher on average.
    labels = holdout["is_fraud"].to_numpy()
    assert scores[labels == 1].mean() > scores[labels == 0].mean()


def test_sklearn_kinds_are_labelled_scikit_learn(prepared: Prepared, tmp_path: Path) -> None:
    config = {"kind": "logistic_regression", "params": {"C": 0.5}, "seed": 0}
    model = run(prepared, tmp_path, config)
    pipeline = joblib.load(model.path)
    estimator = pipeline.named_steps["model"]
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    assert type(final).__name__ == "LogisticRegression"
    assert final.C == 0.5
    assert model.metadata["framework"] == "scikit-learn"
    assert model.metadata["kind"] == "logistic_regression"
