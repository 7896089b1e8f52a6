"""evaluate_model called directly: metrics, curves the KFP UI draws, a report, a JSON result."""

from __future__ import annotations

import json
import math
from pathlib import Path

import joblib
import pytest
from closedloop.components.conftest import Prepared, artifact_in, artifact_out, dataset_in
from closedloop.components.evaluation.evaluate_model.component import evaluate_model
from kfp import dsl
from sklearn.metrics import roc_auc_score

from closedloop.ml.train import predict_scores


@pytest.fixture(scope="module")
def outputs(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("evaluate")
    arts = {
        "metrics": artifact_out(dsl.Metrics, out, "metrics"),
        "classification_metrics": artifact_out(dsl.ClassificationMetrics, out, "cm"),
        "report": artifact_out(dsl.HTML, out, "report"),
        "evaluation": artifact_out(dsl.Artifact, out, "evaluation"),
    }
    evaluate_model.python_func(
        model=artifact_in(dsl.Model, prepared.model),
        holdout=dataset_in(prepared.holdout),
        schema=artifact_in(dsl.Artifact, prepared.schema),
        **arts,
    )
    return arts


def test_logs_the_holdout_metrics(outputs: dict, prepared: Prepared) -> None:
    logged = outputs["metrics"].metadata
    assert set(logged) >= {"accuracy", "f1", "roc_auc", "log_loss", "precision", "recall"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in logged.values())
    holdout = prepared.frame("holdout")
    scores = predict_scores(joblib.load(prepared.model), holdout, prepared.input_schema())
    assert logged["roc_auc"] == pytest.approx(roc_auc_score(holdout["is_fraud"], scores))
    assert logged["roc_auc"] > 0.7


def test_writes_the_full_result_as_json(outputs: dict, prepared: Prepared) -> None:
    result = json.loads(Path(outputs["evaluation"].path).read_text())
    assert result["task"] == "classification"
    assert result["n_rows"] == len(prepared.frame("holdout"))
    assert result["metrics"] == pytest.approx(outputs["metrics"].metadata)
    assert sum(map(sum, result["confusion_matrix"])) == result["n_rows"]


def test_gives_the_ui_a_roc_curve_and_confusion_matrix(outputs: dict) -> None:
    meta = outputs["classification_metrics"].metadata
    points = meta["confidenceMetrics"]
    assert len(points) > 10
    # KFP rejects infinite thresholds; the component clamps sklearn's first one to 1.
    assert all(0.0 <= p["confidenceThreshold"] <= 1.0 for p in points)
    assert points[0]["recall"] == 0 and points[-1]["recall"] == 1
    matrix = meta["confusionMatrix"]
    assert [s["displayName"] for s in matrix["annotationSpecs"]] == ["0", "1"]
    assert len(matrix["rows"]) == 2


def test_writes_an_html_report_with_plots(outputs: dict) -> None:
    html = Path(outputs["report"].path).read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "roc_auc" in html
    assert html.count("data:image/png;base64,") >= 2


def test_carries_the_versions_quality_baseline(outputs: dict, prepared: Prepared) -> None:
    from closedloop.quality import QualityBaseline, assess

    result = json.loads(Path(outputs["evaluation"].path).read_text())
    baseline = QualityBaseline.from_dict(result["quality_baseline"])
    assert baseline.n_rows == len(prepared.frame("holdout"))
    assert baseline.metrics["roc_auc"] == pytest.approx(result["metrics"]["roc_auc"])
    # The holdout against its own baseline: no drop at all.
    holdout = prepared.frame("holdout")
    schema = prepared.input_schema()
    from closedloop.ml.train import encode_target

    scores = predict_scores(joblib.load(prepared.model), holdout, schema)
    same = assess(baseline, encode_target(holdout["is_fraud"], schema), scores)
    assert same.drop == pytest.approx(0.0) and same.p_value > 0.4
