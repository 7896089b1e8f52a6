"""select_best_candidate called directly: the best score wins, ties deterministically."""

from __future__ import annotations

import json
from pathlib import Path

from closedloop.components.conftest import artifact_out
from closedloop.components.training.select_best_candidate.component import select_best_candidate
from kfp import dsl


def result(kind: str, params: dict, score: float) -> str:
    config = {"kind": kind, "params": params, "seed": 0}
    return json.dumps({"config": config, "score": score, "metric": "roc_auc", "name": ""})


def test_picks_the_highest_score_and_ranks_all(tmp_path: Path) -> None:
    results = [
        result("random_forest", {"n_estimators": 100}, 0.81),
        result("xgboost", {"max_depth": 4}, 0.87),
        result("logistic_regression", {"C": 1.0}, 0.79),
    ]
    leaderboard = artifact_out(dsl.Markdown, tmp_path, "leaderboard")
    best = select_best_candidate.python_func(results=results, leaderboard=leaderboard)
    assert json.loads(best) == {"kind": "xgboost", "params": {"max_depth": 4}, "seed": 0}
    table = Path(leaderboard.path).read_text()
    assert table.startswith("# Candidates (roc_auc, higher is better)")
    ranked = [line for line in table.splitlines() if line.startswith("| ") and "rank" not in line]
    assert [line.split("|")[2].strip() for line in ranked] == [
        "xgboost",
        "random_forest",
        "logistic_regression",
    ]
    assert "| 1 | xgboost | 0.8700 |" in table


def test_ties_do_not_depend_on_order(tmp_path: Path) -> None:
    a = result("logistic_regression", {"C": 2.0}, 0.8)
    b = result("xgboost", {"max_depth": 3}, 0.8)
    first = select_best_candidate.python_func(
        results=[a, b], leaderboard=artifact_out(dsl.Markdown, tmp_path, "one")
    )
    second = select_best_candidate.python_func(
        results=[b, a], leaderboard=artifact_out(dsl.Markdown, tmp_path, "two")
    )
    assert first == second
