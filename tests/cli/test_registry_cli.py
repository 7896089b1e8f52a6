"""`closedloop registry` against real SeaweedFS: list, show, champion, rollback, gc.

The CLI runs in process (typer's CliRunner) and finds the test's SeaweedFS through
``CLOSEDLOOP_S3_ENDPOINT`` and the credentials, as on a cluster. The interrupted
registration is a real :meth:`Registry.register` on a store that stops working after a
few files, as when S3 is killed mid-registration.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from closedloop.cli.main import app
from closedloop.local.s3 import LocalS3
from closedloop.registry import Lineage, Registry
from closedloop.storage import S3Settings, StorageUnavailableError, Store

MODEL = "fraud"
Invoke = Callable[..., Result]


def lineage(seed: int, *, passed: bool = True, parent: str | None = None) -> Lineage:
    return Lineage(
        dataset_uri="s3://closedloop/data/reference.parquet",
        dataset_sha256="cd" * 32,
        parameters={
            "seed": seed,
            "model_config": {"estimator": "xgboost", "n_estimators": 50},
            "gate_passed": passed,
            "gate_reason": f"roc_auc 0.9{seed} [holdout] vs champion"
            if passed
            else "no better than v1",
        },
        code_version="0.1.0+feedc0ffee12",
        parent_version=parent,
        run_id=f"run-{seed}",
    )


class DyingStore(Store):
    """A store on the real SeaweedFS that stops answering after *survive* published files."""

    def __init__(self, settings: S3Settings, survive: int) -> None:
        super().__init__(settings)
        self.survive = survive

    def publish(self, uri: str, data: bytes | None = None, *, path: str | None = None) -> str:
        if self.survive == 0:
            raise StorageUnavailableError("simulated: S3 went away mid-registration")
        self.survive -= 1
        return super().publish(uri, data, path=path)


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "detector").mkdir(parents=True)
    (root / "model.joblib").write_bytes(b"m" * 4096)
    (root / "schema.json").write_text('{"columns": []}')
    (root / "metrics.json").write_text("{}")
    (root / "detector" / "meta.json").write_text("{}")
    (root / "detector" / "state.npz").write_bytes(b"d" * 512)
    return root


@pytest.fixture()
def registry(s3_store: Store, bucket: str) -> Registry:
    return Registry(s3_store, f"s3://{bucket}/registry")


@pytest.fixture()
def cli(s3_server: LocalS3, registry: Registry) -> Invoke:
    """Run ``closedloop registry ARGS`` on the test's registry, reaching S3 as a cluster does."""
    env = {**s3_server.settings().to_env(), "COLUMNS": "250"}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(
            app, ["registry", *args, "--registry", registry.root, "--model", MODEL], env=env
        )

    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def interrupted_registration(registry: Registry, source: Path, survive: int) -> None:
    """Register on a store that dies after *survive* files: what a killed S3 leaves."""
    dying = Registry(DyingStore(registry.store.settings, survive), registry.root)
    with pytest.raises(StorageUnavailableError):
        dying.register(MODEL, source, lineage(9))


def test_list_and_show(registry: Registry, source: Path, cli: Invoke) -> None:
    registry.register(MODEL, source, lineage(1), {"roc_auc": 0.91, "f1": 0.5})
    registry.register(MODEL, source, lineage(2, parent="v1"), {"roc_auc": 0.93, "f1": 0.6})
    registry.promote(MODEL, "v2", "gate passed")
    interrupted_registration(registry, source, survive=3)

    table = ok(cli("list")).output
    rows = {line.split()[1]: line for line in table.splitlines() if line.startswith("│ v")}
    assert set(rows) == {"v1", "v2", "v3"}
    assert "complete" in rows["v1"] and "passed" in rows["v1"] and "0.9100" in rows["v1"]
    assert "v2 *" in table and "0.9300" in rows["v2"]
    assert "incomplete" in rows["v3"] and "shown with their last write" in table
    assert registry.scan(MODEL)[1].manifest_sha256[:12] in rows["v2"]

    listed = json.loads(ok(cli("list", "--json")).output)
    assert listed["champion"] == "v2"
    states = {v["version"]: v for v in listed["versions"]}
    assert states["v3"]["state"] == "incomplete" and states["v3"]["gate"]["passed"] is None
    assert (states["v3"]["files"], states["v3"]["size"]) == (3, 2 + 512 + 2)  # besides its claim
    assert states["v2"]["metrics"] == {"roc_auc": 0.93, "f1": 0.6}
    assert states["v2"]["dataset_sha256"] == "cd" * 32 and states["v2"]["champion"]

    shown = ok(cli("show", "v2")).output
    for text in (
        "fraud v2: complete (the champion)",
        "s3://closedloop/data/reference.parquet",
        "cd" * 32,
        "0.1.0+feedc0ffee12",
        "parent       v1",
        'model_config = {"estimator": "xgboost", "n_estimators": 50}',
        "seed = 2",
        "run-2",
        "passed: roc_auc 0.92 [holdout] vs champion",
    ):
        assert text in shown, text
    assert "model.joblib" in shown and "4.0 KiB" in shown and "512 B" in shown
    detail = json.loads(ok(cli("show", "champion", "--json")).output)
    assert detail["version"] == "v2" and detail["lineage"]["parent_version"] == "v1"
    sizes = {f["path"]: (f["size"], f["stored"]) for f in detail["files"]}
    assert sizes["model.joblib"] == (4096, "ok") and sizes["detector/state.npz"] == (512, "ok")

    half = ok(cli("show", "v3")).output
    assert "incomplete: no manifest" in half and "claimed" in half
    assert "detector/state.npz" in half and "model.joblib" not in half  # it died before
    partial = json.loads(ok(cli("show", "v3", "--json")).output)
    assert partial["lineage"] is None and partial["claimed_at"].endswith("Z")
    assert sorted(f["path"] for f in partial["files"]) == [
        "detector/meta.json",
        "detector/state.npz",
        "metrics.json",
    ]

    missing = cli("show", "v8")
    assert missing.exit_code == 1 and "error: fraud has no version 'v8'" in missing.output


def test_champion_history_and_rollback(registry: Registry, source: Path, cli: Invoke) -> None:
    registry.register(MODEL, source, lineage(1), {"roc_auc": 0.91})
    registry.register(MODEL, source, lineage(2, parent="v1"), {"roc_auc": 0.93})
    registry.register(MODEL, source, lineage(3, passed=False), {"roc_auc": 0.80})
    interrupted_registration(registry, source, survive=1)  # v4
    assert "has no champion yet" in ok(cli("champion")).output
    registry.promote(MODEL, "v1", "first model")
    registry.promote(MODEL, "v2", "roc_auc 0.93 beats 0.91")

    shown = ok(cli("champion")).output
    assert "champion of fraud: v2 since" in shown and "roc_auc 0.93 beats 0.91" in shown
    assert "first model" in shown
    pointer = json.loads(ok(cli("champion", "--json")).output)
    assert pointer["champion"]["version"] == "v2" and len(pointer["history"]) == 2

    for target, message in (
        ("v4", "fraud v4 is incomplete"),
        ("v9", "fraud has no version 'v9'"),
        ("v2", "fraud v2 is already the champion"),
        ("v3", "the gate rejected fraud v3 (no better than v1)"),
    ):
        refused = cli("rollback", target)
        assert refused.exit_code == 1 and f"error: {message}" in refused.output, refused.output
    assert registry.resolve(MODEL, "champion") == "v2"  # nothing moved

    moved = ok(cli("rollback", "v1", "--reason", "v2 misbehaves")).output
    assert "champion of fraud: v2 → v1 (rollback to v1 by " in moved
    # What a model server following the champion reads at its next poll:
    assert registry.resolve(MODEL, "champion") == "v1"
    history = json.loads(ok(cli("champion", "--json")).output)["history"]
    assert [(h["previous"], h["version"]) for h in history] == [
        (None, "v1"),
        ("v1", "v2"),
        ("v2", "v1"),
    ]
    assert history[-1]["reason"].startswith("rollback to v1 by ")
    assert history[-1]["reason"].endswith(": v2 misbehaves")

    forced = json.loads(ok(cli("rollback", "v3", "--force", "--json")).output)
    assert (forced["version"], forced["previous"]) == ("v3", "v1")
    assert len(registry.champion_history(MODEL)) == 4


def test_interrupted_registration_is_listed_and_collected(
    registry: Registry,
    source: Path,
    cli: Invoke,
) -> None:
    registry.register(MODEL, source, lineage(1), {"roc_auc": 0.91})
    complete = [(o.uri, o.size) for o in registry.status(MODEL, "v1").objects]
    interrupted_registration(registry, source, survive=3)
    left = registry.status(MODEL, "v2")
    assert left.state == "incomplete" and left.manifest is None
    assert sorted(left.stored()) == [
        ".claim",
        "detector/meta.json",
        "detector/state.npz",
        "metrics.json",
    ]

    # A fresh one may be a registration in progress: the default minimum age keeps it.
    kept = json.loads(ok(cli("gc", "--json")).output)["versions"]
    assert [(v["version"], v["remove"], v["removed"]) for v in kept] == [("v2", False, False)]
    assert "kept: written" in ok(cli("gc")).output

    dry = ok(cli("gc", "--dry-run", "--min-age", "0s")).output
    assert "dry run: nothing removed" in dry and "would remove" in dry
    assert registry.status(MODEL, "v2").objects == left.objects

    gone = json.loads(ok(cli("gc", "--min-age", "0", "--json")).output)
    assert gone["dry_run"] is False and gone["min_age_seconds"] == 0
    (decision,) = gone["versions"]
    assert (decision["version"], decision["removed"], decision["objects"]) == ("v2", True, 3)
    assert decision["size"] == 2 + 512 + 2

    assert sorted(registry.status(MODEL, "v2").stored()) == [".claim"]  # the tombstone
    assert [(o.uri, o.size) for o in registry.status(MODEL, "v1").objects] == complete
    listed = json.loads(ok(cli("list", "--json")).output)["versions"]
    assert [v["version"] for v in listed] == ["v1"]
    every = json.loads(ok(cli("list", "--all", "--json")).output)["versions"]
    assert [(v["version"], v["state"]) for v in every] == [("v1", "complete"), ("v2", "collected")]
    assert "no incomplete versions of fraud" in ok(cli("gc", "--min-age", "0")).output
    # The collected id is never handed out again.
    assert registry.register(MODEL, source, lineage(2)).version == "v3"


def test_min_age_must_be_a_duration(cli: Invoke) -> None:
    result = cli("gc", "--min-age", "soon")
    assert result.exit_code == 2 and "give a duration such as 90s, 30m, 1h or 2d" in result.output
