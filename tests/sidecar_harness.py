"""A drift sidecar in this process: the real monitor behind its real HTTP servers, in a thread.

For tests that want the event port's HTTP behaviour without a subprocess: the monitor
is real (journal, windows, a fitted detector); S3 is absent (nothing here reaches it).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar import asgi
from closedloop.drift.sidecar.app import MAX_BODY_BYTES, SidecarServer
from closedloop.drift.sidecar.events import FEEDBACK_TYPE, REQUEST_TYPE, RESPONSE_TYPE
from closedloop.drift.sidecar.loader import ServedDetector
from closedloop.drift.sidecar.monitor import DriftMonitor, MonitorSettings
from closedloop.ml.schema import InputSchema, infer_schema
from closedloop.storage import S3Settings, Store

TYPES = {"request": REQUEST_TYPE, "response": RESPONSE_TYPE, "feedback": FEEDBACK_TYPE}


def served_detector(rows: int = 1500) -> ServedDetector:
    """``fraud`` v1: a detector fitted on generated transactions, and their schema."""
    from closedloop.drift.detector import fit_detector

    reference = generate_transactions(rows, seed=0)
    schema = infer_schema(reference, DEFAULT_TARGET)
    return ServedDetector("fraud", "v1", fit_detector(reference, schema, seed=0), schema)


def event_headers(kind: str = "request", content_type: str = "application/json", **changes: Any):
    """Binary-mode CloudEvent headers as the executor's request logger sends them."""
    base: dict[str, str | None] = {
        "Ce-Specversion": "1.0",
        "Ce-Id": str(uuid.uuid4()),
        "Ce-Source": "http://127.0.0.1:8000/",
        "Ce-Type": TYPES[kind],
        "Ce-Requestid": str(uuid.uuid4()),
        "Ce-Modelid": "model",
        "Ce-Namespace": "closedloop",
        "Ce-Endpoint": "main",
        "Ce-Inferenceservicename": "fraud",
        "Content-Type": content_type,
    }
    base.update({k.replace("_", "-"): v for k, v in changes.items()})
    return {k: v for k, v in base.items() if v is not None}


def ndarray_body(schema: InputSchema, rows: int = 3, seed: int = 1) -> bytes:
    """A prediction request of *rows* generated rows, with names."""
    frame = generate_transactions(rows, seed=seed).loc[:, list(schema.feature_names)]
    for spec in schema.columns:
        if spec.kind == "datetime":
            frame[spec.name] = frame[spec.name].dt.strftime("%Y-%m-%dT%H:%M:%S")
    values = frame.astype(object).where(frame.notna(), None).to_numpy().tolist()
    ndarray = [[v.item() if hasattr(v, "item") else v for v in row] for row in values]
    return json.dumps({"data": {"names": list(schema.feature_names), "ndarray": ndarray}}).encode()


@dataclass
class RunningSidecar:
    """A monitor served on two loopback ports by :class:`SidecarServer`, in a thread."""

    monitor: DriftMonitor
    events_port: int
    ops_port: int
    server: SidecarServer
    thread: threading.Thread
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.events_port}/"

    def ops_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ops_port}{path}"

    def post(self, headers: dict[str, str], body: bytes) -> httpx.Response:
        return self.client.post(self.events_url, headers=headers, content=body)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of *name* whose labels include *labels* (0 if none)."""
        text = self.client.get(self.ops_url("/metrics")).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )


def make_monitor(
    served: ServedDetector, state_dir: Path, policy: DriftPolicy | None = None, **settings: Any
) -> DriftMonitor:
    """A monitor whose archive and trigger point at closed ports."""
    options = MonitorSettings(
        replica="replica-a",
        state_dir=state_dir,
        trigger_url="http://127.0.0.1:9/",
        archive_uri="s3://unused/archive",
        **settings,
    )
    policy = policy or DriftPolicy(window_size=1000, min_window_rows=1000, min_samples=1000)
    return DriftMonitor(
        options, policy, served, Store(S3Settings(endpoint_url="http://127.0.0.1:9"))
    )


@contextlib.contextmanager
def running_sidecar(
    monitor: DriftMonitor, max_body_bytes: int = MAX_BODY_BYTES
) -> Iterator[RunningSidecar]:
    """Serve an opened (not started) monitor until the block ends, then stop it cleanly."""
    events, ops = asgi.bind("127.0.0.1", 0), asgi.bind("127.0.0.1", 0)
    server = SidecarServer(monitor, events, ops, max_body_bytes=max_body_bytes, log_level="warning")
    thread = threading.Thread(target=server.run, name="sidecar-under-test", daemon=True)
    running = RunningSidecar(monitor, asgi.port_of(events), asgi.port_of(ops), server, thread)
    thread.start()
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if running.client.get(running.ops_url("/healthz")).status_code == 200:
                break
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the sidecar did not become healthy")
        time.sleep(0.05)
    try:
        yield running
    finally:
        running.client.close()
        server.stop()
        thread.join(30)
        assert not thread.is_alive(), "the sidecar did not stop"
