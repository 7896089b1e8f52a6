import itertools
import json
import math

import numpy as np
import pytest

from closedloop.data import DEFAULT_TARGET
from closedloop.ml.schema import ColumnSpec, InputSchema
from closedloop.ml.train import MODEL_KINDS, ModelConfig, build_pipeline, train_model
from closedloop.ml.tune import (
    CandidateResult,
    candidate_configs,
    score_candidate,
    score_metric_name,
    select_best,
)


def test_candidate_configs_are_deterministic_and_cover_kinds():
    first = candidate_configs(8, seed=5)
    assert first == candidate_configs(8, seed=5)
    assert first != candidate_configs(8, seed=6)
    assert [c.kind for c in first] == [*MODEL_KINDS, *MODEL_KINDS]
    assert all(c.seed == 5 for c in first)
    json.dumps([c.to_dict() for c in first])
    assert len({json.dumps(c.params, sort_keys=True) for c in first}) == 8
    assert candidate_configs(0, seed=1) == []
    only = candidate_configs(3, seed=1, kinds=("logistic_regression",))
    assert {c.kind for c in only} == {"logistic_regression"}


def test_every_candidate_builds_for_both_tasks(schema):
    regression = InputSchema((ColumnSpec("x", "numeric"),), "y", "regression")
    for config in candidate_configs(12, seed=0):
        build_pipeline(schema, config)
        build_pipeline(regression, config)


def test_candidate_configs_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown model kinds"):
        candidate_configs(2, seed=0, kinds=("svm",))
    with pytest.raises(ValueError):
        candidate_configs(-1, seed=0)
    with pytest.raises(ValueError):
        candidate_configs(1, seed=0, kinds=())


def test_score_candidate_prefers_a_real_model(schema, train_frame, holdout_frame, xgb_pipeline):
    real = score_candidate(xgb_pipeline, holdout_frame, schema)
    rng = np.random.default_rng(0)
    shuffled = train_frame.assign(**{DEFAULT_TARGET: rng.permutation(train_frame[DEFAULT_TARGET])})
    noise = train_model(shuffled, schema, ModelConfig("logistic_regression"))
    assert score_metric_name(schema) == "roc_auc"
    assert real > 0.8
    assert abs(score_candidate(noise, holdout_frame, schema) - 0.5) < 0.1
    with pytest.raises(ValueError, match="single class"):
        score_candidate(xgb_pipeline, holdout_frame[holdout_frame[DEFAULT_TARGET] == 0], schema)


def test_score_candidate_regression_is_negative_rmse():
    rng = np.random.default_rng(1)
    import pandas as pd

    df = pd.DataFrame({"x": rng.normal(size=300)})
    df["y"] = 2 * df["x"] + rng.normal(0, 0.5, 300)
    schema = InputSchema((ColumnSpec("x", "numeric"),), "y", "regression")
    pipeline = train_model(df, schema, ModelConfig("logistic_regression"))
    score = score_candidate(pipeline, df, schema)
    assert score_metric_name(schema) == "neg_rmse"
    assert -0.6 < score < -0.4


def _result(kind, score, name="", **params):
    return CandidateResult(ModelConfig(kind, params), score, "roc_auc", name)


def test_select_best_takes_the_highest_score_whatever_the_order():
    results = [
        _result("xgboost", 0.80, "a"),
        _result("random_forest", 0.91, "b"),
        _result("gradient_boosting", float("nan"), "c"),
        _result("logistic_regression", 0.85, "d"),
    ]
    for order in itertools.permutations(results):
        assert select_best(order).name == "b"


def test_select_best_breaks_ties_deterministically():
    tied = [
        _result("random_forest", 0.9, "rf"),
        _result("xgboost", 0.9, "x2", max_depth=5),
        _result("xgboost", 0.9, "x1", max_depth=3),
    ]
    winners = {select_best(order).name for order in itertools.permutations(tied)}
    assert winners == {"x1"}


def test_select_best_rejects_empty_or_mixed_input():
    with pytest.raises(ValueError, match="no candidates"):
        select_best([])
    mixed = [_result("xgboost", 0.9), CandidateResult(ModelConfig("xgboost"), -1.0, "neg_rmse")]
    with pytest.raises(ValueError, match="different metrics"):
        select_best(mixed)


def test_candidate_result_round_trip():
    result = _result("xgboost", 0.75, "branch-1", max_depth=4)
    restored = CandidateResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert restored == result
    assert math.isclose(restored.score, 0.75)
