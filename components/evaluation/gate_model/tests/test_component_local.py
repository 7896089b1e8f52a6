"""gate_model under kfp.local, against an empty registry on S3 (SeaweedFS)."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from closedloop.components.conftest import (
    Prepared,
    fresh_bucket,
    import_artifact,
    import_dataset,
    run_local,
)
from closedloop.components.evaluation.gate_model.component import gate_model
from kfp import dsl

from closedloop.local.s3 import LocalS3

pytestmark = pytest.mark.slow


class Gated(NamedTuple):
    decision: str
    record: dsl.Artifact
    verdict: dsl.Markdown


@dsl.pipeline(name="gate-model-local")
def gate(model_uri: str, holdout_uri: str, schema_uri: str, registry_uri: str) -> Gated:
    task = gate_model(
        model=import_artifact(model_uri, dsl.Model).output,
        holdout=import_dataset(holdout_uri).output,
        schema=import_artifact(schema_uri).output,
        registry_uri=registry_uri,
        model_name="fraud",
        bootstrap_rounds=100,
    )
    return Gated(task.outputs["Output"], task.outputs["decision"], task.outputs["verdict"])


@pytest.fixture(scope="module")
def outputs(
    prepared: Prepared, s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    bucket = fresh_bucket(s3_server)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.settings().to_env().items():
            mp.setenv(key, value)
        return run_local(
            gate,
            tmp_path_factory.mktemp("gate-local"),
            model_uri=str(prepared.model),
            holdout_uri=str(prepared.holdout),
            schema_uri=str(prepared.schema),
            registry_uri=f"s3://{bucket}/registry",
        )


def test_a_first_model_meeting_the_thresholds_passes(outputs: dict) -> None:
    assert outputs["decision"] == "promote"
    record = json.loads(Path(outputs["record"].path).read_text())
    assert record["passed"] is True
    assert record["champion_version"] == ""
    assert "no champion" in record["reason"]
    assert outputs["record"].metadata["passed"] is True
    verdict = Path(outputs["verdict"].path).read_text()
    assert "**Gate: PASSED**" in verdict and record["reason"] in verdict
