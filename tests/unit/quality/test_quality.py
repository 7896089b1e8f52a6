"""The quality contract: window metrics, a version's baseline, the degradation test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.drift.policy import DriftPolicy
from closedloop.drift.verdict import quality_degraded
from closedloop.ml.gate import METRICS
from closedloop.ml.schema import infer_schema
from closedloop.ml.train import ModelConfig, encode_target, predict_scores, train_model
from closedloop.quality import QualityBaseline, QualityError, QualityResult, assess, row_losses
from closedloop.quality.metrics import default_metric, window_metrics

POLICY = DriftPolicy()


@pytest.fixture(scope="module")
def fitted():
    train = generate_transactions(6000, seed=1)
    schema = infer_schema(train, DEFAULT_TARGET)
    model = train_model(
        train, schema, ModelConfig("xgboost", {"n_estimators": 60, "max_depth": 4}, seed=0)
    )
    holdout = generate_transactions(3000, seed=2)
    y = encode_target(holdout[DEFAULT_TARGET], schema)
    baseline = QualityBaseline.from_holdout(
        "classification", y, predict_scores(model, holdout, schema)
    )
    return schema, model, baseline


def _window(fitted, rows: int, seed: int, concept: float = 0.0) -> QualityResult:
    schema, model, baseline = fitted
    frame = generate_transactions(rows, seed=seed, concept_drift=concept)
    y = encode_target(frame[DEFAULT_TARGET], schema)
    return assess(baseline, y, predict_scores(model, frame, schema))


def test_window_metrics_are_the_gates_metrics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.clip(y * 0.6 + rng.random(500) * 0.4, 0, 1)
    got = window_metrics("classification", y, s)
    for name in ("roc_auc", "log_loss", "accuracy"):
        assert got[name] == pytest.approx(METRICS[name](y, s))
    # One class only: AUC says nothing, and is reported as NaN rather than raised.
    assert math.isnan(window_metrics("classification", np.zeros(10, int), s[:10])["roc_auc"])
    assert np.mean(row_losses("classification", y, s)) == pytest.approx(got["log_loss"], rel=1e-6)
    assert window_metrics("regression", np.array([1.0, 3.0]), np.array([2.0, 2.0]))["mae"] == 1.0


def test_default_metric_is_blind_to_nothing():
    assert default_metric("classification", 2) == "roc_auc"
    assert default_metric("classification", 5) == "accuracy"
    assert default_metric("regression") == "mae"


def test_concept_drift_degrades_and_the_same_concept_does_not(fitted):
    drifted = _window(fitted, 1000, seed=10, concept=1.0)
    assert drifted.metric == "roc_auc"
    assert drifted.drop > 0.1 and drifted.p_value < 1e-6
    assert quality_degraded(POLICY, drifted) is True
    healthy = [_window(fitted, 1000, seed=20 + i) for i in range(8)]
    # A healthy model at quality_p_value 0.01: at most one false alarm in eight windows.
    assert sum(bool(quality_degraded(POLICY, r)) for r in healthy) <= 1
    assert all(abs(r.drop) < 0.1 for r in healthy)


def test_too_few_labelled_rows_is_no_evidence(fitted):
    small = _window(fitted, 50, seed=30, concept=1.0)
    assert quality_degraded(POLICY, small) is None
    assert quality_degraded(DriftPolicy(min_labelled_rows=20), small) in (True, False)


def test_a_significant_but_tiny_drop_does_not_count():
    policy = DriftPolicy(min_quality_drop=0.05)
    result = QualityResult("roc_auc", 0.9, 0.89, 0.01, 1e-9, 0.3, 0.1, 1000)
    assert quality_degraded(policy, result) is False
    assert quality_degraded(policy, QualityResult("roc_auc", 0.9, 0.8, 0.1, 1e-9, 0.3, 0.1, 1000))


def test_baseline_save_load_gives_the_same_answer(fitted):
    schema, model, baseline = fitted
    back = QualityBaseline.from_json(baseline.to_json())
    frame = generate_transactions(800, seed=40, concept_drift=0.5)
    y = encode_target(frame[DEFAULT_TARGET], schema)
    scores = predict_scores(model, frame, schema)
    assert assess(back, y, scores) == assess(baseline, y, scores)
    result = assess(baseline, y, scores)
    assert QualityResult.from_dict(result.to_dict()) == result


def test_bad_baselines_and_metrics_are_refused(fitted):
    _, _, baseline = fitted
    with pytest.raises(QualityError, match="not valid JSON"):
        QualityBaseline.from_json(b"{")
    with pytest.raises(QualityError, match="losses"):
        QualityBaseline.from_dict({**baseline.to_dict(), "losses": []})
    with pytest.raises(QualityError, match="not measured for classification"):
        assess(baseline, np.array([0, 1]), np.array([0.2, 0.8]), metric="mae")
    with pytest.raises(QualityError, match="2 labels but 3 scores"):
        assess(baseline, np.array([0, 1]), np.array([0.2, 0.8, 0.5]))
