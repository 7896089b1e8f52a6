"""select_best_candidate under kfp.local."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from closedloop.components.conftest import run_local
from closedloop.components.training.select_best_candidate.component import select_best_candidate
from kfp import dsl

pytestmark = pytest.mark.slow


class Selected(NamedTuple):
    best: str
    leaderboard: dsl.Markdown


@dsl.pipeline(name="select-best-candidate-local")
def select(results: list) -> Selected:
    task = select_best_candidate(results=results)
    return Selected(task.outputs["Output"], task.outputs["leaderboard"])


def result(kind: str, score: float) -> str:
    config = {"kind": kind, "params": {}, "seed": 0}
    return json.dumps({"config": config, "score": score, "metric": "roc_auc", "name": ""})


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    results = [result("random_forest", 0.83), result("xgboost", 0.91), result("xgboost", 0.5)]
    return run_local(select, tmp_path_factory.mktemp("select-local"), results=results)


def test_keeps_the_best_and_ranks_all(outputs: dict) -> None:
    assert json.loads(outputs["best"]) == {"kind": "xgboost", "params": {}, "seed": 0}
    table = Path(outputs["leaderboard"].path).read_text()
    assert "| 1 | xgboost | 0.9100 |" in table
    assert "| 2 | random_forest | 0.8300 |" in table
    assert "| 3 | xgboost | 0.5000 |" in table
