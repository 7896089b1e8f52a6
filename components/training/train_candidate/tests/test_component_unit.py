"""train_candidate called directly: a validation score from the training rows only."""

from __future__ import annotations

import json

import pytest
from closedloop.components.conftest import FAST_CONFIG, Prepared, artifact_in, dataset_in
from closedloop.components.training.train_candidate.component import train_candidate
from kfp import dsl

from closedloop.ml.tune import CandidateResult


def run(prepared: Prepared, config: dict, **kwargs: object) -> CandidateResult:
    text = train_candidate.python_func(
        train=dataset_in(prepared.train),
        schema=artifact_in(dsl.Artifact, prepared.schema),
        features=artifact_in(dsl.Model, prepared.features),
        config=json.dumps(config),
        **kwargs,
    )
    return CandidateResult.from_dict(json.loads(text))


def test_scores_a_candidate(prepared: Prepared) -> None:
    result = run(prepared, FAST_CONFIG)
    assert result.config.to_dict() == FAST_CONFIG
    assert result.metric == "roc_auc"
    assert 0.6 < result.score <= 1.0


def test_the_score_is_reproducible_and_depends_on_the_inner_split(prepared: Prepared) -> None:
    config = {"kind": "logistic_regression", "params": {"C": 1.0}, "seed": 0}
    first = run(prepared, config, seed=0)
    assert run(prepared, config, seed=0).score == pytest.approx(first.score, abs=1e-12)
    assert run(prepared, config, seed=1, valid_fraction=0.3).score != first.score
