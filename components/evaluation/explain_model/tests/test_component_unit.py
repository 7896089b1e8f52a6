"""explain_model called directly: global attributions per input column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from closedloop.components.conftest import Prepared, artifact_in, artifact_out, dataset_in
from closedloop.components.evaluation.explain_model.component import explain_model
from kfp import dsl


def run(prepared: Prepared, out: Path, model: Path | None = None, **kwargs: object) -> dict:
    arts = {
        "explanation": artifact_out(dsl.Artifact, out, "explanation"),
        "summary": artifact_out(dsl.Markdown, out, "summary"),
        "chart": artifact_out(dsl.HTML, out, "chart"),
    }
    explain_model.python_func(
        model=artifact_in(dsl.Model, model or prepared.model),
        holdout=dataset_in(prepared.holdout),
        schema=artifact_in(dsl.Artifact, prepared.schema),
        **arts,
        **kwargs,
    )
    return arts


@pytest.fixture(scope="module")
def outputs(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run(prepared, tmp_path_factory.mktemp("explain"), max_rows=300, seed=0)


def test_explains_every_input_column(outputs: dict, prepared: Prepared) -> None:
    result = json.loads(Path(outputs["explanation"].path).read_text())
    assert result["method"] == "xgboost_shap"
    assert result["n_rows"] == 300
    names = [name for name, _ in result["importances"]]
    assert set(names) == set(prepared.input_schema().feature_names)
    values = [value for _, value in result["importances"]]
    assert values == sorted(values, reverse=True)
    assert values[0] > 0
    assert outputs["explanation"].metadata == {"method": "xgboost_shap", "top": names[:5]}


def test_writes_a_ranking_and_a_chart(outputs: dict) -> None:
    top = outputs["explanation"].metadata["top"][0]
    summary = Path(outputs["summary"].path).read_text()
    assert f"| 1 | `{top}` |" in summary
    chart = Path(outputs["chart"].path).read_text()
    assert "data:image/png;base64," in chart and top in chart


def test_non_xgboost_models_get_permutation_importance(prepared: Prepared, tmp_path: Path) -> None:
    import joblib
    from closedloop.components._runtime import fit_on_features

    from closedloop.ml.train import ModelConfig

    pipeline = fit_on_features(
        joblib.load(prepared.features),
        prepared.frame("train"),
        prepared.input_schema(),
        ModelConfig("logistic_regression", {"C": 1.0}, seed=0),
    )
    joblib.dump(pipeline, tmp_path / "lr.joblib")
    arts = run(prepared, tmp_path / "out", model=tmp_path / "lr.joblib", max_rows=200)
    result = json.loads(Path(arts["explanation"].path).read_text())
    assert result["method"] == "permutation"
    assert len(result["importances"]) == len(prepared.input_schema().feature_names)
