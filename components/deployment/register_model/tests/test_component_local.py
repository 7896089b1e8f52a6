"""register_model under kfp.local, into a registry on S3 (SeaweedFS)."""

import json

import pytest
from closedloop.components.conftest import (
    FAST_CONFIG,
    Prepared,
    fresh_bucket,
    import_artifact,
    import_dataset,
    run_local,
)
from closedloop.components.deployment.register_model.component import register_model
from kfp import dsl

from closedloop.local.s3 import LocalS3
from closedloop.registry import Registry
from closedloop.registry.layout import MODEL_FILE

pytestmark = pytest.mark.slow


@dsl.pipeline(name="register-model-local")
def register(
    model_uri: str,
    schema_uri: str,
    detector_uri: str,
    reference_uri: str,
    evaluation_uri: str,
    explanation_uri: str,
    dataset_uri: str,
    gate_uri: str,
    registry_uri: str,
    config: str,
) -> str:
    return register_model(
        model=import_artifact(model_uri, dsl.Model).output,
        schema=import_artifact(schema_uri).output,
        detector=import_artifact(detector_uri).output,
        reference=import_dataset(reference_uri).output,
        evaluation=import_artifact(evaluation_uri).output,
        explanation=import_artifact(explanation_uri).output,
        dataset=import_dataset(
            dataset_uri, source="s3://landing/raw.parquet", sha256="9" * 64
        ).output,
        gate=import_artifact(gate_uri).output,
        registry_uri=registry_uri,
        model_name="fraud",
        config=config,
        run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    ).output


@pytest.fixture(scope="module")
def registered(
    prepared: Prepared, s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, Registry]:
    registry_uri = f"s3://{fresh_bucket(s3_server)}/registry"
    root = tmp_path_factory.mktemp("register-local")
    decision = {"passed": True, "reason": "first model.", "champion_version": ""}
    (root / "gate.json").write_text(json.dumps(decision))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.settings().to_env().items():
            mp.setenv(key, value)
        outputs = run_local(
            register,
            root / "runs",
            model_uri=str(prepared.model),
            schema_uri=str(prepared.schema),
            detector_uri=str(prepared.detector),
            reference_uri=str(prepared.reference),
            evaluation_uri=str(prepared.evaluation),
            explanation_uri=str(prepared.explanation),
            dataset_uri=str(prepared.raw),
            gate_uri=str(root / "gate.json"),
            registry_uri=registry_uri,
            config=json.dumps(FAST_CONFIG),
        )
    return outputs, Registry(s3_server.store(), registry_uri)


def test_the_version_is_in_the_registry(registered: tuple, prepared: Prepared, tmp_path) -> None:
    outputs, registry = registered
    assert outputs["Output"] == "v1"
    manifest = registry.manifest("fraud", "v1")
    lineage = manifest.lineage
    assert lineage.dataset_uri == "s3://landing/raw.parquet"
    assert lineage.dataset_sha256 == "9" * 64
    assert lineage.parameters["model_config"] == FAST_CONFIG
    assert lineage.parameters["gate_passed"] is True
    assert lineage.parameters["gate_reason"] == "first model."
    assert lineage.run_id.startswith("register-model-local")
    fetched = registry.fetch("fraud", "v1", tmp_path)
    assert (fetched.path / MODEL_FILE).read_bytes() == prepared.model.read_bytes()
    assert any(e.path.startswith("detector/") for e in manifest.files)
