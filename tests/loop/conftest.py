"""Fixtures for the loop tests: a registered model with its detector, and real processes.

Processes are started through the real CLI registration (``register(app)`` of
``closedloop.cli.sidecar`` / ``closedloop.cli.trigger``), on 127.0.0.1 free ports, with
the session's SeaweedFS. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.local.s3 import LocalS3, free_port
from closedloop.ml.schema import InputSchema, infer_schema
from closedloop.registry import Lineage, Registry
from closedloop.storage import Store

HERE = Path(__file__).parent
MODEL = "fraud"
REQUEST = "io.seldon.serving.inference.request"
RESPONSE = "io.seldon.serving.inference.response"
FEEDBACK = "io.seldon.serving.feedback"
LAUNCHER = (
    "import typer\n"
    "from closedloop.cli import sidecar, trigger\n"
    "app = typer.Typer()\n"
    "sidecar.register(app)\n"
    "trigger.register(app)\n"
    "app()\n"
)


# -- processes ------------------------------------------------------------------------
@dataclass
class Service:
    """A service process started through the CLI, with its log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        return self

    def wait_ready(self, timeout: float = 90.0) -> Service:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.health_url, timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready in {timeout}s:\n{self.log()}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"{self.name} ignored SIGTERM for {timeout}s:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


@dataclass
class Ports:
    events: int = field(default_factory=free_port)
    ops: int = field(default_factory=free_port)

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.events}/"

    def ops_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ops}{path}"


@pytest.fixture()
def services() -> Iterator[list[Service]]:
    """Services a test starts; whatever still runs at the end is killed."""
    started: list[Service] = []
    yield started
    for service in started:
        service.stop_quietly()


# -- S3, model, policy ----------------------------------------------------------------
@dataclass(frozen=True)
class LoopS3:
    bucket: str
    store: Store
    env: Mapping[str, str]


@pytest.fixture(scope="session")
def loop_s3(s3_server: LocalS3) -> LoopS3:
    """A bucket of the loop tests and the environment that points processes at S3."""
    store = s3_server.store()
    bucket = f"loop-{uuid.uuid4().hex[:10]}"
    store.ensure_bucket(bucket)
    env = {**os.environ, **s3_server.settings().to_env(), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return LoopS3(bucket, store, env)


@dataclass(frozen=True)
class ServedModel:
    registry_uri: str
    bucket: str
    schema: InputSchema
    store: Store
    env: Mapping[str, str]


@pytest.fixture(scope="session")
def served_model(loop_s3: LoopS3, tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """``fraud`` v1 (champion) in the loop registry: its schema and a real fitted detector."""
    from closedloop.drift.detector import fit_detector, save_detector_dir

    reference = generate_transactions(6000, seed=0)
    schema = infer_schema(reference, DEFAULT_TARGET)
    version_dir = tmp_path_factory.mktemp("version")
    save_detector_dir(fit_detector(reference, schema, seed=0), version_dir / "detector")
    (version_dir / "schema.json").write_text(schema.to_json())
    registry_uri = f"s3://{loop_s3.bucket}/registry"
    registry = Registry(loop_s3.store, registry_uri)
    manifest = registry.register(MODEL, version_dir, Lineage("generated://seed=0", "0" * 64))
    registry.promote(MODEL, manifest.version, "loop tests")
    return ServedModel(registry_uri, loop_s3.bucket, schema, loop_s3.store, loop_s3.env)


def write_policy(path: Path, **overrides: Any) -> Path:
    policy = {
        "window_size": 1000,
        "window_max_age_seconds": 600,
        # Windows close full in these tests; with a full window as the smallest one,
        # min_samples up to k * 1000 stays reachable (DriftPolicy refuses it otherwise).
        "min_window_rows": 1000,
        "p_value": 0.01,
        "effect_size_threshold": 0.1,
        "k": 1,
        "n": 3,
        "min_samples": 500,
        "cooldown_seconds": 3600,
        "daily_cap": 2,
        **overrides,
    }
    path.write_text(json.dumps(policy))
    return path


@pytest.fixture(scope="session")
def policy_file() -> Callable[..., Path]:
    return write_policy


# -- Seldon request-logger events -----------------------------------------------------
def _ndarray(frame: pd.DataFrame, schema: InputSchema) -> list[list[Any]]:
    rows = frame.loc[:, list(schema.feature_names)].copy()
    for spec in schema.columns:
        if spec.kind == "datetime":
            rows[spec.name] = rows[spec.name].dt.strftime("%Y-%m-%dT%H:%M:%S")
    values = rows.astype(object).where(rows.notna(), None).to_numpy().tolist()
    return [[v.item() if hasattr(v, "item") else v for v in row] for row in values]


def request_event(
    frame: pd.DataFrame, schema: InputSchema, event_id: str | None = None, source: str = "tests"
) -> tuple[dict[str, str], bytes]:
    """A binary-mode request CloudEvent as the Seldon executor sends it."""
    headers = {
        "Ce-Specversion": "1.0",
        "Ce-Id": event_id or str(uuid.uuid4()),
        "Ce-Source": source,
        "Ce-Type": REQUEST,
        "Ce-Requestid": str(uuid.uuid4()),
        "Ce-Modelid": "model",
        "Ce-Namespace": "closedloop",
        "Ce-Endpoint": "main",
        "Ce-Inferenceservicename": MODEL,
        "Content-Type": "application/json",
    }
    body = {"data": {"names": list(schema.feature_names), "ndarray": _ndarray(frame, schema)}}
    return headers, json.dumps(body).encode()


def response_body(probabilities: Any, version: str = "v1", puid: str | None = None) -> dict:
    """A model server's answer: class probabilities, the version in ``meta.tags``."""
    meta: dict[str, Any] = {"tags": {"model_name": MODEL, "model_version": version}}
    if puid is not None:
        meta["puid"] = puid
    rows = [[float(p) for p in row] for row in probabilities]
    return {"data": {"names": ["0", "1"], "ndarray": rows}, "meta": meta}


def response_event(
    probabilities: Any, puid: str, version: str = "v1", source: str = "tests"
) -> tuple[dict[str, str], bytes]:
    """A binary-mode response CloudEvent: ``Ce-Requestid`` is the prediction's puid."""
    headers = {
        "Ce-Specversion": "1.0",
        "Ce-Id": str(uuid.uuid4()),
        "Ce-Source": source,
        "Ce-Type": RESPONSE,
        "Ce-Requestid": puid,
        "Content-Type": "application/json",
    }
    return headers, json.dumps(response_body(probabilities, version)).encode()


def feedback_event(
    frame: pd.DataFrame,
    schema: InputSchema,
    event_id: str | None = None,
    response: Mapping[str, Any] | None = None,
) -> tuple[dict[str, str], bytes]:
    """A binary-mode feedback CloudEvent: features in ``request``, labels in ``truth``.

    With *response*, the body echoes the response the client got, whose ``meta.puid``
    names the prediction.
    """
    headers, _ = request_event(frame, schema, event_id)
    headers["Ce-Type"] = FEEDBACK
    body = {
        "request": {
            "data": {"names": list(schema.feature_names), "ndarray": _ndarray(frame, schema)}
        },
        "truth": {"data": {"ndarray": [[int(v)] for v in frame[DEFAULT_TARGET]]}},
        "reward": 1.0,
    }
    if response is not None:
        body["response"] = dict(response)
    return headers, json.dumps(body).encode()


@pytest.fixture(scope="session")
def events() -> Any:
    """The event builders, for test modules (which cannot import this conftest)."""

    class Events:
        request = staticmethod(request_event)
        response = staticmethod(response_event)
        response_body = staticmethod(response_body)
        feedback = staticmethod(feedback_event)

    return Events


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of *name* whose labels include *labels* (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture(scope="session")
def read_metric() -> Callable[..., float]:
    return metric


# -- a receiver standing in for the trigger -------------------------------------------
class DriftReceiver:
    """Records drift CloudEvents; answers 503 to the first ``fail_first`` posts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.posts: list[tuple[dict[str, str], bytes, int]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    status = 503 if len(receiver.posts) < receiver.fail_first else 200
                    receiver.posts.append((dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def delivered(self) -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return [(h, b) for h, b, status in self.posts if status == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[DriftReceiver]:
    server = DriftReceiver(fail_first=2)
    yield server
    server.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll *predicate* until it returns something truthy; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def wait() -> Callable[..., Any]:
    return wait_for


@pytest.fixture(scope="session")
def make_service() -> Callable[..., Service]:
    def make(
        name: str, args: list[str], env: Mapping[str, str], log_dir: Path, ports: Ports
    ) -> Service:
        return Service(name, args, dict(env), log_dir / f"{name}.log", ports.ops_url("/healthz"))

    return make


@pytest.fixture(scope="session")
def new_ports() -> Callable[[], Ports]:
    return Ports


# -- drift alarms as a sidecar sends them ---------------------------------------------
FEATURES = (
    "amount",
    "channel",
    "merchant_category",
    "hour",
    "country",
    "account_age_days",
    "card_present",
)


def window_report(sequence: int, closed_at: float, drifted: bool, n_rows: int = 1000) -> Any:
    """A window as a sidecar reports it; a drifted one also lost quality (it counts)."""
    from closedloop.drift.sidecar.alarm import WindowReport
    from closedloop.quality import QualityResult

    p = 1e-12 if drifted else 0.5
    effect = 0.3 if drifted else 0.02
    drop = 0.3 if drifted else 0.0
    quality = QualityResult(
        "roc_auc", 0.9, 0.9 - drop, drop, 1e-9 if drifted else 0.6, 0.4, 0.1, 500
    )
    return WindowReport(
        sequence=sequence,
        opened_at=closed_at - 30,
        closed_at=closed_at,
        n_rows=n_rows,
        close_reason="size",
        p_values={f: p for f in FEATURES},
        distances={f: effect for f in FEATURES},
        effect_sizes={f: effect for f in FEATURES},
        drifted_features=FEATURES if drifted else (),
        quality=quality,
    )


def drift_alarm(
    sequence: int, replica: str = "r1", closed_at: float | None = None, version: str = "v1"
) -> Any:
    """A drifted window with two drifted windows before it, as a sidecar would send."""
    from closedloop.drift.sidecar.alarm import DriftAlarm

    closed = time.time() if closed_at is None else closed_at
    history = tuple(
        window_report(sequence - k, closed - 30 * k, True) for k in (2, 1) if sequence - k >= 1
    )
    return DriftAlarm(
        model_name=MODEL,
        model_version=version,
        replica=replica,
        window=window_report(sequence, closed, True),
        history=history,
        p_value=0.01,
        effect_size_threshold=0.1,
        archive_uri="s3://closedloop/feedback",
    )


@pytest.fixture(scope="session")
def make_alarm() -> Callable[..., Any]:
    return drift_alarm
