"""evaluate_model under kfp.local."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from closedloop.components.conftest import Prepared, import_artifact, import_dataset, run_local
from closedloop.components.evaluation.evaluate_model.component import evaluate_model
from kfp import dsl

pytestmark = pytest.mark.slow


class Evaluated(NamedTuple):
    metrics: dsl.Metrics
    classification_metrics: dsl.ClassificationMetrics
    report: dsl.HTML
    evaluation: dsl.Artifact


@dsl.pipeline(name="evaluate-model-local")
def evaluate(model_uri: str, holdout_uri: str, schema_uri: str) -> Evaluated:
    task = evaluate_model(
        model=import_artifact(model_uri, dsl.Model).output,
        holdout=import_dataset(holdout_uri).output,
        schema=import_artifact(schema_uri).output,
    )
    return Evaluated(
        task.outputs["metrics"],
        task.outputs["classification_metrics"],
        task.outputs["report"],
        task.outputs["evaluation"],
    )


@pytest.fixture(scope="module")
def outputs(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_local(
        evaluate,
        tmp_path_factory.mktemp("evaluate-local"),
        model_uri=str(prepared.model),
        holdout_uri=str(prepared.holdout),
        schema_uri=str(prepared.schema),
    )


def test_metrics_curves_report_and_json(outputs: dict, prepared: Prepared) -> None:
    expected = json.loads(prepared.evaluation.read_text())["metrics"]
    assert outputs["metrics"].metadata == pytest.approx(expected)
    result = json.loads(Path(outputs["evaluation"].path).read_text())
    assert result["metrics"] == pytest.approx(expected)
    curves = outputs["classification_metrics"].metadata
    assert len(curves["confidenceMetrics"]) > 10
    assert len(curves["confusionMatrix"]["rows"]) == 2
    assert "data:image/png;base64," in Path(outputs["report"].path).read_text()
