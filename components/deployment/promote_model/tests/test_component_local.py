"""promote_model under kfp.local, on a registry on S3 (SeaweedFS)."""

import json

import pytest
from closedloop.components.conftest import fresh_bucket, import_artifact, run_local
from closedloop.components.deployment.promote_model.component import promote_model
from kfp import dsl

from closedloop.local.s3 import LocalS3
from closedloop.registry import Lineage, Registry

pytestmark = pytest.mark.slow


@dsl.pipeline(name="promote-model-local")
def promote(registry_uri: str, version: str, gate_uri: str) -> str:
    return promote_model(
        registry_uri=registry_uri,
        model_name="fraud",
        version=version,
        gate=import_artifact(gate_uri).output,
    ).output


@pytest.fixture(scope="module")
def promoted(s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("promote-local")
    registry = Registry(s3_server.store(), f"s3://{fresh_bucket(s3_server)}/registry")
    for n in (1, 2):
        (root / f"v{n}").mkdir()
        (root / f"v{n}" / "model.joblib").write_bytes(b"model %d" % n)
        registry.register("fraud", root / f"v{n}", Lineage("s3://d/x.parquet", "0" * 64))
    registry.promote("fraud", "v1", "first model")
    decision = {"passed": True, "reason": "gate passed", "champion_version": "v1"}
    (root / "gate.json").write_text(json.dumps(decision))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.settings().to_env().items():
            mp.setenv(key, value)
        outputs = run_local(
            promote,
            root / "runs",
            registry_uri=registry.root,
            version="v2",
            gate_uri=str(root / "gate.json"),
        )
    return outputs, registry


def test_the_champion_moves(promoted: tuple) -> None:
    outputs, registry = promoted
    assert outputs["Output"] == "v1"
    pointer = registry.champion("fraud")
    assert (pointer.version, pointer.previous, pointer.reason) == ("v2", "v1", "gate passed")
