"""The real Seldon microservice serving registered versions, over real HTTP and gRPC.

Three servers start in parallel (their start-up is mostly Python imports, so the
module pays for it once): ``main`` (a LocalSeldonServer) follows the champion of one
model and logs requests to a receiver; ``cli`` is ``closedloop serve`` in the
foreground, following another model's champion with two workers and a request logger
pointed at a closed port (it takes the champion swap); ``tampered`` is asked to serve
a version whose model file was changed after registration and must refuse it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from closedloop.deploy.local import (
    LocalSeldonServer,
    LocalServerError,
    model_parameters,
)
from closedloop.local.s3 import LocalS3, free_port
from closedloop.registry import Registry
from closedloop.storage import join_uri

from .conftest import (
    SERVING_PYTHON,
    EventReceiver,
    TrainedModel,
    group_members,
    header,
    metric_values,
    processes_in,
    register,
    request_rows,
    serving_environment_or_skip,
)

pytestmark = [pytest.mark.slow, pytest.mark.serving]

CLI = (
    "import typer; from closedloop.cli.serve import register; "
    "app = typer.Typer(); register(app); app()"
)
MAX_ROWS = 50
MAX_REQUEST_BYTES = 64 * 1024
PREDICT = "/api/v1.0/predictions"
FEEDBACK = "/api/v1.0/feedback"


@dataclass
class Servers:
    main: LocalSeldonServer
    tampered_error: BaseException | None
    tampered_seconds: float
    tampered_dir: Path
    main_dir: Path
    cli: Foreground


class Foreground:
    """``closedloop serve`` running as a child process, its output collected line by line."""

    ready_line = "Ctrl-C stops it"

    def __init__(self, command: list[str], env: dict[str, str], home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.output: list[str] = []
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.output):
            assert self.process.poll() is None, "".join(self.output)
            assert time.monotonic() < deadline, "".join(self.output)
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_dir(self) -> Path:
        return self.home / "serve" / "fraud-swap"

    def health(self) -> dict[str, Any]:
        self.wait_for(self.ready_line, timeout=120)
        return requests.get(self.url + "/health/status", timeout=10).json()["jsonData"]

    def interrupt(self) -> int:
        """Ctrl-C, as a terminal sends it; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@pytest.fixture(scope="module")
def names(model_v1: TrainedModel) -> tuple[str, ...]:
    return model_v1.schema.feature_names


@pytest.fixture(scope="module")
def servers(
    s3_server: LocalS3,
    registry: Registry,
    receiver: EventReceiver,
    model_v1: TrainedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Servers]:
    serving_environment_or_skip()
    settings = s3_server.settings()
    for name in ("fraud", "fraud-swap"):
        registry.promote(name, register(registry, name, model_v1), "first version")
    bad = register(registry, "fraud-bad", model_v1)
    version_prefix = join_uri(registry.root, "models", "fraud-bad", "versions", bad)
    registry.store.write_bytes(
        join_uri(version_prefix, "model.joblib"), b"not the registered model"
    )

    main_dir = tmp_path_factory.mktemp("main-server")
    tampered_dir = tmp_path_factory.mktemp("tampered-server")
    main = LocalSeldonServer(
        model_parameters(
            registry.root,
            "fraud",
            poll_seconds=0.5,
            max_rows=MAX_ROWS,
            max_request_bytes=MAX_REQUEST_BYTES,
            request_logger_url=receiver.url,
        ),
        s3=settings,
        state_dir=main_dir,
        deployment_name="fraud-main",
    )
    tampered = LocalSeldonServer(
        model_parameters(registry.root, "fraud-bad", bad),
        s3=settings,
        state_dir=tampered_dir,
        grpc=False,
    )

    cli_home = tmp_path_factory.mktemp("cli-home")
    cli_port = free_port()
    # Nothing listens on the logger port: its request logger must fail quietly.
    cli = Foreground(
        [
            sys.executable, "-c", CLI, "serve", "--model-name", "fraud-swap",
            "--registry-uri", registry.root, "--port", str(cli_port), "--workers", "2",
            "--poll-seconds", "0.3", "--request-logger-url", f"http://127.0.0.1:{free_port()}/",
        ],
        {**os.environ, **settings.to_env(), "CLOSEDLOOP_HOME": str(cli_home)},
        cli_home,
        cli_port,
    )  # fmt: skip

    def start_tampered() -> tuple[BaseException | None, float]:
        started = time.monotonic()
        try:
            tampered.start()
        except LocalServerError as exc:
            return exc, time.monotonic() - started
        tampered.stop()
        return None, time.monotonic() - started

    with ThreadPoolExecutor(2) as pool:
        main_started = pool.submit(main.start)
        tampered_result = pool.submit(start_tampered)
        failed = main_started.exception()
    if failed is not None:
        cli.interrupt()
        raise failed
    error, seconds = tampered_result.result()
    try:
        yield Servers(main, error, seconds, tampered_dir, main_dir, cli)
    finally:
        main.stop()
        cli.interrupt()


def post(url: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(url, json=body, timeout=30, **kwargs)


def probabilities(answer: requests.Response) -> np.ndarray:
    data = answer.json()["data"]
    if "ndarray" in data:
        return np.asarray(data["ndarray"], dtype=np.float64)
    tensor = data["tensor"]
    return np.asarray(tensor["values"], dtype=np.float64).reshape(tensor["shape"])


# -- correct predictions ------------------------------------------------------------


def test_predictions_equal_in_process_ones(
    servers: Servers, model_v1: TrainedModel, names: tuple[str, ...]
) -> None:
    frame, rows = request_rows(40, seed=11, names=names)
    expected = model_v1.pipeline.predict_proba(frame)

    answer = post(servers.main.url + PREDICT, {"data": {"names": list(names), "ndarray": rows}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["names"] == ["0", "1"]
    assert answer.json()["meta"]["tags"]["model_version"] == "v1"
    np.testing.assert_array_equal(probabilities(answer), expected)

    records = [dict(zip(names, row, strict=True)) for row in rows]
    answer = post(servers.main.url + PREDICT, {"jsonData": records})
    assert answer.status_code == 200, answer.text
    np.testing.assert_array_equal(probabilities(answer), expected)

    positional = post(servers.main.url + PREDICT, {"data": {"ndarray": rows[:1]}})
    np.testing.assert_array_equal(probabilities(positional), expected[:1])


def test_explanations_only_on_request(
    servers: Servers, model_v1: TrainedModel, names: tuple[str, ...]
) -> None:
    frame, rows = request_rows(3, seed=12, names=names)
    body = {"data": {"names": list(names), "ndarray": rows}}
    plain = post(servers.main.url + PREDICT, body).json()
    assert "explanation" not in plain["meta"]["tags"]

    explained = post(servers.main.url + PREDICT, {**body, "meta": {"tags": {"explain": True}}})
    assert explained.status_code == 200, explained.text
    explanation = explained.json()["meta"]["tags"]["explanation"]
    assert explanation["method"] == "xgboost_shap" and len(explanation["rows"]) == 3
    positive = model_v1.pipeline.predict_proba(frame)[:, 1]
    for row, p in zip(explanation["rows"], positive, strict=True):
        assert set(row) == {*names, explanation["base_value_key"]}
        margin = sum(row.values())
        assert math.isclose(1 / (1 + math.exp(-margin)), p, rel_tol=1e-4)


def test_metadata_publishes_the_schema(servers: Servers, names: tuple[str, ...]) -> None:
    metadata = requests.get(servers.main.url + "/metadata", timeout=10).json()
    assert metadata["name"] == "fraud" and metadata["versions"] == ["v1"]
    assert metadata["inputs"][0]["schema"]["names"] == list(names)
    assert metadata["inputs"][1]["schema"]["required"] == list(names)
    assert metadata["outputs"][0]["schema"]["names"] == ["0", "1"]


# -- every bad request is a 400 with a message ----------------------------------------

ROW = [12.5, "online", "grocery", 3, "US", 100, 0, "2026-01-02T03:04:05"]
NAMES = [
    "amount",
    "channel",
    "merchant_category",
    "hour",
    "country",
    "account_age_days",
    "card_present",
    "transaction_time",
]


def data(rows: Any, names: Any = NAMES) -> dict[str, Any]:
    return {"data": {"names": names, "ndarray": rows}}


BAD_REQUESTS: dict[str, tuple[Any, str]] = {
    "wrong width": ({"data": {"ndarray": [ROW[:7]]}}, "wrong width"),
    "names and width differ": (data([ROW], NAMES[:7]), "7 names given for 8 columns"),
    "misspelled name": (data([ROW], ["amt", *NAMES[1:]]), "missing columns: ['amount']"),
    "names out of order": (data([ROW], [NAMES[1], NAMES[0], *NAMES[2:]]), "out of order"),
    "duplicated name": (data([ROW], [NAMES[0], *NAMES[:7]]), "duplicated columns"),
    "string for a number": (data([["abc", *ROW[1:]]]), "expects numbers"),
    "bad date": (data([[*ROW[:7], "yesterday"]]), "expects dates"),
    "NaN": (
        '{"data": {"ndarray": [[NaN, "online", "grocery", 3, "US", 100, 0, "2026-01-02"]]}}',
        "missing values",
    ),
    "Infinity": (
        '{"data": {"ndarray": [[Infinity, "online", "grocery", 3, "US", 100, 0, "2026-01-02"]]}}',
        "infinite",
    ),
    "-Infinity in a numeric array": (
        '{"data": {"ndarray": [[-Infinity, 1, 1, 3, 1, 100, 0, 1]]}}',
        "infinite",
    ),
    "null": (data([[None, *ROW[1:]]]), "missing values"),
    "empty ndarray": (data([]), "empty input"),
    "empty rows": (data([[]]), "empty input"),
    "empty records": ({"jsonData": []}, "empty input"),
    "too many rows": (data([ROW] * (MAX_ROWS + 1)), "too many rows"),
    "too many bytes": (data([[*ROW[:7], "x" * MAX_REQUEST_BYTES]]), "exceeds the limit"),
    "3-D array": (data([[ROW]]), "is an array"),
    "ragged rows": (data([ROW, ROW[:3]]), "rows of different lengths"),
    "nested value": (data([[{"a": 1}, *ROW[1:]]]), "is a JSON object"),
    # Read as infinite by the row check; this schema has no fill to put in its place.
    "huge integer": (
        '{"data": {"ndarray": [[1'
        + "0" * 400
        + ', "online", "grocery", 3, "US", 100, 0, "2026-01-02"]]}}',
        "infinite",
    ),
    "tensor shape mismatch": (
        {"data": {"tensor": {"shape": [2, 8], "values": [1.0] * 8}}},
        "needs 16 values",
    ),
    "tensor 3-D": (
        {"data": {"tensor": {"shape": [1, 2, 4], "values": [1.0] * 8}}},
        "expected [rows, columns]",
    ),
    "tftensor": ({"data": {"tftensor": {}}}, "not supported"),
    "strData": ({"strData": "12.5,online"}, "not supported"),
    "binData": ({"binData": "AAEC"}, "not supported"),
    "no payload": ({"meta": {}}, "no payload"),
    "two payloads": ({**data([ROW]), "jsonData": {}}, "several payloads"),
    "body is an array": ([ROW], "must be a JSON object"),
    "body is null": ("null", "must be a JSON object"),
    "data is a string": ({"data": "rows"}, "must be an object"),
    "ndarray is a number": ({"data": {"ndarray": 5}}, "must be an array of rows"),
    "names not a list": (data([ROW], 5), "must be an array of column names"),
    "names not strings": (data([ROW], [1, *NAMES[1:]]), "must hold strings"),
    "meta not an object": ({**data([ROW]), "meta": []}, "meta must be an object"),
    "meta.tags not an object": (
        {**data([ROW]), "meta": {"tags": "x"}},
        "meta.tags must be an object",
    ),
    "explain not a boolean": (
        {**data([ROW]), "meta": {"tags": {"explain": "maybe"}}},
        "explain must be true or false",
    ),
    "record missing a column": (
        {"jsonData": {n: v for n, v in zip(NAMES[1:], ROW[1:], strict=True)}},
        "missing columns ['amount']",
    ),
    "record with an extra column": (
        {"jsonData": {**dict(zip(NAMES, ROW, strict=True)), "is_fraud": 1}},
        "unexpected columns ['is_fraud']",
    ),
    "records not objects": ({"jsonData": [ROW]}, "must be an object"),
    "invalid JSON": ("{not json", "not valid JSON"),
}


def test_extreme_numbers_are_bounded_by_the_schema_not_a_500(servers: Servers) -> None:
    # Were a 500 ("Input X contains infinity") and a silent -1e308: now the value is
    # clipped to the schema's range (amount [0, max], card_present [0, 1.5]).
    names = list(NAMES)
    extreme = [[*ROW[:6], 1e308, *ROW[7:]], [-1e308, *ROW[1:]]]
    bounded = [[*ROW[:6], 1.5, *ROW[7:]], [0.0, *ROW[1:]]]
    answer = post(servers.main.url + PREDICT, data(extreme, names))
    assert answer.status_code == 200, answer.text
    expected = post(servers.main.url + PREDICT, data(bounded, names))
    np.testing.assert_array_equal(probabilities(answer), probabilities(expected))


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_requests_are_400_with_a_message(servers: Servers, case: str) -> None:
    body, message = BAD_REQUESTS[case]
    if isinstance(body, str):
        answer = requests.post(
            servers.main.url + PREDICT,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    else:
        answer = post(servers.main.url + PREDICT, body)
    assert answer.status_code == 400, answer.text
    status = answer.json()["status"]
    assert message in status["info"], status
    assert status["reason"] == "MICROSERVICE_BAD_DATA"


def test_other_wrong_requests_are_not_500(servers: Servers) -> None:
    url = servers.main.url
    text = requests.post(
        url + PREDICT, data="a,b", headers={"Content-Type": "text/csv"}, timeout=30
    )
    assert text.status_code == 400 and "Content-Type must be application/json" in text.text
    form = requests.post(url + "/predict", data={"json": "{broken"}, timeout=30)
    assert form.status_code == 400 and "not valid JSON" in form.text
    multipart = requests.post(url + PREDICT, files={"json": ("x", b"{}")}, timeout=30)
    assert multipart.status_code == 400 and "multipart" in multipart.text
    assert requests.get(url + "/predict", timeout=30).status_code == 400
    assert requests.get(url + "/no/such/route", timeout=30).status_code == 404
    for route in ("/transform-input", "/transform-output", "/route", "/aggregate"):
        assert post(url + route, {"data": {"ndarray": [[1], [2, 3]]}}).status_code == 404
    assert requests.put(url + PREDICT, json={}, timeout=30).status_code == 405
    bad_feedback = {
        "request": data([ROW, ROW]),
        "truth": {"data": {"ndarray": [1]}},
    }
    answer = post(url + FEEDBACK, bad_feedback)
    assert answer.status_code == 400 and "one label per row" in answer.text
    unknown_class = {"request": data([ROW]), "truth": {"data": {"ndarray": [7]}}}
    answer = post(url + FEEDBACK, unknown_class)
    assert answer.status_code == 400 and "is not one of [0, 1]" in answer.text
    ragged = {"request": data([ROW, ROW[:2]]), "truth": {"data": {"ndarray": [1, 0]}}}
    answer = post(url + FEEDBACK, ragged)
    assert answer.status_code == 400 and "rows of different lengths" in answer.text
    assert post(url + FEEDBACK, [1]).status_code == 400
    assert post(url + FEEDBACK, {"unknown": 1}).status_code == 400


# -- feedback, metrics, request logger, Seldon's client -------------------------------


def test_feedback_moves_the_quality_metric(
    servers: Servers, model_v1: TrainedModel, names: tuple[str, ...]
) -> None:
    frame, rows = request_rows(20, seed=13, names=names)
    predicted = model_v1.pipeline.predict_proba(frame).argmax(axis=1)

    def send(labels: np.ndarray) -> None:
        body = {
            "request": {"data": {"names": list(names), "ndarray": rows}},
            "truth": {"data": {"ndarray": labels.tolist()}},
            "reward": 1.0,
        }
        answer = post(servers.main.url + FEEDBACK, body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["meta"]["tags"]["model_version"] == "v1"

    def quality() -> tuple[float, float, float]:
        text = requests.get(servers.main.metrics_url, timeout=10).text
        rows = sum(metric_values(text, "closedloop_feedback_rows_total", version="v1"))
        correct = sum(metric_values(text, "closedloop_feedback_correct_total", version="v1"))
        (accuracy,) = metric_values(text, "closedloop_feedback_accuracy", version="v1") or [0.0]
        return rows, correct, accuracy

    rows_before, correct_before, _ = quality()
    send(predicted)
    total, correct, accuracy = quality()
    assert (total - rows_before, correct - correct_before) == (20, 20)
    assert accuracy == correct / total
    send(1 - predicted)
    total, correct, lower = quality()
    assert (total - rows_before, correct - correct_before) == (40, 20)
    assert lower == correct / total < accuracy


def test_metrics_count_predictions_and_rejections(servers: Servers) -> None:
    assert post(servers.main.url + PREDICT, data([ROW])).status_code == 200
    assert post(servers.main.url + PREDICT, data([ROW[:2]])).status_code == 400
    text = requests.get(servers.main.metrics_url, timeout=10).text
    assert sum(metric_values(text, "closedloop_prediction_requests_total", version="v1")) >= 2
    assert sum(metric_values(text, "closedloop_rejected_requests_total")) >= 1
    assert sum(metric_values(text, "closedloop_predicted_class_total", version="v1")) >= 2
    assert metric_values(text, "closedloop_predict_duration_seconds_count", version="v1")
    # Recorded in place: no per-method copies of the wrapper's custom metrics.
    assert metric_values(text, "closedloop_served_version") == [1.0]


def test_request_logger_emits_what_the_executor_sends(
    servers: Servers, receiver: EventReceiver, names: tuple[str, ...]
) -> None:
    from cloudevents.core.bindings.http import HTTPMessage, from_http
    from cloudevents.core.formats.json import JSONFormat

    body = json.dumps({"data": {"names": list(names), "ndarray": [ROW]}}).encode()
    answer = requests.post(
        servers.main.url + PREDICT,
        data=body,
        headers={"Content-Type": "application/json", "Seldon-Puid": "puid-1"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.headers["Seldon-Puid"] == "puid-1"
    events = receiver.wait_for(lambda e: header(e, "Ce-Requestid") == "puid-1", count=2)
    by_type = {header(e, "Ce-Type"): e for e in events}
    request_event = by_type["io.seldon.serving.inference.request"]
    response_event = by_type["io.seldon.serving.inference.response"]
    assert request_event.body == body
    assert response_event.body == answer.content
    for event in (request_event, response_event):
        assert header(event, "Ce-Specversion") == "1.0"
        assert header(event, "Content-Type") == "application/json"
        assert header(event, "Ce-Modelid") == "model"
        assert header(event, "Ce-Inferenceservicename") == "fraud-main"
        assert header(event, "Ce-Namespace") == "local"
        assert header(event, "Ce-Endpoint") == "default"
        assert header(
            event,
            "Ce-Source",
        ).endswith(f":{servers.main.ports.http}/")
        parsed = from_http(
            HTTPMessage({k.lower(): v for k, v in event.headers.items()}, event.body), JSONFormat()
        )
        assert parsed.get_extension("requestid") == "puid-1"
    assert header(request_event, "Ce-Id") != header(response_event, "Ce-Id")

    # Without a Seldon-Puid the server makes one and returns it, as the executor does.
    answer = requests.post(
        servers.main.url + PREDICT,
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    puid = answer.headers["Seldon-Puid"]
    assert len(receiver.wait_for(lambda e: header(e, "Ce-Requestid") == puid, count=2)) == 2

    # A rejected request is logged (the executor logs before the model answers); its
    # response is not.
    bad = requests.post(
        servers.main.url + PREDICT,
        json=data([ROW[:3]]),
        headers={"Seldon-Puid": "puid-bad"},
        timeout=30,
    )
    assert bad.status_code == 400
    logged = receiver.wait_for(
        lambda e: header(e, "Ce-Requestid") == "puid-bad", count=2, timeout=2
    )
    assert [header(e, "Ce-Type") for e in logged] == ["io.seldon.serving.inference.request"]

    feedback = {"request": data([ROW]), "truth": {"data": {"ndarray": [0]}}}
    raw = json.dumps(feedback).encode()
    answer = requests.post(
        servers.main.url + FEEDBACK,
        data=raw,
        headers={"Content-Type": "application/json", "Seldon-Puid": "puid-fb"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    (event,) = receiver.wait_for(lambda e: header(e, "Ce-Requestid") == "puid-fb")
    assert header(event, "Ce-Type") == "io.seldon.serving.feedback"
    assert event.body == raw


SELDON_CLIENT = """
import json, sys
import numpy as np
from seldon_core.seldon_client import SeldonClient
from seldon_core.utils import seldon_message_to_json

config = json.loads(sys.argv[1])
out = {}
for transport, endpoint in (("rest", config["rest"]), ("grpc", config["grpc"])):
    client = SeldonClient(gateway="seldon", transport=transport, microservice_endpoint=endpoint)
    result = client.microservice(
        method="predict",
        data=np.array(config["rows"], dtype=object),
        names=config["names"],
        payload_type="ndarray",
    )
    out[transport] = {
        "success": result.success,
        "msg": result.msg,
        "response": seldon_message_to_json(result.response) if result.response else None,
    }
print(json.dumps(out))
"""


def test_seldon_client_can_call_it(
    servers: Servers, model_v1: TrainedModel, names: tuple[str, ...]
) -> None:
    frame, rows = request_rows(5, seed=14, names=names)
    config = {
        "rest": f"127.0.0.1:{servers.main.ports.http}",
        "grpc": servers.main.grpc_endpoint,
        "rows": rows,
        "names": list(names),
    }
    done = subprocess.run(
        [str(SERVING_PYTHON), "-c", SELDON_CLIENT, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    expected = model_v1.pipeline.predict_proba(frame)
    for transport in ("rest", "grpc"):
        result = results[transport]
        assert result["success"], result
        ndarray = result["response"]["data"]["ndarray"]
        np.testing.assert_allclose(np.asarray(ndarray), expected, rtol=1e-6)
        assert result["response"]["meta"]["tags"]["model_version"] == "v1"


# -- a tampered artifact, two servers, a champion swap under load ---------------------


def test_tampered_artifact_is_refused(servers: Servers) -> None:
    error = servers.tampered_error
    assert isinstance(error, LocalServerError)
    assert "refused" in str(error) and "sha256" in str(error) and "model.joblib" in str(error)
    # Refused as soon as the server had looked, not after the ready timeout.
    assert servers.tampered_seconds < 100
    assert processes_in(servers.tampered_dir) == []


def test_two_servers_run_side_by_side(servers: Servers) -> None:
    main, cli = servers.main, servers.cli
    assert cli.health()["model_name"] == "fraud-swap"
    assert main.health()["model_name"] == "fraud"
    assert main.url != cli.url
    sockets = {main.runtime_dir / "gunicorn.ctl", cli.state_dir / "run" / "gunicorn.ctl"}
    assert len(sockets) == 2 and all(path.exists() for path in sockets)


def test_champion_swap_under_load_fails_no_request(
    servers: Servers,
    registry: Registry,
    model_v1: TrainedModel,
    model_v2: TrainedModel,
    names: tuple[str, ...],
) -> None:
    server = servers.cli
    assert server.health()["model_version"] == "v1"
    v2 = register(registry, "fraud-swap", model_v2)
    v3 = register(registry, "fraud-swap", model_v2)
    prefix = join_uri(registry.root, "models", "fraud-swap", "versions", v3)
    registry.store.write_bytes(join_uri(prefix, "model.joblib"), b"tampered")
    frame, rows = request_rows(1, seed=15, names=names)
    expected = {
        "v1": model_v1.pipeline.predict_proba(frame),
        "v2": model_v2.pipeline.predict_proba(frame),
    }
    url = server.url + PREDICT
    body = {"data": {"names": list(names), "ndarray": rows}}
    stop = threading.Event()
    failures: list[str] = []
    seen: list[list[str]] = [[] for _ in range(4)]

    def client(index: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    answer = session.post(url, json=body, timeout=30)
                except requests.RequestException as exc:
                    failures.append(repr(exc))
                    continue
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text}")
                    continue
                version = answer.json()["meta"]["tags"]["model_version"]
                if not np.array_equal(probabilities(answer), expected[version]):
                    failures.append(f"{version} answered other probabilities")
                seen[index].append(version)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        registry.promote("fraud-swap", v2, "better model")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(s[-5:] == ["v2"] * 5 for s in seen):
            time.sleep(0.2)
        registry.promote("fraud-swap", v3, "a tampered version")
        time.sleep(2.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert failures == []
    # Each of the two gunicorn workers follows the pointer on its own poll, so for up
    # to one poll interval a client may meet a worker still on v1 after one on v2.
    # What must hold: every answer was a whole version, none failed, all end on v2,
    # and the tampered v3 never answered.
    for versions in seen:
        assert versions[0] == "v1" and versions[-5:] == ["v2"] * 5
        assert set(versions) == {"v1", "v2"}
    health = server.health()
    assert health["model_version"] == "v2"
    assert v3 in health["last_load_error"] and "sha256" in health["last_load_error"]
    metrics_url = next(
        line.split("metrics: ")[1].split()[0] for line in server.output if "metrics: " in line
    )
    text = requests.get(metrics_url, timeout=10).text
    failures = metric_values(
        text, "closedloop_model_load_failures_total", version=v3, reason="refused"
    )
    assert sum(failures) >= 1
    logger_failures = metric_values(
        text, "closedloop_request_logger_events_total", outcome="send_failed"
    )
    assert sum(logger_failures) > 0
    log = (server.state_dir / "server.log").read_text()
    assert f"keeping fraud-swap v2: loading {v3} failed" in log


def test_predict_command_scores_a_file(
    servers: Servers, model_v1: TrainedModel, tmp_path: Path
) -> None:
    import typer
    from typer.testing import CliRunner

    from closedloop.cli.serve import register as register_commands
    from closedloop.data.generate import generate_transactions

    frame = generate_transactions(25, seed=16)
    frame.to_parquet(tmp_path / "rows.parquet")
    frame.to_csv(tmp_path / "rows.csv", index=False)
    app = typer.Typer()
    register_commands(app)
    expected = model_v1.pipeline.predict_proba(frame.loc[:, list(model_v1.schema.feature_names)])
    for name in ("rows.parquet", "rows.csv"):
        result = CliRunner().invoke(
            app,
            ["predict", "--url", servers.main.url, "--data", str(tmp_path / name), "--batch", "10"],
        )
        assert result.exit_code == 0, result.output
        lines = result.stdout.strip().splitlines()
        assert lines[0] == "row,prediction,p_0,p_1" and len(lines) == 26
        scored = np.array([[float(v) for v in line.split(",")[2:]] for line in lines[1:]])
        np.testing.assert_allclose(scored, expected, rtol=1e-5)

    broken = CliRunner().invoke(
        app, ["predict", "--url", servers.main.url, "--data", str(tmp_path / "missing.csv")]
    )
    assert broken.exit_code == 1 and "does not exist" in broken.output
    frame.drop(columns=["amount"]).to_csv(tmp_path / "narrow.csv", index=False)
    narrow = CliRunner().invoke(
        app, ["predict", "--url", servers.main.url, "--data", str(tmp_path / "narrow.csv")]
    )
    assert narrow.exit_code == 1 and "lacks columns ['amount']" in narrow.output


def test_serve_command_runs_in_the_foreground_and_ctrl_c_stops_everything(
    servers: Servers,
) -> None:
    cli = servers.cli
    assert cli.health()["ready"]
    assert "serving fraud-swap v1 (following the champion)" in "".join(cli.output)
    assert processes_in(cli.state_dir)
    assert cli.interrupt() == 0
    assert "stopping the model server" in "".join(cli.output)
    assert processes_in(cli.state_dir) == []


def test_serve_refuses_a_version_that_does_not_exist(
    s3_server: LocalS3, registry: Registry, model_v1: TrainedModel
) -> None:
    import typer
    from typer.testing import CliRunner

    from closedloop.cli.serve import register as register_commands

    register(registry, "fraud-missing", model_v1)
    app = typer.Typer()
    register_commands(app)
    result = CliRunner().invoke(
        app,
        ["serve", "--model-name", "fraud-missing", "--registry-uri", registry.root,
         "--version", "v9", "--port", str(free_port())],
        env=s3_server.settings().to_env(),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "fraud-missing has no version 'v9'" in result.output


def test_stop_leaves_no_process(servers: Servers, s3_server: LocalS3) -> None:
    server = servers.main
    pid = server.pid
    assert pid is not None and processes_in(servers.main_dir)
    server.stop()
    assert processes_in(servers.main_dir) == []
    assert group_members(pid) == []
