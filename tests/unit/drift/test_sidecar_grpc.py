"""gRPC traffic and the drift sidecar (issue "cluster path", defect 11).

The Seldon executor logs calls on its gRPC port with the same ``Ce-Type`` values as
REST calls, but the body is the protobuf-encoded message and ``Content-Type`` is
``application/protobuf`` (seldon-core ``executor/api/payload/proto.go``;
``executor/logger/worker.go`` sets it as the event's datacontenttype). Drift watches
REST traffic only: such events are answered 202 (the executor logs every non-2xx
answer as an error and never retries), counted in
``closedloop_sidecar_grpc_events_skipped_total`` by type, and kept out of every window.

The sidecar here is the real monitor, with a real fitted detector, behind its real HTTP
servers in this process (:mod:`sidecar_harness`); only S3 is absent (nothing in these
tests reaches it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sidecar_harness import (
    RunningSidecar,
    event_headers,
    make_monitor,
    ndarray_body,
    running_sidecar,
    served_detector,
)

from closedloop.drift.sidecar.events import is_protobuf
from closedloop.drift.sidecar.loader import ServedDetector

# Bytes shaped like a marshalled SeldonMessage (field 3 = data, a DefaultData with
# names); the sidecar never decodes them, which is the point.
PROTOBUF_BODY = b"\x1a\x0c\n\x06amount\n\x02id"


@pytest.fixture(scope="module")
def served() -> ServedDetector:
    return served_detector()


@pytest.fixture()
def sidecar(served: ServedDetector, tmp_path: Path) -> Iterator[RunningSidecar]:
    monitor = make_monitor(served, tmp_path / "state")
    monitor.open()
    with running_sidecar(monitor) as running:
        yield running


def headers(kind: str, content_type: str, **changes: str | None) -> dict[str, str]:
    return event_headers(kind, content_type, Ce_Protocol="seldon", **changes)


@pytest.mark.parametrize("kind", ["request", "response", "feedback"])
def test_grpc_events_are_skipped_counted_and_kept_out_of_windows(
    sidecar: RunningSidecar, kind: str
) -> None:
    metric, monitor = sidecar.metric, sidecar.monitor
    for _ in range(2):
        answer = sidecar.post(headers(kind, "application/protobuf"), PROTOBUF_BODY)
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "skipped"
        assert "REST" in answer.json()["reason"]
    skipped = "closedloop_sidecar_grpc_events_skipped_total"
    assert metric(skipped, model="fraud", version="v1", type=kind) == 2
    assert metric(skipped) == 2, "only this type was counted"
    assert metric("closedloop_sidecar_events_total", type=kind, outcome="skipped") == 2
    assert metric("closedloop_sidecar_events_rejected_total") == 0
    status = monitor.status()
    assert status["rows_accepted"] == 0 and status["window_rows"] == 0
    assert metric("closedloop_sidecar_predictions_logged") == 0


def test_the_same_event_as_json_enters_the_window(
    sidecar: RunningSidecar, served: ServedDetector
) -> None:
    """Control: the content type alone decides; a REST request with the same headers counts."""
    answer = sidecar.post(headers("request", "application/json"), ndarray_body(served.schema))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "accepted", "rows": 3}
    assert sidecar.monitor.status()["window_rows"] == 3
    assert sidecar.metric("closedloop_sidecar_grpc_events_skipped_total") == 0


def test_a_grpc_event_is_still_checked_as_a_cloudevent(sidecar: RunningSidecar) -> None:
    no_id = headers("request", "application/protobuf", Ce_Id=None)
    answer = sidecar.post(no_id, PROTOBUF_BODY)
    assert answer.status_code == 400 and answer.json()["reason"] == "attributes"
    wrong_type = headers("request", "application/protobuf", Ce_Type="io.example.other")
    answer = sidecar.post(wrong_type, PROTOBUF_BODY)
    assert answer.status_code == 400 and answer.json()["reason"] == "type"
    assert sidecar.metric("closedloop_sidecar_grpc_events_skipped_total") == 0


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
