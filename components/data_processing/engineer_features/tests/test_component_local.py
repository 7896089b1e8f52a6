"""engineer_features under kfp.local."""

import joblib
import pytest
from closedloop.components.conftest import Prepared, import_artifact, import_dataset, run_local
from closedloop.components.data_processing.engineer_features.component import engineer_features
from kfp import dsl

from closedloop.ml.train import feature_frame

pytestmark = pytest.mark.slow


@dsl.pipeline(name="engineer-features-local")
def engineer(train_uri: str, schema_uri: str) -> dsl.Model:
    train = import_dataset(train_uri)
    schema = import_artifact(schema_uri)
    return engineer_features(train=train.output, schema=schema.output).outputs["features"]


@pytest.fixture(scope="module")
def outputs(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_local(
        engineer,
        tmp_path_factory.mktemp("features-local"),
        train_uri=str(prepared.train),
        schema_uri=str(prepared.schema),
    )


def test_the_fitted_transformer_loads_and_transforms(outputs: dict, prepared: Prepared) -> None:
    features = outputs["Output"]
    fitted = joblib.load(features.path)
    holdout = feature_frame(prepared.frame("holdout"), prepared.input_schema())
    matrix = fitted.transform(holdout)
    assert matrix.shape == (len(holdout), features.metadata["outputs"])
    assert features.metadata["engineer"] is True
