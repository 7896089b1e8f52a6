"""explain_model under kfp.local."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from closedloop.components.conftest import Prepared, import_artifact, import_dataset, run_local
from closedloop.components.evaluation.explain_model.component import explain_model
from kfp import dsl

pytestmark = pytest.mark.slow


class Explained(NamedTuple):
    explanation: dsl.Artifact
    summary: dsl.Markdown
    chart: dsl.HTML


@dsl.pipeline(name="explain-model-local")
def explain(model_uri: str, holdout_uri: str, schema_uri: str) -> Explained:
    task = explain_model(
        model=import_artifact(model_uri, dsl.Model).output,
        holdout=import_dataset(holdout_uri).output,
        schema=import_artifact(schema_uri).output,
        max_rows=200,
    )
    return Explained(task.outputs["explanation"], task.outputs["summary"], task.outputs["chart"])


@pytest.fixture(scope="module")
def outputs(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_local(
        explain,
        tmp_path_factory.mktemp("explain-local"),
        model_uri=str(prepared.model),
        holdout_uri=str(prepared.holdout),
        schema_uri=str(prepared.schema),
    )


def test_attributions_for_every_input(outputs: dict, prepared: Prepared) -> None:
    result = json.loads(Path(outputs["explanation"].path).read_text())
    assert result["method"] == "xgboost_shap" == outputs["explanation"].metadata["method"]
    assert result["n_rows"] == 200
    assert {n for n, _ in result["importances"]} == set(prepared.input_schema().feature_names)
    top = outputs["explanation"].metadata["top"][0]
    assert f"`{top}`" in Path(outputs["summary"].path).read_text()
    assert "data:image/png;base64," in Path(outputs["chart"].path).read_text()
