"""`closedloop s3 up|status|down` as a user runs it, and the local server's failure modes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from closedloop.local import s3 as local_s3
from closedloop.local.s3 import LocalS3, LocalS3Error, read_state
from closedloop.storage import S3Settings, Store

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).with_name("closedloop"))


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOSEDLOOP_HOME": str(home)}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def weed_pids(data_dir: Path) -> list[int]:
    """Every live process whose command line names this data directory."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(data_dir).encode() in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def test_up_round_trip_down_leaves_no_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = run("s3", "up", "--bucket", "alpha", "--bucket", "beta", home=home)
    assert up.returncode == 0, up.stderr
    state = read_state(home / "s3")
    assert state is not None and state.endpoint in up.stdout.replace("\n", "")
    try:
        exports = run("s3", "status", "--env", home=home)
        env = dict(
            line.removeprefix("export ").split("=", 1) for line in exports.stdout.splitlines()
        )
        store = Store(S3Settings.from_env(env))
        store.write_bytes("s3://beta/hello.txt", b"round trip")
        assert store.read_bytes("s3://beta/hello.txt") == b"round trip"
        status = run("s3", "status", home=home)
        assert status.returncode == 0 and "alpha" in status.stdout and "beta" in status.stdout
        again = run("s3", "up", home=home)
        assert again.returncode == 1 and "already runs" in again.stderr
    finally:
        down = run("s3", "down", home=home)
    assert down.returncode == 0, down.stderr
    assert weed_pids(home / "s3") == []
    gone = run("s3", "status", home=home)
    assert gone.returncode == 1
    assert gone.stderr.strip().startswith("error: no local S3 server is running")
    assert "Traceback" not in gone.stderr


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run("s3", "up", "--port", str(port), home=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") <= 2  # rich may wrap the one line
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr.replace("\n", " ")
    assert weed_pids(tmp_path / "s3") == []


def test_never_ready_is_reported_and_cleaned_up(tmp_path: Path) -> None:
    server = LocalS3(tmp_path / "s3", ready_timeout=0.2)
    with pytest.raises(LocalS3Error, match=r"did not become ready within 0s|exited during startup"):
        server.start()
    assert weed_pids(tmp_path / "s3") == []
    assert read_state(tmp_path / "s3") is None


def test_missing_binary_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_s3.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalS3Error, match="make install"):
        LocalS3(tmp_path / "s3").start()


def test_the_services_find_the_local_store_like_serve_does(tmp_path: Path) -> None:
    """`closedloop trigger serve` with no S3 settings attaches to `closedloop s3 up`'s store."""
    import json
    import time

    import httpx

    from closedloop.local.s3 import free_port

    home = tmp_path / "home"
    assert run("s3", "up", home=home).returncode == 0
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({}))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLOSEDLOOP_S3", "AWS_")) and k != "CLOSEDLOOP_HOME"
    }
    env["CLOSEDLOOP_HOME"] = str(home)
    port, ops = free_port(), free_port()
    trigger = subprocess.Popen(
        [CLI, "trigger", "serve", "--policy", str(policy),
         "--registry-uri", "s3://closedloop/registry", "--state-uri", "s3://closedloop/trigger",
         "--port", str(port), "--metrics-port", str(ops), "--local-root", str(tmp_path / "runs")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline, healthy = time.monotonic() + 60, False
        while time.monotonic() < deadline and trigger.poll() is None and not healthy:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{ops}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.5)
        assert healthy, (
            trigger.stdout.read() if trigger.poll() is not None else "not healthy in 60 s"
        )
    finally:
        trigger.terminate()
        trigger.wait(timeout=30)
        run("s3", "down", home=home)


def test_the_sidecar_finds_the_local_store_like_serve_does(tmp_path: Path) -> None:
    """`closedloop sidecar serve` with no S3 settings reads the registry on the local store."""
    home = tmp_path / "home"
    assert run("s3", "up", home=home).returncode == 0
    policy = tmp_path / "policy.json"
    policy.write_text("{}")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLOSEDLOOP_S3", "AWS_")) and k != "CLOSEDLOOP_HOME"
    }
    env["CLOSEDLOOP_HOME"] = str(home)
    try:
        sidecar = subprocess.run(
            [CLI, "sidecar", "serve", "--registry-uri", "s3://closedloop/registry",
             "--model-name", "fraud", "--policy", str(policy), "--port", "0",
             "--metrics-port", "0", "--state-dir", str(tmp_path / "sidecar")],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        run("s3", "down", home=home)
    # Past the credentials: the empty registry on the local store has no champion to watch.
    assert sidecar.returncode == 1, sidecar.stderr
    assert "fraud has no champion yet in s3://closedloop/registry" in sidecar.stderr
    assert "credentials" not in sidecar.stderr
