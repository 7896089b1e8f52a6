"""The trigger's KFP backend against a stand-in of the KFP v2beta1 REST API.

The stand-in answers what ``kfp.Client`` calls (healthz, experiments, runs) and can be
"down" for run creation (503), or create a run and lose the answer, which is exactly the
case a missing idempotency key makes dangerous.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from closedloop.registry import Lineage, Registry
from closedloop.trigger.state import TriggerStore

pytestmark = pytest.mark.slow

MODEL = "fraud"


class FakeKfp:
    """Enough of the KFP API for ``create_run_from_pipeline_package`` and run lookups."""

    def __init__(self) -> None:
        self.experiments: dict[str, str] = {}
        self.runs: list[dict[str, Any]] = []
        self.create_attempts = 0
        self.down = True  # run creation answers 503
        self.lose_answers = 0  # create the run, then answer 503 anyway
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                with fake.lock:
                    if url.path == "/apis/v2beta1/healthz":
                        self.reply(200, {"multi_user": False})
                    elif url.path == "/apis/v2beta1/experiments":
                        name = fake.filtered_name(query)
                        found = [
                            {"experiment_id": eid, "display_name": n}
                            for n, eid in fake.experiments.items()
                            if name in (None, n)
                        ]
                        self.reply(200, {"experiments": found} if found else {})
                    elif url.path == "/apis/v2beta1/runs":
                        name = fake.filtered_name(query)
                        found = [
                            fake.public(r)
                            for r in fake.runs
                            if name in (None, r["display_name"])
                            and query.get("experiment_id") in (None, r["experiment_id"])
                        ]
                        self.reply(200, {"runs": found} if found else {})
                    elif url.path.startswith("/apis/v2beta1/runs/"):
                        run_id = url.path.rsplit("/", 1)[1]
                        run = next((r for r in fake.runs if r["run_id"] == run_id), None)
                        self.reply(200 if run else 404, fake.public(run) if run else {})
                    else:
                        self.reply(404, {})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                with fake.lock:
                    if self.path == "/apis/v2beta1/experiments":
                        eid = str(uuid.uuid4())
                        fake.experiments[body["display_name"]] = eid
                        self.reply(
                            200, {"experiment_id": eid, "display_name": body["display_name"]}
                        )
                    elif self.path == "/apis/v2beta1/runs":
                        fake.create_attempts += 1
                        if fake.down:
                            self.reply(503, {"error": "ml-pipeline unavailable"})
                            return
                        run = {
                            "run_id": str(uuid.uuid4()),
                            "display_name": body["display_name"],
                            "experiment_id": body["experiment_id"],
                            "parameters": body["runtime_config"]["parameters"],
                            "created": time.time(),
                        }
                        fake.runs.append(run)
                        if fake.lose_answers:
                            fake.lose_answers -= 1
                            self.reply(503, {"error": "gateway timeout after the run was created"})
                            return
                        self.reply(200, fake.public(run))
                    else:
                        self.reply(404, {})

            def reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def filtered_name(query: dict[str, str]) -> str | None:
        if "filter" not in query:
            return None
        predicates = json.loads(query["filter"])["predicates"]
        return next(p["stringValue"] for p in predicates if p["key"] == "display_name")

    @staticmethod
    def public(run: dict[str, Any]) -> dict[str, Any]:
        done = time.time() - run["created"] > 1.0
        return {
            "run_id": run["run_id"],
            "display_name": run["display_name"],
            "experiment_id": run["experiment_id"],
            "state": "SUCCEEDED" if done else "RUNNING",
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def kfp_api():
    fake = FakeKfp()
    yield fake
    fake.close()


def test_a_down_backend_retries_the_alarm_without_losing_or_doubling_it(
    loop_s3,
    kfp_api,
    policy_file,
    make_service,
    new_ports,
    services,
    tmp_path,
    make_alarm,
    wait,
    monkeypatch,
):
    from kfp import compiler

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from tiny_pipeline import retrain

    package = tmp_path / "tiny.yaml"
    compiler.Compiler().compile(retrain, str(package))
    # The served version's lineage tells the trigger where its training data is.
    registry_uri = f"s3://{loop_s3.bucket}/registry-kfp-{uuid.uuid4().hex[:6]}"
    (tmp_path / "version").mkdir()
    (tmp_path / "version" / "schema.json").write_text("{}")
    Registry(loop_s3.store, registry_uri).register(
        MODEL, tmp_path / "version", Lineage("s3://data/train.parquet", "0" * 64)
    )
    state_uri = f"s3://{loop_s3.bucket}/trigger-kfp-{uuid.uuid4().hex[:6]}"
    state = TriggerStore(loop_s3.store, state_uri)
    ports = new_ports()
    args = [
        "trigger", "serve",
        "--policy", str(policy_file(tmp_path / "policy.json")),
        "--registry-uri", registry_uri,
        "--state-uri", state_uri,
        "--backend", "kfp",
        "--kfp-host", kfp_api.url,
        "--pipeline", str(package),
        "--experiment", "closedloop-retraining",
        "--pipeline-arg", "marker_dir=/nonexistent",
        "--port", str(ports.events),
        "--metrics-port", str(ports.ops),
        "--replica-id", "kfp-trigger",
        "--reconcile-seconds", "0.2",
        "--retry-initial-seconds", "0.2",
        "--retry-max-seconds", "0.5",
    ]  # fmt: skip

    def start():
        service = make_service("trigger-kfp", args, loop_s3.env, tmp_path, ports)
        services.append(service)
        return service.start().wait_ready()

    alarm = make_alarm(sequence=3, replica="pod-kfp")
    headers, body = alarm.to_http()
    trigger = start()
    answer = httpx.post(ports.events_url, headers=headers, content=body, timeout=30).json()
    assert answer["decision"] == "fired" and answer["run"]["status"] == "pending", answer

    # KFP is down: the run stays pending and is retried with backoff.
    wait(lambda: kfp_api.create_attempts >= 3, 60, "three failed creation attempts")
    assert state.run(MODEL, 1).status == "pending"
    # The trigger dies without warning; the claimed, pending run must survive it.
    trigger.kill()
    with kfp_api.lock:
        kfp_api.down = False
        kfp_api.lose_answers = 1  # the next creation succeeds but its answer is lost
    start()
    repeat = httpx.post(ports.events_url, headers=headers, content=body, timeout=30).json()
    assert repeat["status"] == "duplicate"

    record = wait(
        lambda: (r := state.run(MODEL, 1)).status == "succeeded" and r, 60, "the run to succeed"
    )
    assert len(kfp_api.runs) == 1, kfp_api.runs
    run = kfp_api.runs[0]
    assert run["display_name"] == record.run_name
    assert record.run_name.startswith("retrain-fraud-0001-")
    assert record.backend_run_id == run["run_id"] and record.attempts >= 4
    assert run["parameters"] == {
        "model_name": MODEL,
        "alarm_id": alarm.id,
        "reference_uri": "s3://data/train.parquet",
        "drift_started_at": alarm.history[0].opened_at,
        "marker_dir": "/nonexistent",
    }
    assert state.run_numbers(MODEL) == [1]
    audit = state.audit_records(MODEL)
    decisions = [r["outcome"] for r in audit if r["kind"] == "decision"]
    runs = Counter((r["outcome"], r["reason"]) for r in audit if r["kind"] == "run")
    assert decisions == ["fired"]
    assert runs[("retrying", "backend_unavailable")] >= 3
    assert runs[("submitted", "adopted")] == 1 and runs[("succeeded", "succeeded")] == 1
    assert ("submitted", "created") not in runs
