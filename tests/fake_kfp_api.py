"""A stand-in for the Kubeflow Pipelines API server: the v2beta1 REST calls that
``kfp.Client`` makes to start a run (``create_run_from_pipeline_package`` and
``create_recurring_run``).

No KFP API server can run on this machine (it needs Kubernetes, MySQL and object
storage). This one follows kubeflow/pipelines ``backend/api/v2beta1/run.proto``,
``experiment.proto`` and ``recurring_run.proto`` (paths, the ``run_id`` /
``experiment_id`` / ``recurring_run_id`` fields) and ``backend/src/apiserver/server``
(``/apis/v2beta1/healthz``); errors use the gRPC-gateway body ``{error, code,
message}``. It stores what it receives and decides nothing: caching, images and pull
secrets are judged on the submitted spec, as the real API server would run it.

Used by ``tests/cli/test_submit.py`` and ``tests/unit/trigger`` (``tests`` is on
pytest's ``pythonpath``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeKfp(BaseHTTPRequestHandler):
    """The API; ``runs`` keeps every run and recurring run body, ``status`` != 200 denies."""

    runs: list[dict[str, Any]] = []
    status = 200

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._send(200, {"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._send(200, {"experiments": [], "total_size": 0})
        else:
            self._send(404, {"error": self.path})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        if type(self).status != 200:
            self._send(type(self).status, {"error": "denied", "code": 16, "message": "denied"})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._send(200, {"experiment_id": "exp-1", "display_name": body.get("display_name")})
        elif self.path.startswith("/apis/v2beta1/recurringruns"):
            type(self).runs.append(body)
            self._send(200, {"recurring_run_id": "job-7", "display_name": body.get("display_name")})
        elif self.path.startswith("/apis/v2beta1/runs"):
            type(self).runs.append(body)
            self._send(
                200,
                {"run_id": "run-42", "display_name": body.get("display_name"), "state": "PENDING"},
            )
        else:
            self._send(404, {"error": self.path})


@contextmanager
def fake_kfp() -> Iterator[str]:
    """Serve a fresh :class:`FakeKfp` on a free loopback port; yield its base URL."""
    FakeKfp.runs = []
    FakeKfp.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
