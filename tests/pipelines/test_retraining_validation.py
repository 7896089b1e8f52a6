"""The retraining run validates its data against the champion's schema, not against itself.

The validation step is called exactly as the committed retraining pipeline wires it
(its parameters read from ``pipelines/compiled/retraining.yaml``), with a champion in a
real S3 registry. Validating against a schema inferred from the data being checked
accepted anything: a target with a class the champion never had, a column whose type
changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from closedloop.components.conftest import TARGET, artifact_out, dataset_in
from closedloop.components.data_processing.validate_data.component import validate_data
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.local.s3 import LocalS3
from closedloop.ml.clean import clean_dataset, fitted_schema
from closedloop.ml.schema import infer_schema
from closedloop.registry import Lineage, Registry
from closedloop.registry.layout import SCHEMA_FILE
from closedloop.storage import Store

COMPILED = Path(__file__).resolve().parents[2] / "pipelines" / "compiled" / "retraining.yaml"
MODEL = "fraud"


def validation_arguments(compiled: Path, **pipeline_arguments: Any) -> dict[str, Any]:
    """The validate-data task's parameters in *compiled*, for a run with these arguments."""
    spec = next(yaml.safe_load_all(compiled.read_text()))
    root = spec["root"]
    values = {
        name: parameter.get("defaultValue")
        for name, parameter in root["inputDefinitions"]["parameters"].items()
    }
    values.update(pipeline_arguments)
    arguments = {}
    for name, source in root["dag"]["tasks"]["validate-data"]["inputs"]["parameters"].items():
        if "runtimeValue" in source:
            arguments[name] = source["runtimeValue"]["constant"]
        else:
            arguments[name] = values[source["componentInputParameter"]]
    return arguments


@pytest.fixture()
def registry_uri(
    s3_server: LocalS3,
    s3_store: Store,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """A registry whose champion's schema was inferred from the original training data."""
    for key, value in s3_server.settings().to_env().items():
        monkeypatch.setenv(key, value)
    uri = f"s3://{bucket}/registry"
    source = tmp_path / "champion"
    source.mkdir()
    raw = generate_transactions(2000, seed=60)
    schema = infer_schema(raw, TARGET)
    # As training registers it: carrying the cleaning fitted on its rows.
    schema = fitted_schema(schema, clean_dataset(raw, schema)[1])
    (source / SCHEMA_FILE).write_text(schema.to_json())
    registry = Registry(s3_store, uri)
    version = registry.register(MODEL, source, Lineage("s3://x/train.parquet", "00")).version
    registry.promote(MODEL, version, "test champion")
    return uri


def validate_as_the_retraining_run(frame: pd.DataFrame, registry_uri: str, out: Path) -> None:
    arguments = validation_arguments(COMPILED, registry_uri=registry_uri, model_name=MODEL)
    validate_data.python_func(
        dataset=dataset_in(out / "assembled.parquet", frame, source="assembled"),
        schema=artifact_out(dsl.Artifact, out, "schema"),
        report=artifact_out(dsl.HTML, out, "report"),
        metrics=artifact_out(dsl.Metrics, out, "metrics"),
        **arguments,
    )


@pytest.fixture(scope="module")
def retraining_rows() -> pd.DataFrame:
    """What assemble_training_data writes after a concept change: recent rows only."""
    return generate_transactions(1500, seed=61, concept_drift=1.0)


def test_the_retraining_run_validates_against_the_champion(
    retraining_rows: pd.DataFrame, registry_uri: str, tmp_path: Path
) -> None:
    arguments = validation_arguments(COMPILED, registry_uri=registry_uri, model_name=MODEL)
    assert arguments["schema_uri"] == "champion"
    assert (arguments["registry_uri"], arguments["model_name"]) == (registry_uri, MODEL)
    validate_as_the_retraining_run(retraining_rows, registry_uri, tmp_path)  # passes


def test_a_new_target_class_stops_the_retraining_run(
    retraining_rows: pd.DataFrame, registry_uri: str, tmp_path: Path
) -> None:
    changed = retraining_rows.copy()
    changed.loc[changed.index[:60], TARGET] = 2  # "chargeback": a class the champion lacks
    with pytest.raises(ValueError, match=r"data validation failed .*is_fraud \(known_labels"):
        validate_as_the_retraining_run(changed, registry_uri, tmp_path)


def test_a_column_whose_type_changed_stops_the_retraining_run(
    retraining_rows: pd.DataFrame, registry_uri: str, tmp_path: Path
) -> None:
    # An upstream change sends amounts as text with a currency; inferred, it is a category.
    changed = retraining_rows.assign(amount=retraining_rows["amount"].map("{:.2f} USD".format))
    with pytest.raises(ValueError, match=r"data validation failed .*amount \(numeric_values"):
        validate_as_the_retraining_run(changed, registry_uri, tmp_path)
