"""compare_evaluations called directly: metric by metric, with the difference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from closedloop.components.conftest import artifact_in, artifact_out
from closedloop.components.evaluation.compare_evaluations.component import compare_evaluations
from kfp import dsl


def evaluation(path: Path, **metrics: float) -> dsl.Artifact:
    path.write_text(json.dumps({"task": "classification", "metrics": metrics, "n_rows": 10}))
    return artifact_in(dsl.Artifact, path)


def test_compares_the_shared_metrics(tmp_path: Path) -> None:
    base = evaluation(tmp_path / "base.json", roc_auc=0.80, f1=0.40, log_loss=0.20)
    variant = evaluation(tmp_path / "variant.json", roc_auc=0.85, f1=0.35, brier=0.1)
    comparison = artifact_out(dsl.Markdown, tmp_path, "comparison")
    text = compare_evaluations.python_func(
        baseline=base,
        variant=variant,
        comparison=comparison,
        baseline_name="base features",
        variant_name="engineered features",
    )
    table = json.loads(text)
    assert sorted(table) == ["f1", "roc_auc"]  # only metrics both branches have
    assert table["roc_auc"]["baseline"] == 0.80
    assert table["roc_auc"]["variant"] == 0.85
    assert table["roc_auc"]["difference"] == pytest.approx(0.05)
    assert table["f1"]["difference"] == pytest.approx(-0.05)
    markdown = Path(comparison.path).read_text()
    assert markdown.startswith("# base features vs engineered features")
    assert "| metric | base features | engineered features | difference |" in markdown
    assert "| roc_auc | 0.8000 | 0.8500 | +0.0500 |" in markdown
    assert "| f1 | 0.4000 | 0.3500 | -0.0500 |" in markdown
