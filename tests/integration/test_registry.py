"""The registry against real SeaweedFS: immutability, manifest-last, digests, champion."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from closedloop.registry import (
    IntegrityError,
    Lineage,
    Manifest,
    Registry,
    RegistryError,
    VersionNotFoundError,
)
from closedloop.storage import StorageError, Store, sha256_file

pytestmark = pytest.mark.slow

LINEAGE = Lineage(
    dataset_uri="s3://data/train.parquet", dataset_sha256="ab" * 32, parameters={"seed": 1}
)


def make_version_dir(root: Path, payload: bytes) -> Path:
    (root / "detector").mkdir(parents=True)
    (root / "model.joblib").write_bytes(payload)
    (root / "schema.json").write_text('{"columns": []}')
    (root / "detector" / "meta.json").write_text("{}")
    return root


@pytest.fixture()
def registry(s3_store: Store, bucket: str) -> Registry:
    return Registry(s3_store, f"s3://{bucket}/registry")


def test_register_fetch_round_trip(registry: Registry, tmp_path: Path) -> None:
    src = make_version_dir(tmp_path / "src", b"model-bytes")
    manifest = registry.register("fraud", src, LINEAGE, {"roc_auc": 0.9})
    assert manifest.version == "v1"
    assert {f.path for f in manifest.files} == {"model.joblib", "schema.json", "detector/meta.json"}
    assert manifest.file("model.joblib").sha256 == sha256_file(src / "model.joblib")
    local = registry.fetch("fraud", "v1", tmp_path / "dst")
    assert (local.path / "model.joblib").read_bytes() == b"model-bytes"
    assert local.manifest == manifest
    assert Manifest.from_json(manifest.to_json()) == manifest
    second = registry.register("fraud", src, LINEAGE)
    assert second.version == "v2" and registry.versions("fraud") == ["v1", "v2"]


def test_champion_moves_only_by_promote(registry: Registry, tmp_path: Path) -> None:
    src = make_version_dir(tmp_path / "src", b"m")
    registry.register("fraud", src, LINEAGE)
    assert registry.champion("fraud") is None
    with pytest.raises(VersionNotFoundError, match="no champion yet"):
        registry.fetch("fraud", "champion", tmp_path / "x")
    first = registry.promote("fraud", "v1", "first model")
    assert first.previous is None
    registry.register("fraud", src, LINEAGE)
    moved = registry.promote("fraud", "v2", "gate passed")
    assert (moved.version, moved.previous) == ("v2", "v1")
    assert registry.fetch("fraud", "champion", tmp_path / "c").version == "v2"
    with pytest.raises(VersionNotFoundError):
        registry.promote("fraud", "v9", "no such version")
    history = registry.store.list(f"{registry.root}/models/fraud/history")
    assert len(history) == 2


def test_tampered_file_is_refused(registry: Registry, tmp_path: Path) -> None:
    src = make_version_dir(tmp_path / "src", b"honest")
    registry.register("fraud", src, LINEAGE)
    registry.store.write_bytes(f"{registry.root}/models/fraud/versions/v1/model.joblib", b"evil")
    with pytest.raises(IntegrityError, match=r"model\.joblib has sha256 .* refusing to load"):
        registry.fetch("fraud", "v1", tmp_path / "dst")
    assert not (tmp_path / "dst" / "model.joblib").exists()
    with pytest.raises(IntegrityError, match="does not match its manifest digest"):
        registry.read_file("fraud", "v1", "model.joblib")
    assert registry.read_file("fraud", "v1", "schema.json") == b'{"columns": []}'
    with pytest.raises(IntegrityError, match="has no file"):
        registry.read_file("fraud", "v1", "nope.txt")


def test_crash_before_manifest_leaves_no_visible_version(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_version_dir(tmp_path / "src", b"m")
    real_create = registry.store.create

    def crash_on_manifest(uri: str, data: bytes) -> None:
        if uri.endswith("MANIFEST.json"):
            raise StorageError("simulated crash before the manifest")
        real_create(uri, data)

    monkeypatch.setattr(registry.store, "create", crash_on_manifest)
    with pytest.raises(StorageError):
        registry.register("fraud", src, LINEAGE)
    monkeypatch.undo()
    assert registry.versions("fraud") == []
    with pytest.raises(VersionNotFoundError):
        registry.manifest("fraud", "v1")
    # The half version's id stays claimed: the next registration never reuses it.
    assert registry.register("fraud", src, LINEAGE).version == "v2"


def test_concurrent_registrations_get_distinct_versions(registry: Registry, tmp_path: Path) -> None:
    src = make_version_dir(tmp_path / "src", b"m")
    got: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: got.append(registry.register("fraud", src, LINEAGE).version)
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(got) == ["v1", "v2", "v3", "v4"]


@pytest.mark.parametrize("name", ["Fraud", "a/b", "", "x" * 80])
def test_bad_model_names_are_refused(registry: Registry, name: str) -> None:
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.versions(name)
