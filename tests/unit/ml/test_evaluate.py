import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from closedloop.data import DEFAULT_TARGET
from closedloop.ml.evaluate import MAX_ROC_POINTS, EvaluationResult, evaluate_model
from closedloop.ml.schema import ColumnSpec, InputSchema
from closedloop.ml.train import ModelConfig, predict_scores, train_model


def test_classification_metrics_and_curves(xgb_pipeline, holdout_frame, schema):
    result = evaluate_model(xgb_pipeline, holdout_frame, schema)
    assert set(result.metrics) == {"accuracy", "f1", "precision", "recall", "log_loss", "roc_auc"}
    scores = predict_scores(xgb_pipeline, holdout_frame, schema)
    assert result.metrics["roc_auc"] == pytest.approx(
        roc_auc_score(holdout_frame[DEFAULT_TARGET], scores)
    )
    assert 0.0 <= result.metrics["f1"] <= 1.0
    assert result.n_rows == len(holdout_frame)
    fpr, tpr, thresholds = result.roc_curve
    assert 2 <= len(fpr) <= MAX_ROC_POINTS
    assert len(fpr) == len(tpr) == len(thresholds)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert all(np.isfinite(thresholds))
    matrix = np.asarray(result.confusion_matrix)
    assert matrix.sum() == len(holdout_frame)
    assert matrix[1].sum() == holdout_frame[DEFAULT_TARGET].sum()
    assert result.labels == ["0", "1"]
    assert (matrix.trace() / matrix.sum()) == pytest.approx(result.metrics["accuracy"])
    edges = result.histogram["edges"]
    assert sum(result.histogram["true 0"]) + sum(result.histogram["true 1"]) == len(holdout_frame)
    assert edges[0] == 0.0 and edges[-1] == 1.0


def test_roc_curve_is_downsampled_on_large_holdouts(xgb_pipeline, schema):
    from closedloop.data import generate_transactions

    result = evaluate_model(xgb_pipeline, generate_transactions(20_000, seed=9), schema)
    assert len(result.roc_curve[0]) <= MAX_ROC_POINTS


def test_single_class_holdout_has_no_auc(xgb_pipeline, holdout_frame, schema):
    negatives = holdout_frame[holdout_frame[DEFAULT_TARGET] == 0]
    result = evaluate_model(xgb_pipeline, negatives, schema)
    assert "roc_auc" not in result.metrics
    assert result.roc_curve is None
    with pytest.raises(ValueError, match="empty"):
        evaluate_model(xgb_pipeline, holdout_frame.head(0), schema)


def test_round_trip_and_html(xgb_pipeline, holdout_frame, schema):
    result = evaluate_model(xgb_pipeline, holdout_frame, schema)
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert EvaluationResult.from_dict(json.loads(text)) == result
    page = result.to_html(title="Holdout <2026>")
    assert "Holdout &lt;2026&gt;" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3
    assert "http" not in page
    assert "roc_auc" in page


def test_regression_metrics():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=400)})
    df["y"] = 2 * df["x"] + rng.normal(0, 0.3, 400)
    schema = InputSchema((ColumnSpec("x", "numeric"),), "y", "regression")
    pipeline = train_model(df, schema, ModelConfig("logistic_regression"))
    result = evaluate_model(pipeline, df, schema)
    assert set(result.metrics) == {"rmse", "mae", "r2"}
    assert result.metrics["r2"] > 0.9
    assert result.metrics["mae"] <= result.metrics["rmse"] < 0.4
    assert result.roc_curve is None and result.confusion_matrix == []
    assert sum(result.histogram["residuals"]) == 400
    assert len(re.findall(r"data:image/png;base64", result.to_html())) == 1


def test_multiclass_metrics():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=600)})
    df["label"] = np.select([df["x"] < -0.5, df["x"] > 0.5], ["low", "high"], "mid")
    schema = InputSchema(
        (ColumnSpec("x", "numeric"),), "label", "classification", ("high", "low", "mid")
    )
    pipeline = train_model(df, schema, ModelConfig("xgboost", {"n_estimators": 30, "n_jobs": 1}))
    result = evaluate_model(pipeline, df, schema)
    assert result.metrics["accuracy"] > 0.9
    assert result.metrics["roc_auc"] > 0.95
    assert np.asarray(result.confusion_matrix).shape == (3, 3)
    assert result.labels == ["high", "low", "mid"]
    assert result.roc_curve is None
