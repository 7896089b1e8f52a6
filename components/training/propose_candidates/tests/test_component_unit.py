"""propose_candidates called directly: a deterministic random search."""

from __future__ import annotations

import json

import pytest
from closedloop.components.training.propose_candidates.component import propose_candidates

from closedloop.ml.train import ModelConfig


def test_proposes_n_configs_taking_turns_over_kinds() -> None:
    proposed = propose_candidates.python_func(
        n_candidates=5, seed=3, kinds="xgboost, random_forest,logistic_regression"
    )
    assert len(proposed) == 5
    configs = [ModelConfig.from_dict(json.loads(text)) for text in proposed]
    assert [c.kind for c in configs] == [
        "xgboost",
        "random_forest",
        "logistic_regression",
        "xgboost",
        "random_forest",
    ]
    assert all(c.seed == 3 for c in configs)
    assert configs[0].params != configs[3].params  # two draws, not one repeated
    # JSON keeps integer hyperparameters integers.
    assert isinstance(configs[0].params["max_depth"], int)


def test_the_seed_decides_the_list() -> None:
    first = propose_candidates.python_func(n_candidates=4, seed=1, kinds="xgboost")
    assert propose_candidates.python_func(n_candidates=4, seed=1, kinds="xgboost") == first
    assert propose_candidates.python_func(n_candidates=4, seed=2, kinds="xgboost") != first


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model kinds"):
        propose_candidates.python_func(n_candidates=2, seed=0, kinds="xgboost,svm")
