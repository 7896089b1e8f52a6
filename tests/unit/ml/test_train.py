import json
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier, XGBRegressor

from closedloop.data import DEFAULT_TARGET
from closedloop.ml.features import TabularFeatures
from closedloop.ml.schema import ColumnSpec, InputSchema, check_frame
from closedloop.ml.train import (
    MODEL_KINDS,
    ModelConfig,
    build_pipeline,
    encode_target,
    predict_scores,
    train_model,
)

SMALL_PARAMS = {
    "xgboost": {"n_estimators": 40, "max_depth": 3, "n_jobs": 1},
    "random_forest": {"n_estimators": 40, "min_samples_leaf": 5},
    "logistic_regression": {"C": 1.0},
    "gradient_boosting": {"max_iter": 40},
}


def test_model_config_round_trip_and_immutability():
    params = {"n_estimators": 10, "max_depth": None}
    config = ModelConfig("random_forest", params, seed=7)
    params["n_estimators"] = 999
    assert config.params["n_estimators"] == 10
    restored = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert hash(restored) == hash(config)
    with pytest.raises(ValueError, match="unknown model kind"):
        ModelConfig("svm")  # type: ignore[arg-type]


def test_build_pipeline_steps_per_kind_and_task(schema):
    regression = InputSchema(schema.columns, "y", "regression")
    expected = {
        "xgboost": (XGBClassifier, XGBRegressor),
        "random_forest": (RandomForestClassifier, None),
        "logistic_regression": (LogisticRegression, Ridge),
        "gradient_boosting": (None, HistGradientBoostingRegressor),
    }
    for kind, (classifier, regressor) in expected.items():
        pipeline = build_pipeline(schema, ModelConfig(kind, seed=3))
        assert [name for name, _ in pipeline.steps] == ["features", "model"]
        assert isinstance(pipeline.named_steps["features"], TabularFeatures)
        model = pipeline.named_steps["model"]
        final = model.steps[-1][1] if isinstance(model, Pipeline) else model
        if classifier is not None:
            assert isinstance(final, classifier)
        if regressor is not None:
            reg_model = build_pipeline(regression, ModelConfig(kind)).named_steps["model"]
            reg_final = reg_model.steps[-1][1] if isinstance(reg_model, Pipeline) else reg_model
            assert isinstance(reg_final, regressor)
    xgb = build_pipeline(schema, ModelConfig("xgboost", {"max_depth": 2}, seed=3)).named_steps[
        "model"
    ]
    assert xgb.get_params()["max_depth"] == 2 and xgb.get_params()["random_state"] == 3
    ridge = build_pipeline(regression, ModelConfig("logistic_regression", {"C": 4.0}))
    assert ridge.named_steps["model"].named_steps["estimator"].alpha == pytest.approx(0.25)


def test_unknown_hyperparameter_is_rejected(schema):
    with pytest.raises(ValueError, match="not_a_param"):
        build_pipeline(schema, ModelConfig("xgboost", {"not_a_param": 1}))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_kind_learns_the_fraud_pattern(kind, schema, train_frame, holdout_frame):
    pipeline = train_model(train_frame, schema, ModelConfig(kind, SMALL_PARAMS[kind]))
    scores = predict_scores(pipeline, holdout_frame, schema)
    assert scores.shape == (len(holdout_frame),)
    assert roc_auc_score(holdout_frame[DEFAULT_TARGET], scores) > 0.75


def test_served_path_matches_training_path(xgb_pipeline, schema, holdout_frame):
    """Rows sent as JSON strings go through the same fitted preprocessing as a frame."""
    rows = holdout_frame.head(50)
    as_json = json.loads(
        json.dumps(
            rows[list(schema.feature_names)]
            .assign(transaction_time=rows["transaction_time"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
            .to_numpy()
            .tolist()
        )
    )
    served = check_frame(np.array(as_json), schema).frame
    np.testing.assert_allclose(
        xgb_pipeline.predict_proba(served)[:, 1], predict_scores(xgb_pipeline, rows, schema)
    )


def test_pipeline_survives_pickle(xgb_pipeline, schema, holdout_frame):
    restored = pickle.loads(pickle.dumps(xgb_pipeline))
    np.testing.assert_array_equal(
        predict_scores(restored, holdout_frame, schema),
        predict_scores(xgb_pipeline, holdout_frame, schema),
    )


def test_encode_target(schema):
    np.testing.assert_array_equal(encode_target(pd.Series([0, 1, 1.0, "1"]), schema), [0, 1, 1, 1])
    with pytest.raises(ValueError, match="row 1: label 2"):
        encode_target(pd.Series([0, 2]), schema)
    with pytest.raises(ValueError, match="missing"):
        encode_target(pd.Series([0, np.nan]), schema)


def test_train_model_rejects_bad_training_data(schema, train_frame):
    with pytest.raises(ValueError, match="single class"):
        train_model(train_frame[train_frame[DEFAULT_TARGET] == 0], schema, ModelConfig("xgboost"))
    with pytest.raises(ValueError, match="target column"):
        train_model(train_frame.drop(columns=[DEFAULT_TARGET]), schema, ModelConfig("xgboost"))
    with pytest.raises(ValueError, match=r"feature columns missing.*amount"):
        train_model(train_frame.drop(columns=["amount"]), schema, ModelConfig("xgboost"))


def test_regression_and_multiclass_tasks():
    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(["a", "b"], n)})
    df["y"] = 3 * df["x"] + (df["c"] == "a") + rng.normal(0, 0.1, n)
    columns = (ColumnSpec("x", "numeric"), ColumnSpec("c", "categorical", allowed=("a", "b")))
    regression = InputSchema(columns, "y", "regression")
    for kind in MODEL_KINDS:
        pipeline = train_model(df, regression, ModelConfig(kind, SMALL_PARAMS[kind]))
        residual = predict_scores(pipeline, df, regression) - df["y"]
        assert np.sqrt(np.mean(residual**2)) < 0.5 * df["y"].std(), kind
    df["label"] = np.select([df["x"] < -0.5, df["x"] > 0.5], ["low", "high"], "mid")
    multiclass = InputSchema(columns, "label", "classification", ("high", "low", "mid"))
    pipeline = train_model(df, multiclass, ModelConfig("xgboost", SMALL_PARAMS["xgboost"]))
    probabilities = predict_scores(pipeline, df, multiclass)
    assert probabilities.shape == (n, 3)
    predicted = np.asarray(multiclass.classes)[probabilities.argmax(axis=1)]
    assert (predicted == df["label"]).mean() > 0.9
