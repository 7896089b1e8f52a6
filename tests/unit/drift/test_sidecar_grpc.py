"""gRPC traffic and the drift sidecar (issue "cluster path", defect 11).

The Seldon executor logs calls on its gRPC port with the same ``Ce-Type`` values as
REST calls, but the body is the protobuf-encoded message and ``Content-Type`` is
``application/protobuf`` (seldon-core ``executor/api/payload/proto.go``;
``executor/logger/worker.go`` sets it as the event's datacontenttype). Drift watches
REST traffic only: such events are answered 202 (the executor logs every non-2xx
answer as an error and never retries), counted in
``closedloop_sidecar_grpc_events_skipped_total`` by type, and kept out of every window.

The sidecar here is the real ASGI app around a real :class:`DriftMonitor` with a real
fitted detector, its worker threads started as the app's lifespan starts them; only S3
is absent (nothing in these tests reaches it).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.drift.detector import fit_detector
from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar.app import build_app
from closedloop.drift.sidecar.events import (
    FEEDBACK_TYPE,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    is_protobuf,
)
from closedloop.drift.sidecar.loader import ServedDetector
from closedloop.drift.sidecar.monitor import DriftMonitor, MonitorSettings
from closedloop.ml.schema import InputSchema, infer_schema
from closedloop.storage import S3Settings, Store

EVENTS_PORT, OPS_PORT = 8000, 9000
EVENTS = f"http://127.0.0.1:{EVENTS_PORT}/"
METRICS = f"http://127.0.0.1:{OPS_PORT}/metrics"
TYPES = {"request": REQUEST_TYPE, "response": RESPONSE_TYPE, "feedback": FEEDBACK_TYPE}
# Bytes shaped like a marshalled SeldonMessage (field 3 = data, a DefaultData with
# names); the sidecar never decodes them, which is the point.
PROTOBUF_BODY = b"\x1a\x0c\n\x06amount\n\x02id"


@pytest.fixture(scope="module")
def served() -> ServedDetector:
    reference = generate_transactions(1500, seed=0)
    schema = infer_schema(reference, DEFAULT_TARGET)
    return ServedDetector("fraud", "v1", fit_detector(reference, schema, seed=0), schema)


class Client:
    """Synchronous calls into the ASGI app; the URL's port picks the events or the ops app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport) as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(call())

    def get(self, url: str) -> httpx.Response:
        return self.request("GET", url)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture()
def sidecar(served: ServedDetector, tmp_path: Path) -> Iterator[tuple[Client, DriftMonitor]]:
    settings = MonitorSettings(
        replica="replica-a",
        state_dir=tmp_path / "state",
        trigger_url="http://127.0.0.1:9/",
        archive_uri="s3://unused/archive",
    )
    policy = DriftPolicy(window_size=1000, min_window_rows=1000, min_samples=1000)
    store = Store(S3Settings(endpoint_url="http://127.0.0.1:9"))
    monitor = DriftMonitor(settings, policy, served, store)
    monitor.open()
    app = build_app(monitor, EVENTS_PORT, OPS_PORT)
    monitor.start()  # what the app's lifespan does under uvicorn
    try:
        yield Client(app), monitor
    finally:
        monitor.stop()


def headers(kind: str, content_type: str, **changes: str | None) -> dict[str, str]:
    """Binary-mode CloudEvent headers as the executor's request logger sends them."""
    base = {
        "Ce-Specversion": "1.0",
        "Ce-Id": str(uuid.uuid4()),
        "Ce-Source": "http://127.0.0.1:8000/",
        "Ce-Type": TYPES[kind],
        "Ce-Requestid": str(uuid.uuid4()),
        "Ce-Modelid": "model",
        "Ce-Namespace": "closedloop",
        "Ce-Endpoint": "main",
        "Ce-Inferenceservicename": "fraud",
        "Ce-Protocol": "seldon",
        "Content-Type": content_type,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def json_request(schema: InputSchema, rows: int = 3) -> bytes:
    frame = generate_transactions(rows, seed=1).loc[:, list(schema.feature_names)]
    for spec in schema.columns:
        if spec.kind == "datetime":
            frame[spec.name] = frame[spec.name].dt.strftime("%Y-%m-%dT%H:%M:%S")
    values = frame.astype(object).where(frame.notna(), None).to_numpy().tolist()
    ndarray = [[v.item() if hasattr(v, "item") else v for v in row] for row in values]
    return json.dumps({"data": {"names": list(schema.feature_names), "ndarray": ndarray}}).encode()


def metric(client: Client, name: str, **labels: str) -> float:
    text = client.get(METRICS).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


@pytest.mark.parametrize("kind", ["request", "response", "feedback"])
def test_grpc_events_are_skipped_counted_and_kept_out_of_windows(
    sidecar: tuple[Client, DriftMonitor], kind: str
) -> None:
    client, monitor = sidecar
    for _ in range(2):
        answer = client.post(
            EVENTS, headers=headers(kind, "application/protobuf"), content=PROTOBUF_BODY
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "skipped"
        assert "REST" in answer.json()["reason"]
    skipped = "closedloop_sidecar_grpc_events_skipped_total"
    assert metric(client, skipped, model="fraud", version="v1", type=kind) == 2
    assert metric(client, skipped) == 2, "only this type was counted"
    assert metric(client, "closedloop_sidecar_events_total", type=kind, outcome="skipped") == 2
    assert metric(client, "closedloop_sidecar_events_rejected_total") == 0
    status = monitor.status()
    assert status["rows_accepted"] == 0 and status["window_rows"] == 0
    assert metric(client, "closedloop_sidecar_predictions_logged") == 0


def test_the_same_event_as_json_enters_the_window(
    sidecar: tuple[Client, DriftMonitor], served: ServedDetector
) -> None:
    """Control: the content type alone decides; a REST request with the same headers counts."""
    client, monitor = sidecar
    answer = client.post(
        EVENTS, headers=headers("request", "application/json"), content=json_request(served.schema)
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "accepted", "rows": 3}
    assert monitor.status()["window_rows"] == 3
    assert metric(client, "closedloop_sidecar_grpc_events_skipped_total") == 0


def test_a_grpc_event_is_still_checked_as_a_cloudevent(
    sidecar: tuple[Client, DriftMonitor],
) -> None:
    client, _ = sidecar
    no_id = headers("request", "application/protobuf", **{"Ce-Id": None})
    answer = client.post(EVENTS, headers=no_id, content=PROTOBUF_BODY)
    assert answer.status_code == 400 and answer.json()["reason"] == "attributes"
    wrong_type = headers("request", "application/protobuf", **{"Ce-Type": "io.example.other"})
    answer = client.post(EVENTS, headers=wrong_type, content=PROTOBUF_BODY)
    assert answer.status_code == 400 and answer.json()["reason"] == "type"
    assert metric(client, "closedloop_sidecar_grpc_events_skipped_total") == 0


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/protobuf", True),
        ("Application/Protobuf; proto=seldon.protos.SeldonMessage", True),
        ("application/x-protobuf", True),
        ("application/json", False),
        ("application/octet-stream", False),
        (None, False),
    ],
)
def test_is_protobuf(content_type: str | None, expected: bool) -> None:
    assert is_protobuf(content_type) is expected
