"""The local request logger: executor-shaped CloudEvents, asynchronous, best effort."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from closedloop.local.s3 import free_port
from closedloop.serving.request_logger import (
    FEEDBACK_TYPE,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    EventContext,
    RequestLogger,
    build_event_message,
)

from .conftest import EventReceiver, header

CONTEXT = EventContext(
    source="http://pod-0:9000/",
    model_id="model",
    inference_service_name="fraud",
    namespace="ns",
    endpoint="default",
)
BODY = b'{"data": {"names": ["a"], "ndarray": [[1.5]]}}'


def test_event_headers_and_body_match_the_executor() -> None:
    headers, body = build_event_message(REQUEST_TYPE, "puid-1", BODY, "application/json", CONTEXT)
    assert body == BODY
    assert headers["Ce-Specversion"] == "1.0"
    assert headers["Ce-Type"] == REQUEST_TYPE
    assert headers["Ce-Source"] == "http://pod-0:9000/"
    assert headers["Ce-Requestid"] == "puid-1"
    assert headers["Ce-Modelid"] == "model"
    assert headers["Ce-Inferenceservicename"] == "fraud"
    assert headers["Ce-Namespace"] == "ns"
    assert headers["Ce-Endpoint"] == "default"
    assert headers["Ce-Protocol"] == "seldon"
    assert headers["Content-Type"] == "application/json"
    assert headers["Ce-Time"].endswith("Z")
    event = from_http(HTTPMessage({k.lower(): v for k, v in headers.items()}, body), JSONFormat())
    assert event.get_type() == REQUEST_TYPE and event.get_data() == {
        "data": {"names": ["a"], "ndarray": [[1.5]]}
    }
    other, _ = build_event_message(REQUEST_TYPE, "puid-1", BODY, "application/json", CONTEXT)
    assert other["Ce-Id"] != headers["Ce-Id"]


def test_modes_select_events_like_the_executor() -> None:
    receiver = EventReceiver()
    try:
        for mode, expected in (
            ("request", [REQUEST_TYPE]),
            ("response", [RESPONSE_TYPE, FEEDBACK_TYPE]),
            ("all", [REQUEST_TYPE, RESPONSE_TYPE, FEEDBACK_TYPE]),
        ):
            sender = RequestLogger(receiver.url, CONTEXT, mode=mode)  # type: ignore[arg-type]
            sender.log_request(mode, BODY, "application/json")
            sender.log_response(mode, b"{}", "application/json")
            sender.log_feedback(mode, b"{}", "application/json")
            sender.close()
            got = receiver.wait_for(lambda e, m=mode: header(e, "Ce-Requestid") == m, len(expected))
            assert sorted(header(e, "Ce-Type") for e in got) == sorted(expected)
            assert sender.stats().sent == len(expected)
    finally:
        receiver.close()


def test_a_receiver_that_is_down_costs_nothing_and_is_counted() -> None:
    sender = RequestLogger(f"http://127.0.0.1:{free_port()}/", CONTEXT, timeout_seconds=1)
    started = time.perf_counter()
    for i in range(50):
        sender.log_request(str(i), BODY, "application/json")
    assert time.perf_counter() - started < 0.05
    sender.close(timeout=10)
    stats = sender.stats()
    assert (stats.queued, stats.sent, stats.failed) == (50, 0, 50)


def test_a_full_queue_drops_and_counts() -> None:
    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            release.wait(10)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sender = RequestLogger(
            f"http://127.0.0.1:{server.server_address[1]}/", CONTEXT, queue_size=5
        )
        for i in range(20):
            sender.log_request(str(i), BODY, "application/json")
        stats = sender.stats()
        # One event is with the (stuck) receiver, five wait in the queue, the rest drop.
        assert stats.dropped >= 14 and stats.queued + stats.dropped == 20
        release.set()
        sender.close(timeout=10)
        assert sender.stats().sent == sender.stats().queued
    finally:
        server.shutdown()
        server.server_close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        RequestLogger("localhost:8080", CONTEXT)
    with pytest.raises(ValueError, match="mode"):
        RequestLogger("http://x/", CONTEXT, mode="everything")  # type: ignore[arg-type]
