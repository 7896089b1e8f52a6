"""train_model under kfp.local."""

import json

import joblib
import pytest
from closedloop.components.conftest import (
    FAST_CONFIG,
    Prepared,
    import_artifact,
    import_dataset,
    run_local,
)
from closedloop.components.training.train_model.component import train_model
from kfp import dsl

from closedloop.ml.train import predict_scores

pytestmark = pytest.mark.slow


@dsl.pipeline(name="train-model-local")
def train(train_uri: str, schema_uri: str, features_uri: str, config: str) -> dsl.Model:
    task = train_model(
        train=import_dataset(train_uri).output,
        schema=import_artifact(schema_uri).output,
        features=import_artifact(features_uri, dsl.Model).output,
        config=config,
    )
    return task.outputs["model"]


@pytest.fixture(scope="module")
def outputs(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_local(
        train,
        tmp_path_factory.mktemp("train-local"),
        train_uri=str(prepared.train),
        schema_uri=str(prepared.schema),
        features_uri=str(prepared.features),
        config=json.dumps(FAST_CONFIG),
    )


def test_the_model_scores_the_holdout(outputs: dict, prepared: Prepared) -> None:
    model = outputs["Output"]
    assert model.metadata["kind"] == "xgboost"
    assert model.metadata["config"] == FAST_CONFIG
    pipeline = joblib.load(model.path)
    holdout = prepared.frame("holdout")
    scores = predict_scores(pipeline, holdout, prepared.input_schema())
    labels = holdout["is_fraud"].to_numpy()
    assert scores[labels == 1].mean() > scores[labels == 0].mean()
