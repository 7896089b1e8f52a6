"""Operating the registry on a local directory: scan, champion history, rollback, gc.

The same code runs against real SeaweedFS in tests/cli/test_registry_cli.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from closedloop.registry import (
    IntegrityError,
    Lineage,
    Registry,
    RegistryError,
    VersionNotFoundError,
)
from closedloop.storage import Store

DAY = 86400.0


def lineage(passed: bool = True) -> Lineage:
    return Lineage(
        dataset_uri="s3://closedloop/data/train.parquet",
        dataset_sha256="ab" * 32,
        parameters={"seed": 1, "gate_passed": passed, "gate_reason": "the gate's reason"},
        code_version="0.1.0+abc",
    )


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return Registry(Store(), str(tmp_path / "registry"))


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "detector").mkdir(parents=True)
    (root / "model.joblib").write_bytes(b"m" * 100)
    (root / "schema.json").write_text("{}")
    (root / "detector" / "meta.json").write_text("{}")
    return root


def leave_incomplete(registry: Registry, version: str, files: int = 2) -> str:
    """What a registration that died after *files* files leaves: a claim and those files."""
    base = f"{registry.root}/models/fraud/versions/{version}"
    registry.store.create(f"{base}/.claim", b"")
    for i in range(files):
        registry.store.write_bytes(f"{base}/part-{i}.bin", b"x" * 10)
    return base


def test_scan_tells_complete_from_incomplete(registry: Registry, source: Path) -> None:
    registry.register("fraud", source, lineage(), {"roc_auc": 0.9})
    leave_incomplete(registry, "v2")
    v1, v2 = registry.scan("fraud")
    assert (v1.version, v1.state, v1.gate_passed) == ("v1", "complete", True)
    assert v1.manifest is not None and v1.manifest.metrics == {"roc_auc": 0.9}
    assert len(v1.manifest_sha256) == 64
    assert (v2.version, v2.state, v2.manifest, v2.gate_passed) == ("v2", "incomplete", None, None)
    assert sorted(v2.stored()) == [".claim", "part-0.bin", "part-1.bin"] and v2.size == 20
    assert registry.versions("fraud") == ["v1"]  # what readers see is unchanged
    assert registry.status("fraud", "v2").state == "incomplete"
    with pytest.raises(VersionNotFoundError):
        registry.status("fraud", "v7")


def test_gc_removes_only_old_incomplete_versions(registry: Registry, source: Path) -> None:
    registry.register("fraud", source, lineage())
    before = [(o.uri, o.size) for o in registry.status("fraud", "v1").objects]
    leave_incomplete(registry, "v2")

    (young,) = registry.collect_garbage("fraud")  # default minimum age: an hour
    assert (young.version, young.remove, young.removed) == ("v2", False, False)
    assert young.detail.startswith("kept: written") and "1h" in young.detail

    (dry,) = registry.collect_garbage("fraud", dry_run=True, now=time.time() + DAY)
    assert (dry.remove, dry.removed, dry.objects, dry.size) == (True, False, 2, 20)
    assert registry.status("fraud", "v2").state == "incomplete"

    (gone,) = registry.collect_garbage("fraud", by="ops", now=time.time() + DAY)
    assert (gone.remove, gone.removed, gone.detail) == (True, True, "removed")
    after = registry.status("fraud", "v2")
    assert after.state == "collected" and sorted(after.stored()) == [".claim"]
    tombstone = json.loads(registry.store.read_bytes(after.objects[0].uri))
    assert tombstone["by"] == "ops"
    # Versions with a manifest are never touched, however old.
    assert [(o.uri, o.size) for o in registry.status("fraud", "v1").objects] == before
    assert registry.collect_garbage("fraud", min_age=0) == []
    # The collected id stays taken.
    assert registry.register("fraud", source, lineage()).version == "v3"


def test_an_interrupted_collection_is_finished(registry: Registry) -> None:
    base = leave_incomplete(registry, "v1", files=1)
    registry.store.write_bytes(f"{base}/.claim", json.dumps({"collected_at": 1.0}).encode())
    (decision,) = registry.collect_garbage("fraud", min_age=DAY)  # age does not matter now
    assert decision.removed and decision.detail == "finished an interrupted collection"
    assert sorted(registry.status("fraud", "v1").stored()) == [".claim"]


def test_a_registration_collected_while_running_fails(
    registry: Registry, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_publish = registry.store.publish
    calls = []

    def publish_then_collect(
        uri: str, data: bytes | None = None, *, path: str | None = None
    ) -> str:
        digest = real_publish(uri, data, path=path)
        calls.append(uri)
        if len(calls) == 1:  # the registration stalls past the minimum age; gc runs
            registry.collect_garbage("fraud", min_age=0)
        return digest

    monkeypatch.setattr(registry.store, "publish", publish_then_collect)
    with pytest.raises(RegistryError, match="was garbage-collected while this registration ran"):
        registry.register("fraud", source, lineage())
    monkeypatch.undo()
    assert registry.versions("fraud") == []
    # The files it published after the collection sit under the tombstone; the next gc
    # deletes them, whatever their age.
    (late,) = registry.scan("fraud")
    assert late.state == "collected" and len(late.objects) == 3
    (decision,) = registry.collect_garbage("fraud")
    assert decision.removed and decision.objects == 2


def test_history_keeps_every_move_and_rollback_goes_through_it(
    registry: Registry, source: Path
) -> None:
    for _ in range(2):
        registry.register("fraud", source, lineage())
    registry.promote("fraud", "v1", "first model")
    registry.promote("fraud", "v2", "gate passed")
    moved = registry.rollback("fraud", "v1", by="alice", note="v2 misbehaves")
    assert (moved.version, moved.previous) == ("v1", "v2")
    assert moved.reason == "rollback to v1 by alice: v2 misbehaves"
    assert registry.resolve("fraud", "champion") == "v1"
    # Three moves within a second, two of them to v1: all three are on record.
    history = registry.champion_history("fraud")
    assert [(h.previous, h.version) for h in history] == [(None, "v1"), ("v1", "v2"), ("v2", "v1")]


def test_rollback_refuses_what_it_cannot_serve(registry: Registry, source: Path) -> None:
    registry.register("fraud", source, lineage())
    registry.register("fraud", source, lineage(passed=False))
    registry.register("fraud", source, lineage())
    leave_incomplete(registry, "v4")
    registry.promote("fraud", "v1", "first model")
    with pytest.raises(RegistryError, match="incomplete"):
        registry.rollback("fraud", "v4", by="alice")
    with pytest.raises(VersionNotFoundError):
        registry.rollback("fraud", "v9", by="alice")
    with pytest.raises(RegistryError, match="already the champion"):
        registry.rollback("fraud", "v1", by="alice")
    with pytest.raises(RegistryError, match="the gate rejected fraud v2"):
        registry.rollback("fraud", "v2", by="alice")
    with pytest.raises(RegistryError, match="invalid version"):
        registry.rollback("fraud", "champion", by="alice")
    registry.store.delete(f"{registry.root}/models/fraud/versions/v3/model.joblib")
    with pytest.raises(IntegrityError, match=r"model\.joblib is missing"):
        registry.rollback("fraud", "v3", by="alice")
    assert registry.resolve("fraud", "champion") == "v1"
    assert registry.rollback("fraud", "v2", by="alice", force=True).version == "v2"
