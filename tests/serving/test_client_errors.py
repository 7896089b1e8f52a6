"""Client errors are answered 400 (gRPC: INVALID_ARGUMENT ...), never 500; servers listen where asked.

Two servers start in parallel: ``local`` (a LocalSeldonServer on the default host,
127.0.0.1, with small limits) takes the bad requests over REST and gRPC; ``cli`` is
``closedloop serve --host 0.0.0.0``. Both have their listening sockets read from
``/proc/net/tcp{,6}``, joined with the socket inodes of their processes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from closedloop.deploy.local import LocalSeldonServer, model_parameters
from closedloop.local.s3 import LocalS3, free_port
from closedloop.registry import Registry
from closedloop.serving.messages import MAX_NESTING, MessageError, check_prediction_message

from .conftest import (
    SERVING_PYTHON,
    TrainedModel,
    group_members,
    processes_in,
    register,
    serving_environment_or_skip,
)
from .test_model_server import NAMES, ROW

CLI = (
    "import typer; from closedloop.cli.serve import register; "
    "app = typer.Typer(); register(app); app()"
)
MAX_ROWS = 20
MAX_REQUEST_BYTES = 256 * 1024  # above the 100,000-byte deep body
PREDICT = "/api/v1.0/predictions"
VALID = json.dumps({"data": {"names": NAMES, "ndarray": [ROW]}})


def _serving(test: Callable[..., None]) -> Callable[..., None]:
    return pytest.mark.slow(pytest.mark.serving(test))


def _deep_tags(depth: int) -> str:
    """A valid prediction whose meta.tags is *depth* nested objects (tags the first).

    Built as text: ``json.dumps`` would recurse.
    """
    tags = '{"a":' * depth + "1" + "}" * depth
    return VALID[:-1] + f', "meta": {{"tags": {tags}}}}}'


# -- the nesting limit, in process ----------------------------------------------------


def test_nesting_limit_counts_the_message_as_level_one() -> None:
    # The message and meta are levels 1 and 2: tags may be MAX_NESTING - 2 objects deep.
    check_prediction_message(json.loads(_deep_tags(MAX_NESTING - 2)), max_rows=1)
    with pytest.raises(MessageError, match="nested too deeply"):
        check_prediction_message(json.loads(_deep_tags(MAX_NESTING - 1)), max_rows=1)


# -- the servers ----------------------------------------------------------------------


class Foreground:
    """``closedloop serve`` as a child process, its output collected line by line."""

    def __init__(self, command: list[str], env: dict[str, str], state_dir: Path) -> None:
        self.state_dir = state_dir
        self.output: list[str] = []
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def wait_ready(self, timeout: float = 150) -> None:
        deadline = time.monotonic() + timeout
        while not any("Ctrl-C stops it" in line for line in self.output):
            assert self.process.poll() is None, "".join(self.output)
            assert time.monotonic() < deadline, "".join(self.output)
            time.sleep(0.2)

    def interrupt(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@dataclass
class Servers:
    local: LocalSeldonServer
    cli: Foreground
    cli_port: int


@pytest.fixture(scope="module")
def servers(
    s3_server: LocalS3,
    registry: Registry,
    model_v1: TrainedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Servers]:
    serving_environment_or_skip()
    settings = s3_server.settings()
    registry.promote("fraud-errors", register(registry, "fraud-errors", model_v1), "first")
    local = LocalSeldonServer(
        model_parameters(
            registry.root,
            "fraud-errors",
            poll_seconds=0,
            max_rows=MAX_ROWS,
            max_request_bytes=MAX_REQUEST_BYTES,
        ),
        s3=settings,
        state_dir=tmp_path_factory.mktemp("errors-server"),
    )
    home = tmp_path_factory.mktemp("errors-cli-home")
    port = free_port()
    cli = Foreground(
        [
            sys.executable, "-c", CLI, "serve", "--model-name", "fraud-errors",
            "--registry-uri", registry.root, "--port", str(port), "--host", "0.0.0.0",
            "--poll-seconds", "0",
        ],
        {**os.environ, **settings.to_env(), "CLOSEDLOOP_HOME": str(home)},
        home / "serve" / "fraud-errors",
    )  # fmt: skip
    try:
        with ThreadPoolExecutor(1) as pool:
            started = pool.submit(local.start)
            cli.wait_ready()
            started.result()
        yield Servers(local, cli, port)
    finally:
        local.stop()
        cli.interrupt()


def post_raw(url: str, body: Any) -> requests.Response:
    return requests.post(
        url + PREDICT, data=body, headers={"Content-Type": "application/json"}, timeout=60
    )


def assert_bad_request(answer: requests.Response, message: str) -> dict[str, Any]:
    assert answer.status_code == 400, answer.text[:500]
    status = answer.json()["status"]
    assert message in status["info"], status
    assert status["reason"] == "MICROSERVICE_BAD_DATA"
    return status


# -- 1. deep nesting ------------------------------------------------------------------


@_serving
def test_a_deeply_nested_body_is_400(servers: Servers) -> None:
    assert_bad_request(post_raw(servers.local.url, "[" * 100_000), "nested too deeply")


@_serving
def test_deeply_nested_meta_tags_are_400(servers: Servers) -> None:
    url = servers.local.url
    assert_bad_request(post_raw(url, _deep_tags(5_000)), "nested too deeply")
    # Parseable by every layer, but deeper than the limit: refused before the answer,
    # which copies meta.tags, is built.
    assert_bad_request(post_raw(url, _deep_tags(MAX_NESTING)), "nested too deeply")
    within = post_raw(url, _deep_tags(MAX_NESTING - 2))
    assert within.status_code == 200, within.text
    assert within.json()["meta"]["tags"]["a"]["a"]["a"]


# -- 2. oversized chunked bodies ------------------------------------------------------


def chunked(*parts: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    """The body in pieces: requests sends a generator with Transfer-Encoding: chunked."""
    body = b"".join(parts)
    for start in range(0, len(body), size):
        yield body[start : start + size]


PADDING = b" " * (2 * MAX_REQUEST_BYTES)
SIZE_MESSAGE = f"exceeds the limit of {MAX_REQUEST_BYTES} bytes (max_request_bytes)"


@_serving
def test_an_oversized_chunked_body_is_refused_when_the_json_comes_first(
    servers: Servers,
) -> None:
    url = servers.local.url
    small = post_raw(url, chunked(VALID.encode(), b" " * 1000))
    assert small.request.headers.get("Transfer-Encoding") == "chunked"
    assert small.status_code == 200, small.text
    # Cut at the limit, what is left is valid JSON: it was answered 200.
    assert_bad_request(post_raw(url, chunked(VALID.encode(), PADDING)), SIZE_MESSAGE)


@_serving
def test_an_oversized_chunked_body_is_refused_for_its_size_when_padding_comes_first(
    servers: Servers,
) -> None:
    answer = post_raw(servers.local.url, chunked(PADDING, VALID.encode()))
    status = assert_bad_request(answer, SIZE_MESSAGE)
    assert "not valid JSON" not in status["info"]
    # The same limit and words as a body with a Content-Length.
    assert_bad_request(post_raw(servers.local.url, VALID.encode() + PADDING), SIZE_MESSAGE)


# -- 4. the same over gRPC ------------------------------------------------------------

GRPC_CLIENT = """
import json, struct, sys
import grpc
from seldon_core.proto import prediction_pb2
from seldon_core.utils import json_to_feedback, json_to_seldon_message

config = json.loads(sys.argv[1])
channel = grpc.insecure_channel(
    config["endpoint"],
    options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
)
names, row = config["names"], config["row"]


def call(method, payload):
    stub = channel.unary_unary(
        method,
        request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
        response_deserializer=prediction_pb2.SeldonMessage.FromString,
    )
    try:
        stub.with_call(payload, timeout=60)
        return {"code": "OK"}
    except grpc.RpcError as exc:
        trailing = dict(exc.trailing_metadata() or ())
        return {
            "code": exc.code().name,
            "details": exc.details(),
            "reason": trailing.get("seldon-reason"),
        }


def varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def field(number, payload):
    # A length-delimited protobuf field.
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def nested_json_data(depth):
    # SeldonMessage{jsonData: Value{list_value: ListValue{values: [Value{...}]}}} written
    # by hand, so the client sends a depth the server's decoder refuses.
    value = varint(2 << 3 | 1) + struct.pack("<d", 1.0)  # Value{number_value: 1.0}
    for _ in range(depth):
        value = field(6, field(1, value))  # Value{list_value: ListValue{values: [value]}}
    return field(6, value)


def message(body):
    return json_to_seldon_message(body)


PREDICT = "/seldon.protos.Model/Predict"
FEEDBACK = "/seldon.protos.Model/SendFeedback"
tags = 1
for _ in range(config["deep_tags"]):
    tags = {"a": tags}
nan = prediction_pb2.SeldonMessage()
nan.data.names.extend(names)
cells = nan.data.ndarray.values.add().list_value
cells.values.add().number_value = float("nan")
for value in row[1:]:
    cell = cells.values.add()
    if isinstance(value, str):
        cell.string_value = value
    else:
        cell.number_value = value
results = {
    "valid": call(PREDICT, message({"data": {"names": names, "ndarray": [row]}})),
    "nested past protobuf's limit": call(PREDICT, nested_json_data(5000)),
    "nested past the limit": call(
        PREDICT, message({"data": {"names": names, "ndarray": [row]}, "meta": {"tags": tags}})
    ),
    "over max_request_bytes": call(
        PREDICT,
        message({"data": {"names": names, "ndarray": [row[:1] + ["x" * config["over"]] + row[2:]]}}),
    ),
    "over gRPC's limit": call(
        PREDICT,
        message({"data": {"names": names, "ndarray": [row[:1] + ["x" * 5_000_000] + row[2:]]}}),
    ),
    "NaN": call(PREDICT, nan),
    "ragged rows": call(PREDICT, message({"data": {"ndarray": [row, row[:3]]}})),
    "ragged feedback": call(
        FEEDBACK,
        json_to_feedback(
            {"request": {"data": {"ndarray": [row, row[:3]]}}, "truth": {"data": {"ndarray": [1, 0]}}}
        ),
    ),
}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def grpc_results(servers: Servers) -> dict[str, dict[str, Any]]:
    config = {
        "endpoint": servers.local.grpc_endpoint,
        "names": NAMES,
        "row": ROW,
        "deep_tags": MAX_NESTING,
        "over": MAX_REQUEST_BYTES,
    }
    done = subprocess.run(
        [str(SERVING_PYTHON), "-c", GRPC_CLIENT, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@_serving
@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ("nested past protobuf's limit", "INVALID_ARGUMENT", "cannot be decoded"),
        ("nested past the limit", "INVALID_ARGUMENT", "nested too deeply"),
        ("NaN", "INVALID_ARGUMENT", "NaN"),
        ("ragged rows", "INVALID_ARGUMENT", "rows of different lengths"),
        ("ragged feedback", "INVALID_ARGUMENT", "rows of different lengths"),
    ],
)
def test_grpc_client_errors_are_invalid_argument_with_a_message(
    grpc_results: dict[str, dict[str, Any]], case: str, code: str, words: str
) -> None:
    assert grpc_results["valid"] == {"code": "OK"}
    result = grpc_results[case]
    assert result["code"] == code, result
    assert words in result["details"], result
    if code == "INVALID_ARGUMENT" and case != "nested past protobuf's limit":
        assert result["reason"] == "MICROSERVICE_BAD_DATA", result


@_serving
def test_oversized_grpc_messages_are_refused_with_a_message(
    grpc_results: dict[str, dict[str, Any]],
) -> None:
    over = grpc_results["over max_request_bytes"]
    assert over["code"] == "INVALID_ARGUMENT" and SIZE_MESSAGE in over["details"], over
    # Past gRPC's own receive limit (4 MiB), grpcio refuses it before any code of ours.
    past = grpc_results["over gRPC's limit"]
    assert past["code"] == "RESOURCE_EXHAUSTED" and "larger than max" in past["details"], past


# -- 3. where it listens --------------------------------------------------------------


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc/net/tcp6: four 32-bit words, each in the host's (little-endian) byte order.
    address = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return str(address.ipv4_mapped or address)


def listening(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that *pids* hold."""
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: TCP_LISTEN
                address, port = local.split(":")
                found.add((_address(address), int(port, 16)))
    return found


def wait_listening(pids: Callable[[], list[int]], ports: set[int]) -> set[tuple[str, int]]:
    """The LISTEN sockets of *pids* once all *ports* listen (the gRPC child may lag)."""
    deadline = time.monotonic() + 30
    while True:
        found = listening(pids())
        if ports <= {port for _, port in found} or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def process_group(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])


@_serving
def test_local_server_listens_on_loopback_only(servers: Servers) -> None:
    server = servers.local
    assert server.pid is not None and server.ports is not None
    ports = {server.ports.http, server.ports.grpc, server.ports.metrics}
    found = wait_listening(lambda: group_members(process_group(server.pid)), ports)
    assert ports <= {port for _, port in found}, found
    assert {address for address, _ in found} == {"127.0.0.1"}, found


@_serving
def test_serve_listens_on_every_interface_when_asked(servers: Servers) -> None:
    cli = servers.cli
    text = "".join(cli.output)
    assert "listening on 0.0.0.0 (every interface)" in text
    metrics_port = int(re.search(r"metrics: http://127\.0\.0\.1:(\d+)/", text).group(1))
    grpc_port = int(re.search(r"gRPC: 127\.0\.0\.1:(\d+)", text).group(1))
    ports = {servers.cli_port, grpc_port, metrics_port}
    (leader,) = {process_group(pid) for pid in processes_in(cli.state_dir)}
    found = wait_listening(lambda: group_members(leader), ports)
    assert ports <= {port for _, port in found}, found
    # gRPC's core takes 0.0.0.0 for its wildcard and listens dual-stack, on "::".
    assert {address for address, _ in found} <= {"0.0.0.0", "::"}, found
    assert {port for address, port in found if address == "0.0.0.0"} >= {
        servers.cli_port,
        metrics_port,
    }
    answer = requests.get(f"http://127.0.0.1:{servers.cli_port}/health/status", timeout=10)
    assert answer.status_code == 200, answer.text
