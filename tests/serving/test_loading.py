"""Reading a registered version: one function for every caller, one error that names it."""

from __future__ import annotations

from pathlib import Path

import joblib
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.drift.sidecar.errors import ModelLoadError
from closedloop.drift.sidecar.loader import load_served_detector
from closedloop.ml.schema import infer_schema
from closedloop.registry import IntegrityError, Lineage, Registry
from closedloop.registry.layout import MODEL_FILE, SCHEMA_FILE
from closedloop.serving.loading import (
    ArtifactError,
    fetch_version,
    load_version,
    read_version_schema,
)
from closedloop.storage import S3Settings, Store

SCHEMA = infer_schema(generate_transactions(200, seed=0), DEFAULT_TARGET)
LINEAGE = Lineage(dataset_uri="generated://", dataset_sha256="0" * 64)


def publish(registry: Registry, root: Path, schema: str, model: bytes | object) -> str:
    root.mkdir()
    (root / SCHEMA_FILE).write_text(schema)
    if isinstance(model, bytes):
        (root / MODEL_FILE).write_bytes(model)
    else:
        joblib.dump(model, root / MODEL_FILE)
    return registry.register("fraud", root, LINEAGE).version


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return Registry(Store(S3Settings()), str(tmp_path / "registry"))


def test_the_files_schema_and_pipeline_are_read_once_digests_pass(
    registry: Registry, tmp_path: Path
) -> None:
    version = publish(registry, tmp_path / "good", SCHEMA.to_json(), {"a": "pipeline"})
    registry.promote("fraud", version, "first")
    files = fetch_version(registry, "fraud", "champion", tmp_path / "fetched")
    assert (files.version, files.schema, files.pipeline) == (version, SCHEMA, {"a": "pipeline"})
    assert (files.path / MODEL_FILE).is_file()
    assert (
        fetch_version(registry, "fraud", version, tmp_path / "again", pipeline=False).pipeline
        is None
    )
    assert read_version_schema(registry, "fraud", "champion") == (version, SCHEMA)


def test_unusable_files_are_refused_with_the_model_and_version(
    registry: Registry, tmp_path: Path
) -> None:
    bad_schema = publish(registry, tmp_path / "schema", "{not json", {"a": 1})
    bad_model = publish(registry, tmp_path / "model", SCHEMA.to_json(), b"not a pickle")
    where = rf"fraud {bad_schema}: {SCHEMA_FILE} is not a valid input schema"
    with pytest.raises(ArtifactError, match=where):
        fetch_version(registry, "fraud", bad_schema, tmp_path / "a")
    with pytest.raises(ArtifactError, match=where):
        read_version_schema(registry, "fraud", bad_schema)
    with pytest.raises(ArtifactError, match=where):
        load_version(registry, "fraud", bad_schema)
    with pytest.raises(
        ArtifactError, match=rf"fraud {bad_model}: {MODEL_FILE} could not be loaded"
    ):
        fetch_version(registry, "fraud", bad_model, tmp_path / "b")
    # A caller that needs no pipeline is not stopped by one it would not use.
    assert (
        fetch_version(registry, "fraud", bad_model, tmp_path / "c", pipeline=False).schema == SCHEMA
    )
    # The probe's refusals name them too.
    not_a_pipeline = publish(registry, tmp_path / "dict", SCHEMA.to_json(), {"a": 1})
    with pytest.raises(ArtifactError, match=rf"fraud {not_a_pipeline}: {MODEL_FILE} holds a dict"):
        load_version(registry, "fraud", not_a_pipeline)


def test_the_sidecar_reads_versions_the_same_way_and_says_so_in_its_own_error(
    registry: Registry, tmp_path: Path
) -> None:
    bad_schema = publish(registry, tmp_path / "schema", "{not json", {"a": 1})
    store = registry.store
    with pytest.raises(ModelLoadError, match=rf"fraud {bad_schema}: {SCHEMA_FILE} is not a valid"):
        load_served_detector(store, registry.root, "fraud", bad_schema)
    (tmp_path / "registry" / "models" / "fraud" / "versions" / bad_schema / SCHEMA_FILE).write_text(
        "{}"
    )
    with pytest.raises(ModelLoadError, match="sha256") as info:
        load_served_detector(store, registry.root, "fraud", bad_schema)
    assert isinstance(info.value.__cause__, IntegrityError)
