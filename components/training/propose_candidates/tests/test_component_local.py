"""propose_candidates under kfp.local."""

import json

import pytest
from closedloop.components.conftest import run_local
from closedloop.components.training.propose_candidates.component import propose_candidates
from kfp import dsl

pytestmark = pytest.mark.slow


@dsl.pipeline(name="propose-candidates-local")
def propose(n: int, seed: int) -> list:
    return propose_candidates(n_candidates=n, seed=seed, kinds="xgboost,random_forest").output


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_local(propose, tmp_path_factory.mktemp("propose-local"), n=3, seed=4)


def test_proposes_the_same_list_as_a_direct_call(outputs: dict) -> None:
    proposed = outputs["Output"]
    assert proposed == propose_candidates.python_func(
        n_candidates=3, seed=4, kinds="xgboost,random_forest"
    )
    assert [json.loads(c)["kind"] for c in proposed] == ["xgboost", "random_forest", "xgboost"]
