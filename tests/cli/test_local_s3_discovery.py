"""``serve``, ``sidecar serve`` and ``trigger serve`` find the local S3 store the same way.

With no S3 settings in the environment, each command attaches to the running local store
of ``$CLOSEDLOOP_HOME`` (what ``closedloop s3 up`` starts) and goes on with its
settings, without ``eval "$(closedloop s3 status --env)"`` first. Here the store is a
stand-in for :func:`closedloop.local.s3.attach`, and each command stops at its first step
after the discovery; ``tests/integration/test_local_s3_cli.py`` runs the real thing.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from closedloop.cli._local import s3_configured
from closedloop.cli.main import app
from closedloop.errors import ClosedLoopError
from closedloop.local.s3 import free_port
from closedloop.storage import S3Settings

ENDPOINT = "http://127.0.0.1:1"
S3_VARIABLES = (
    "CLOSEDLOOP_S3_ENDPOINT",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


class StoppedHere(ClosedLoopError):
    """Raised by the first step after the S3 discovery, to end the command there."""


class RunningStore:
    """What :func:`closedloop.local.s3.attach` returns for a running store."""

    attached: list[Path]

    def __init__(self) -> None:
        self.attached = []

    def __call__(self, data_dir: Path) -> RunningStore:
        self.attached.append(Path(data_dir))
        return self

    def settings(self) -> S3Settings:
        return S3Settings(endpoint_url=ENDPOINT, access_key="local", secret_key="secret")

    def store(self) -> Any:
        class Buckets:
            def ensure_bucket(self, bucket: str) -> None:
                return

        return Buckets()


@pytest.fixture()
def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningStore]:
    """No S3 settings in the environment; a running local store under ``$CLOSEDLOOP_HOME``."""
    # Unset here, so whatever a command exports is undone after the test.
    exported = S3Settings(endpoint_url=ENDPOINT, access_key="a", secret_key="b").to_env()
    for name in {*S3_VARIABLES, *exported}:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(tmp_path / "home"))
    running = RunningStore()
    monkeypatch.setattr("closedloop.local.s3.attach", running)
    # The services install a SIGTERM handler: keep it to this test.
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield running
    finally:
        signal.signal(signal.SIGTERM, previous)


def _policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({}))
    return str(path)


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_serve_attaches_to_the_local_store(
    local_store: RunningStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[S3Settings | None] = []

    def check_version(registry_uri: str, s3: S3Settings | None, *args: Any) -> None:
        seen.append(s3)
        raise StoppedHere("stopped after the S3 discovery")

    monkeypatch.setattr("closedloop.cli.serve._check_version", check_version)
    result = _invoke(["serve", "--port", str(free_port())])
    assert "stopped after the S3 discovery" in result.output, result.output
    assert local_store.attached == [tmp_path / "home" / "s3"]
    assert seen and seen[0] is not None and seen[0].endpoint_url == ENDPOINT


def test_sidecar_serve_attaches_to_the_local_store(
    local_store: RunningStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, str]] = []

    def run_sidecar(options: Any) -> None:
        seen.append(S3Settings.from_env().to_env())

    monkeypatch.setattr("closedloop.drift.sidecar.app.run_sidecar", run_sidecar)
    args = ["sidecar", "serve", "--registry-uri", "s3://closedloop/registry"]
    args += ["--model-name", "fraud", "--policy", _policy(tmp_path)]
    args += ["--state-dir", str(tmp_path / "sidecar")]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    assert local_store.attached == [tmp_path / "home" / "s3"]
    # Exported for what the service starts and for its own Store().
    assert seen and seen[0]["CLOSEDLOOP_S3_ENDPOINT"] == ENDPOINT
    assert seen[0]["AWS_ACCESS_KEY_ID"] == "local"


def test_trigger_serve_attaches_to_the_local_store(
    local_store: RunningStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, str]] = []

    def run_trigger(options: Any) -> None:
        seen.append(S3Settings.from_env().to_env())

    monkeypatch.setattr("closedloop.trigger.app.run_trigger", run_trigger)
    args = ["trigger", "serve", "--policy", _policy(tmp_path)]
    args += ["--registry-uri", "s3://closedloop/registry"]
    args += ["--state-uri", "s3://closedloop/trigger"]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    assert local_store.attached == [tmp_path / "home" / "s3"]
    assert seen and seen[0]["CLOSEDLOOP_S3_ENDPOINT"] == ENDPOINT


def test_configured_s3_is_used_as_it_is(
    local_store: RunningStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOSEDLOOP_S3_ENDPOINT", "http://s3.example:9000")
    monkeypatch.setattr("closedloop.trigger.app.run_trigger", lambda options: None)
    args = ["trigger", "serve", "--policy", _policy(tmp_path)]
    args += ["--registry-uri", "s3://closedloop/registry"]
    args += ["--state-uri", "s3://closedloop/trigger"]
    assert _invoke(args).exit_code == 0
    assert local_store.attached == []


@pytest.mark.parametrize(
    ("env", "configured"),
    [
        ({}, False),
        ({"AWS_DEFAULT_REGION": "eu-west-1"}, False),
        ({"CLOSEDLOOP_S3_ENDPOINT": "http://minio:9000"}, True),
        # A cluster's ConfigMap: empty for AWS S3.
        ({"CLOSEDLOOP_S3_ENDPOINT": ""}, True),
        # The Secret alone (the ConfigMap is mapped optionally).
        ({"AWS_ACCESS_KEY_ID": "AKIA"}, True),
        ({"AWS_ENDPOINT_URL_S3": "http://minio:9000"}, True),
        ({"AWS_ENDPOINT_URL": ""}, False),
    ],
)
def test_one_rule_says_when_s3_is_configured(env: dict[str, str], configured: bool) -> None:
    assert s3_configured(env) is configured
