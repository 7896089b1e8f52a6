"""The sidecar's event port: the server's bad requests keep out of windows; client errors are 4xx.

The bad-request battery is the model server's own (``BAD_REQUESTS`` of
``tests/serving/test_model_server.py``, read from that file so the two never diverge),
sent to the sidecar as request events with the server test's limits: every case is
acknowledged 202 (the executor logs a request before the model checks it, and must not
retry it) or, if it cannot be read at all, answered 4xx; not one row enters a window.
"""

from __future__ import annotations

import ast
import contextlib
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sidecar_harness import (
    RunningSidecar,
    event_headers,
    make_monitor,
    ndarray_body,
    running_sidecar,
    served_detector,
)

from closedloop.drift.sidecar.errors import MESSAGE_REASONS
from closedloop.drift.sidecar.loader import ServedDetector
from closedloop.ml.rowplan import REASONS

SERVER_TESTS = Path(__file__).parents[2] / "serving" / "test_model_server.py"
# Checks the server makes in its model class (closedloop.serving.model), not in the
# shared message and row contract the sidecar applies: a request refused only by them
# still enters the sidecar's windows. Moving them into closedloop.serving.messages would
# let the sidecar apply them too.
SERVER_ONLY: set[str] = set()


def server_battery() -> tuple[dict[str, tuple[Any, str]], int, int]:
    """``BAD_REQUESTS`` of the server's tests, and the ``MAX_ROWS``/``MAX_REQUEST_BYTES`` it uses."""
    tree = ast.parse(SERVER_TESTS.read_text())
    wanted = {"ROW", "NAMES", "MAX_ROWS", "MAX_REQUEST_BYTES", "BAD_REQUESTS", "data"}
    nodes = []
    for node in tree.body:
        names = set()
        if isinstance(node, ast.Assign):
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = {node.target.id}
        elif isinstance(node, ast.FunctionDef):
            names = {node.name}
        if names & wanted:
            nodes.append(node)
    namespace: dict[str, Any] = {"Any": Any}
    exec(compile(ast.Module(nodes, []), str(SERVER_TESTS), "exec"), namespace)
    return namespace["BAD_REQUESTS"], namespace["MAX_ROWS"], namespace["MAX_REQUEST_BYTES"]


BATTERY, MAX_ROWS, MAX_REQUEST_BYTES = server_battery()
ROOMY_BYTES = 256 * 1024  # above the 100,000-byte deep body, as tests/serving/test_client_errors.py


@pytest.fixture(scope="module")
def served() -> ServedDetector:
    return served_detector()


@pytest.fixture(scope="module")
def sidecar(
    served: ServedDetector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSidecar]:
    monitor = make_monitor(served, tmp_path_factory.mktemp("state"), max_rows=MAX_ROWS)
    monitor.open()
    with running_sidecar(monitor, max_body_bytes=MAX_REQUEST_BYTES) as running:
        yield running


@pytest.fixture(scope="module")
def roomy(
    served: ServedDetector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSidecar]:
    """A sidecar whose body limit lets the deep bodies through to the JSON reader."""
    monitor = make_monitor(served, tmp_path_factory.mktemp("roomy"))
    monitor.open()
    with running_sidecar(monitor, max_body_bytes=ROOMY_BYTES) as running:
        yield running


def test_the_servers_bad_requests_never_enter_a_window(sidecar: RunningSidecar) -> None:
    assert len(BATTERY) > 30, "the server's battery was read"
    before = sidecar.monitor.status()["rows_accepted"]
    answers = {}
    for case, (body, _) in BATTERY.items():
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        answer = sidecar.post(event_headers("request"), content)
        answers[case] = (answer.status_code, answer.json())
    for case, (status, body) in answers.items():
        if case in SERVER_ONLY:
            continue
        assert status in (202, 400, 413), (case, status, body)
        if status == 202:
            assert body["status"] == "refused", (case, body)
            assert body["reason"] in {*REASONS, *MESSAGE_REASONS}, (case, body)
        else:
            assert body["reason"] in ("not_json", "too_deep", "too_large"), (case, body)
    accepted = [case for case, (_, body) in answers.items() if body.get("status") == "accepted"]
    assert set(accepted) <= SERVER_ONLY
    status = sidecar.monitor.status()
    assert status["rows_accepted"] - before == sum(answers[c][1]["rows"] for c in accepted)
    assert answers["too many bytes"][0] == 413
    assert answers["invalid JSON"][0] == 400
    assert answers["string for a number"][1]["reason"] == "not_a_number"
    assert answers["strData"][1]["reason"] == "message"
    assert answers["too many rows"][1]["reason"] == "too_many_rows"
    assert answers["wrong width"][1]["reason"] == "columns"
    refused = sidecar.metric("closedloop_sidecar_rows_refused_total", type="request")
    assert refused >= len(BATTERY) - len(SERVER_ONLY) - 3  # all but the 4xx ones


def test_a_request_with_one_bad_row_is_refused_whole_and_counted(
    sidecar: RunningSidecar, served: ServedDetector
) -> None:
    body = json.loads(ndarray_body(served.schema, rows=4))
    body["data"]["ndarray"][2][0] = "twelve"
    before = sidecar.monitor.status()["rows_accepted"]
    answer = sidecar.post(event_headers("request"), json.dumps(body).encode())
    assert answer.status_code == 202
    assert answer.json()["reason"] == "not_a_number" and answer.json()["rows"] == 4
    assert sidecar.monitor.status()["rows_accepted"] == before
    metric = "closedloop_sidecar_rows_refused_total"
    assert sidecar.metric(metric, type="request", reason="request_refused") >= 3


def _deep_tags(depth: int) -> bytes:
    names = ["amount"]
    valid = json.dumps({"data": {"names": names, "ndarray": [[1.0]]}})
    tags = '{"a":' * depth + "1" + "}" * depth
    return (valid[:-1] + f', "meta": {{"tags": {tags}}}}}').encode()


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, _deep_tags(5_000)], ids=["[ x 100,000", "5,000-deep meta.tags"]
)
def test_bodies_too_deep_to_parse_are_400(roomy: RunningSidecar, body: bytes) -> None:
    answer = roomy.post(event_headers("request"), body)
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["reason"] == "too_deep" and "nested too deeply" in answer.json()["error"]


def test_a_parseable_message_nested_past_the_limit_is_refused_as_the_server_does(
    roomy: RunningSidecar,
) -> None:
    answer = roomy.post(event_headers("request"), _deep_tags(30))
    assert answer.status_code == 202, answer.text[:300]
    assert answer.json()["reason"] == "message" and "nested too deeply" in answer.json()["error"]


def _raw(sidecar: RunningSidecar, request: bytes, read_until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", sidecar.events_port), timeout=10) as sock:
        # The server may answer and close before reading it all.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        chunks = []
        while read_until_close:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _head(headers: dict[str, str], extra: str) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST / HTTP/1.1\r\nHost: x\r\n{lines}{extra}\r\n".encode()


def test_oversized_bodies_are_413_with_and_without_content_length(
    roomy: RunningSidecar,
) -> None:
    sidecar = roomy
    headers = event_headers("request")
    too_big = ROOMY_BYTES + 1
    # With a Content-Length: refused before the body is read.
    answer = _raw(sidecar, _head(headers, f"Content-Length: {too_big}\r\n"))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"reason":"too_large"' in answer
    # Chunked, without a length: refused once the limit is passed.
    chunk = b"x" * 16384
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(too_big // 16384 + 2))
    answer = _raw(sidecar, _head(headers, "Transfer-Encoding: chunked\r\n") + body + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    response = sidecar.post(headers, b"x" * too_big)
    assert response.status_code == 413 and response.json()["reason"] == "too_large"
    assert sidecar.metric("closedloop_sidecar_events_rejected_total", reason="too_large") >= 3


def test_http_framing_chunked_pipelined_and_keep_alive(
    sidecar: RunningSidecar, served: ServedDetector
) -> None:
    body = ndarray_body(served.schema, rows=2)
    first, second = event_headers("request"), event_headers("request")
    chunked = _head(first, "Transfer-Encoding: chunked\r\n")
    chunked += b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    plain = _head(second, f"Content-Length: {len(body)}\r\nConnection: close\r\n") + body
    answer = _raw(sidecar, chunked + plain)  # two requests in one write: answered in order
    assert answer.count(b"HTTP/1.1 200 OK") == 2, answer
    assert answer.count(b'{"status":"accepted","rows":2}') == 2
    assert b"connection: close" in answer.split(b"HTTP/1.1 200 OK")[2]
    for request, status in [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"POST /other HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"404"),
        (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", b"400"),
        (b"POST / HTTP/2.0\r\nContent-Length: 0\r\n\r\n", b"505"),
        (b"garbage\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\n" + b"X-Long: " + b"y" * 70_000 + b"\r\n\r\n", b"431"),
    ]:
        answer = _raw(sidecar, request)
        assert answer.startswith(b"HTTP/1.1 " + status), (request[:40], answer[:100])
    with_expect = _head(event_headers("request"), f"Content-Length: {len(body)}\r\n")
    with_expect = with_expect.replace(
        b"\r\n\r\n", b"\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    answer = _raw(sidecar, with_expect + body)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"), answer[:100]


def test_missing_attributes_and_unknown_types_are_400(sidecar: RunningSidecar) -> None:
    body = json.dumps({"data": {"ndarray": [[1]]}}).encode()
    answer = sidecar.post(event_headers("request", Ce_Id=None), body)
    assert answer.status_code == 400 and answer.json()["reason"] == "attributes"
    answer = sidecar.post(event_headers("request", Ce_Type="io.example.other"), body)
    assert answer.status_code == 400 and answer.json()["reason"] == "type"
    answer = sidecar.post(event_headers("request", Ce_Id=str(uuid.uuid4())), b"{not json")
    assert answer.status_code == 400 and answer.json()["reason"] == "not_json"
