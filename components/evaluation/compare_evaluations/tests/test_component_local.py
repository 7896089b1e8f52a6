"""compare_evaluations under kfp.local."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from closedloop.components.conftest import import_artifact, run_local
from closedloop.components.evaluation.compare_evaluations.component import compare_evaluations
from kfp import dsl

pytestmark = pytest.mark.slow


class Compared(NamedTuple):
    table: str
    comparison: dsl.Markdown


@dsl.pipeline(name="compare-evaluations-local")
def compare(baseline_uri: str, variant_uri: str) -> Compared:
    task = compare_evaluations(
        baseline=import_artifact(baseline_uri).output,
        variant=import_artifact(variant_uri).output,
        baseline_name="base",
        variant_name="engineered",
    )
    return Compared(task.outputs["Output"], task.outputs["comparison"])


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("compare-local")
    (root / "a.json").write_text(json.dumps({"metrics": {"roc_auc": 0.8, "f1": 0.3}}))
    (root / "b.json").write_text(json.dumps({"metrics": {"roc_auc": 0.9, "f1": 0.25}}))
    return run_local(
        compare,
        root / "runs",
        baseline_uri=str(root / "a.json"),
        variant_uri=str(root / "b.json"),
    )


def test_the_table_and_its_markdown(outputs: dict) -> None:
    table = json.loads(outputs["table"])
    assert table["roc_auc"]["difference"] == pytest.approx(0.1)
    assert table["f1"]["difference"] == pytest.approx(-0.05)
    markdown = Path(outputs["comparison"].path).read_text()
    assert "| roc_auc | 0.8000 | 0.9000 | +0.1000 |" in markdown
