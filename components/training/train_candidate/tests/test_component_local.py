"""train_candidate under kfp.local."""

import json

import pytest
from closedloop.components.conftest import (
    FAST_CONFIG,
    Prepared,
    import_artifact,
    import_dataset,
    run_local,
)
from closedloop.components.training.train_candidate.component import train_candidate
from kfp import dsl

pytestmark = pytest.mark.slow


@dsl.pipeline(name="train-candidate-local")
def candidate(train_uri: str, schema_uri: str, features_uri: str, config: str) -> str:
    return train_candidate(
        train=import_dataset(train_uri).output,
        schema=import_artifact(schema_uri).output,
        features=import_artifact(features_uri, dsl.Model).output,
        config=config,
    ).output


@pytest.fixture(scope="module")
def outputs(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_local(
        candidate,
        tmp_path_factory.mktemp("candidate-local"),
        train_uri=str(prepared.train),
        schema_uri=str(prepared.schema),
        features_uri=str(prepared.features),
        config=json.dumps(FAST_CONFIG),
    )


def test_returns_the_scored_candidate(outputs: dict, prepared: Prepared) -> None:
    result = json.loads(outputs["Output"])
    assert result["config"] == FAST_CONFIG
    assert result["metric"] == "roc_auc"
    assert 0.6 < result["score"] <= 1.0
