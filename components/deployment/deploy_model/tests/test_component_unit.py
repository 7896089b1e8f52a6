"""deploy_model called directly: the backends that run without a cluster."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from closedloop.components.deployment.deploy_model.component import deploy_model


class _Status(BaseHTTPRequestHandler):
    served = "v1"

    def do_GET(self) -> None:
        if self.path != "/health/status":
            self.send_error(404)
            return
        body = json.dumps({"data": {"ndarray": [{"model_version": self.served}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_backend_none_does_nothing() -> None:
    assert deploy_model.python_func(model_name="fraud", version="v2", backend="none") == (
        "fraud v2: not deployed (backend none)"
    )


def test_local_without_endpoint_relies_on_champion_servers() -> None:
    message = deploy_model.python_func(model_name="fraud", version="v2", backend="local")
    assert message == "fraud v2: local servers serving 'champion' pick it up by themselves"


def test_local_with_endpoint_waits_for_the_version(server: ThreadingHTTPServer) -> None:
    _Status.served = "v3"
    message = deploy_model.python_func(
        model_name="fraud", version="v3", backend="local", endpoint=url(server) + "/"
    )
    assert message == f"fraud v3 serves at {url(server)}/"


def test_local_times_out_when_the_server_keeps_the_old_version(
    server: ThreadingHTTPServer,
) -> None:
    _Status.served = "v1"
    with pytest.raises(TimeoutError, match="still serves v1 after 1s, not v2"):
        deploy_model.python_func(
            model_name="fraud",
            version="v2",
            backend="local",
            endpoint=url(server),
            timeout_seconds=1.0,
        )


def test_an_unreachable_endpoint_times_out() -> None:
    with pytest.raises(TimeoutError, match="still serves unreachable"):
        deploy_model.python_func(
            model_name="fraud",
            version="v2",
            backend="local",
            endpoint="http://127.0.0.1:9",
            timeout_seconds=0.5,
        )


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown deploy backend 'helm'"):
        deploy_model.python_func(model_name="fraud", version="v2", backend="helm")


def test_kubernetes_refuses_a_rejected_gate_before_touching_the_cluster(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from closedloop.components.conftest import artifact_in
    from kfp import dsl

    path = tmp_path / "gate.json"
    path.write_text(json.dumps({"passed": False, "reason": "worse than v1"}))
    with pytest.raises(ValueError, match="gate rejected it \\(worse than v1\\)"):
        deploy_model.python_func(
            model_name="fraud",
            version="v2",
            backend="kubernetes",
            gate=artifact_in(dsl.Artifact, path),
        )
