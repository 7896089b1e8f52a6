"""validate_data under kfp.local: clean data passes, data without its target stops the run."""

from pathlib import Path
from typing import NamedTuple

import pytest
from closedloop.components.conftest import TARGET, import_dataset, run_local, write_parquet
from closedloop.components.data_processing.validate_data.component import validate_data
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.ml.schema import InputSchema

pytestmark = pytest.mark.slow


class Validated(NamedTuple):
    schema: dsl.Artifact
    report: dsl.HTML
    metrics: dsl.Metrics


@dsl.pipeline(name="validate-data-local")
def validate(uri: str) -> Validated:
    raw = import_dataset(uri, source="s3://landing/raw.parquet")
    checked = validate_data(dataset=raw.output, target=TARGET)
    return Validated(
        checked.outputs["schema"], checked.outputs["report"], checked.outputs["metrics"]
    )


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("validate-local")
    path = write_parquet(generate_transactions(300, seed=32), root / "raw.parquet")
    return run_local(validate, root / "runs", uri=str(path))


def test_clean_data_passes(outputs: dict) -> None:
    schema = InputSchema.from_json(Path(outputs["schema"].path).read_text())
    assert schema.target == TARGET and schema.task == "classification"
    assert outputs["schema"].metadata["target"] == TARGET
    assert outputs["metrics"].metadata["passed"] == 1.0
    assert outputs["metrics"].metadata["n_rows"] == 300.0
    assert "PASSED" in Path(outputs["report"].path).read_text()


def test_missing_target_stops_the_run(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    broken = generate_transactions(300, seed=33).drop(columns=[TARGET])
    path = write_parquet(broken, tmp_path / "raw.parquet")
    with pytest.raises(RuntimeError, match="validate-data"):
        run_local(validate, tmp_path / "runs", uri=str(path))
    log = capfd.readouterr()
    assert "target column 'is_fraud' is not in s3://landing/raw.parquet" in log.out + log.err
