"""Client errors at the trigger are 4xx with a reason, never a 500.

A body over :data:`~closedloop.trigger.app.MAX_BODY_BYTES` is a 413, whether it declares
its ``Content-Length`` or comes chunked; JSON nested too deeply for Python's parser, and
an alarm whose model name, version or window times the state cannot file, are a 400 —
and nothing of such an alarm is stored.

The app is the real trigger ASGI app around a real :class:`RetrainTrigger` whose state is
a local directory; its backend is a stand-in (no alarm here fires a run that runs). The
last test serves it with uvicorn on loopback, as ``closedloop trigger serve`` does.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar import asgi
from closedloop.drift.sidecar.alarm import DriftAlarm, WindowReport, alarm_id
from closedloop.storage import Store
from closedloop.trigger.app import MAX_BODY_BYTES, build_app
from closedloop.trigger.backends import BackendRunState, RunRequest
from closedloop.trigger.service import RetrainTrigger, TriggerSettings
from closedloop.trigger.state import TriggerStore

EVENTS_PORT, OPS_PORT = 8000, 9000
FEATURES = ("amount", "channel")


class StandInBackend:
    """Accepts every run and never finishes one."""

    name = "stand-in"
    shared = True

    def declared_inputs(self) -> frozenset[str]:
        return frozenset({"model_name"})

    def find(self, run_name: str) -> str | None:
        return None

    def submit(self, request: RunRequest) -> str:
        return f"run-{uuid.uuid4().hex[:8]}"

    def state(self, run_id: str) -> BackendRunState:
        raise AssertionError("no run is followed in these tests")

    def close(self) -> None:
        return


def window(sequence: int, closed_at: float) -> WindowReport:
    return WindowReport(
        sequence=sequence,
        opened_at=closed_at - 30,
        closed_at=closed_at,
        n_rows=1000,
        close_reason="size",
        p_values=dict.fromkeys(FEATURES, 1e-12),
        distances=dict.fromkeys(FEATURES, 0.3),
        effect_sizes=dict.fromkeys(FEATURES, 0.3),
        drifted_features=FEATURES,
    )


def alarm(sequence: int, model: str = "fraud", version: str = "v1") -> DriftAlarm:
    return DriftAlarm(
        model_name=model,
        model_version=version,
        replica="r1",
        window=window(sequence, time.time()),
        history=(),
        p_value=0.01,
        effect_size_threshold=0.1,
        archive_uri="s3://closedloop/feedback",
    )


@dataclass
class Trigger:
    app: Any
    trigger: RetrainTrigger
    state_dir: Path

    def post(self, headers: dict[str, str], content: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport) as client:
                return await client.post(
                    f"http://127.0.0.1:{EVENTS_PORT}/", headers=headers, content=content
                )

        return asyncio.run(call())

    def stored(self) -> list[str]:
        return sorted(str(p.relative_to(self.state_dir)) for p in self.state_dir.rglob("*.json"))


def make_trigger(state_dir: Path) -> RetrainTrigger:
    settings = TriggerSettings(
        state_uri=str(state_dir), registry_uri=str(state_dir.parent / "registry"), replica="t1"
    )
    return RetrainTrigger(
        settings, DriftPolicy(), StandInBackend(), TriggerStore(Store(), str(state_dir))
    )


@pytest.fixture()
def trigger(tmp_path: Path) -> Trigger:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    # The reconciler is not started: decisions are made in the request.
    made = make_trigger(state_dir)
    return Trigger(build_app(made, EVENTS_PORT, OPS_PORT), made, state_dir)


def test_a_valid_alarm_is_decided(trigger: Trigger) -> None:
    headers, body = alarm(1).to_http()
    answer = trigger.post(headers, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "decided"


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        # Deep inside an otherwise valid alarm's data.
        b'{"schema_version": 2, "window": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["open-brackets", "closed-objects", "inside-an-alarm"],
)
def test_deeply_nested_json_is_a_400(trigger: Trigger, body: bytes) -> None:
    headers, _ = alarm(2).to_http()
    answer = trigger.post(headers, body)
    assert answer.status_code == 400, answer.text
    assert "nested too deeply" in answer.json()["error"]
    assert trigger.stored() == []


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


async def _async_chunks(total: int) -> AsyncIterator[bytes]:
    for chunk in _chunks(total):
        yield chunk


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_a_413(trigger: Trigger, declared: bool) -> None:
    headers, _ = alarm(3).to_http()
    size = MAX_BODY_BYTES + 1
    # bytes carry a Content-Length; a generator goes chunked, its size unknown upfront.
    content = b" " * size if declared else _async_chunks(size)
    answer = trigger.post(headers, content)
    assert answer.status_code == 413, answer.text
    assert f"over the limit of {MAX_BODY_BYTES} bytes" in answer.json()["error"]


def test_a_body_at_the_limit_is_read(trigger: Trigger) -> None:
    headers, body = alarm(4).to_http()
    padded = body + b" " * (MAX_BODY_BYTES - len(body))  # JSON allows trailing blanks
    answer = trigger.post(headers, padded)
    assert answer.status_code == 200, answer.text


def _raw(alarm_: DriftAlarm, change: Any) -> tuple[dict[str, str], bytes]:
    """The alarm's headers with its data changed as no sidecar would send it."""
    headers, body = alarm_.to_http()
    data = json.loads(body)
    change(data)
    return headers, json.dumps(data).encode()


def _set(path: tuple[str, ...], value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_set(("model_name",), "../../etc"), "model_name '../../etc' cannot be filed"),
        (_set(("model_name",), "m" * 3000), "cannot be filed"),
        (_set(("model_version",), "v1/../v2"), "model_version 'v1/../v2' cannot be filed"),
        (_set(("model_name",), "fraud\n"), "model_name 'fraud\\n' cannot be filed"),
        (_set(("window", "closed_at"), 1e300), "closed_at 1e+300 is not a Unix time"),
        (_set(("window", "opened_at"), -1e17), "opened_at -1e+17 is not a Unix time"),
    ],
    ids=["path", "long-name", "version-path", "newline", "far-future", "before-1970"],
)
def test_an_alarm_the_state_cannot_file_is_a_400(
    trigger: Trigger, change: Any, reason: str
) -> None:
    headers, body = _raw(alarm(5), change)
    headers["ce-id"] = _id_for(json.loads(body))  # a forged alarm's id matches its window
    answer = trigger.post(headers, body)
    assert answer.status_code == 400, answer.text
    assert reason in answer.json()["error"]
    assert trigger.stored() == []


def _id_for(data: dict[str, Any]) -> str:
    return alarm_id(
        data["model_name"], data["model_version"], data["replica"], data["window"]["sequence"]
    )


# -- over HTTP, as `closedloop trigger serve` serves it --------------------------------
@pytest.fixture()
def served(tmp_path: Path) -> Iterator[int]:
    """The trigger app under uvicorn on loopback; yields the events port."""
    import uvicorn

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    sockets = [asgi.bind("127.0.0.1", 0), asgi.bind("127.0.0.1", 0)]
    ports = [asgi.port_of(s) for s in sockets]
    app = build_app(make_trigger(state_dir), ports[0], ports[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield ports[0]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        for sock in sockets:
            sock.close()


def _status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.slow
def test_over_http_every_client_error_is_a_4xx(served: int) -> None:
    url = f"http://127.0.0.1:{served}/"
    headers, body = alarm(6).to_http()
    with httpx.Client(timeout=30) as client:
        assert client.post(url, headers=headers, content=body).status_code == 200
        deep = client.post(url, headers=headers, content=b"[" * 100_000)
        assert deep.status_code == 400 and "nested too deeply" in deep.json()["error"]
        chunked = client.post(url, headers=headers, content=_chunks(4 * MAX_BODY_BYTES))
        assert chunked.status_code == 413, chunked.text
        declared = client.post(url, headers=headers, content=b" " * (MAX_BODY_BYTES + 1))
        assert declared.status_code == 413, declared.text
    # A declared size over the limit is refused before a byte of the body is sent.
    with socket.create_connection(("127.0.0.1", served), timeout=30) as conn:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        conn.sendall(
            f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
            f"Content-Length: {100 * MAX_BODY_BYTES}\r\n\r\n".encode()
        )
        answer = conn.recv(65536)
    assert _status_of(answer) == 413, answer
