"""deploy_model under kfp.local: the local backend verifies the swap on a model server."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from closedloop.components.conftest import run_local
from closedloop.components.deployment.deploy_model.component import deploy_model
from kfp import dsl

pytestmark = pytest.mark.slow


class _Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"meta": {"model_version": "v4"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dsl.pipeline(name="deploy-model-local")
def deploy(endpoint: str) -> str:
    return deploy_model(
        model_name="fraud", version="v4", backend="local", endpoint=endpoint, timeout_seconds=30.0
    ).output


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def outputs(server: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_local(deploy, tmp_path_factory.mktemp("deploy-local"), endpoint=server)


def test_returns_once_the_server_answers_with_the_version(outputs: dict, server: str) -> None:
    assert outputs["Output"] == f"fraud v4 serves at {server}"
