"""The retrain trigger as real processes with the kfp.local backend and S3 state."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from closedloop.trigger.state import TriggerStore

pytestmark = pytest.mark.slow

MODEL = "fraud"


@pytest.fixture(scope="module")
def setup(loop_s3, policy_file, make_service, new_ports, tmp_path_factory):
    work = tmp_path_factory.mktemp("trigger")
    state_uri = f"s3://{loop_s3.bucket}/trigger-{uuid.uuid4().hex[:6]}"
    markers = work / "markers"
    policy = policy_file(work / "policy.json", k=2, n=3, min_samples=2000)

    def make(replica: str, ports):
        args = [
            "trigger", "serve",
            "--policy", str(policy),
            # No registry there: the trigger finds no reference data and offers none.
            "--registry-uri", f"s3://{loop_s3.bucket}/no-registry",
            "--state-uri", state_uri,
            "--backend", "local",
            "--pipeline", "tiny_pipeline:retrain",
            "--pipeline-arg", f"marker_dir={markers}",
            "--local-root", str(work / "runs"),
            "--port", str(ports.events),
            "--metrics-port", str(ports.ops),
            "--replica-id", replica,
            "--reconcile-seconds", "0.2",
        ]  # fmt: skip
        return make_service(f"trigger-{replica}", args, loop_s3.env, work, ports)

    ports = {"a": new_ports(), "b": new_ports()}
    running = {name: make(name, p).start() for name, p in ports.items()}
    try:
        for service in running.values():
            service.wait_ready()
        yield {
            "make": make,
            "ports": ports,
            "running": running,
            "markers": markers,
            "state": TriggerStore(loop_s3.store, state_uri),
        }
    finally:
        for service in running.values():
            service.stop_quietly()


def send(client: httpx.Client, ports, alarm) -> dict:
    """Post like a sidecar: a 503 (decision in progress elsewhere) is retried, boundedly."""
    headers, body = alarm.to_http()
    for _ in range(5):
        response = client.post(ports.events_url, headers=headers, content=body, timeout=30)
        if response.status_code != 503:
            break
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_hundred_alarms_within_the_cooldown_start_one_run(setup, make_alarm, wait):
    ports, state = setup["ports"], setup["state"]
    alarms = [make_alarm(sequence=10 + i, replica=f"pod-{i % 4}") for i in range(100)]
    repeated = alarms[0]
    jobs = [(ports["ab"[i % 2]], alarm) for i, alarm in enumerate(alarms)]
    jobs += [(ports["ab"[i % 2]], repeated) for i in range(10)]
    with httpx.Client() as client, ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda job: send(client, *job), jobs))

    statuses = Counter(a["status"] for a in answers)
    decisions = Counter(a["decision"] for a in answers if a["status"] == "decided")
    assert statuses == {"decided": 100, "duplicate": 10}
    assert decisions == {"fired": 1, "suppressed": 99}
    reasons = Counter(a["reason"] for a in answers if a["decision"] == "suppressed")
    assert set(reasons) <= {"run_in_flight", "cooldown", "lost_race"}, reasons
    fired = next(a for a in answers if a["decision"] == "fired")
    assert fired["run"]["number"] == 1 and fired["run"]["name"].startswith("retrain-fraud-0001-")

    record = wait(
        lambda: (r := state.run(MODEL, 1)).status == "succeeded" and r, 90, "the run to finish"
    )
    first = next(a for a in alarms if a.id == record.alarm_id)
    assert record.arguments == {
        "model_name": MODEL,
        "alarm_id": record.alarm_id,
        "drift_started_at": first.history[0].opened_at,
        "marker_dir": str(setup["markers"]),
    }
    assert state.run_numbers(MODEL) == [1]
    markers = list(setup["markers"].iterdir())
    assert len(markers) == 1 and markers[0].name.startswith(f"{MODEL}-{record.alarm_id}-")

    audit = state.audit_records(MODEL)
    decided = [r for r in audit if r["kind"] == "decision"]
    assert len(decided) == 100
    assert Counter(r["outcome"] for r in decided) == {"fired": 1, "suppressed": 99}
    assert all(r["reason"] and r["detail"] and r["policy"]["k"] == 2 for r in decided)
    runs = [r["outcome"] for r in audit if r["kind"] == "run"]
    assert runs == ["submitted", "succeeded"]
    stamps = [round(r["at"] * 1_000_000) for r in audit]  # keys are time-ordered (µs)
    assert stamps == sorted(stamps)


def test_a_restarted_trigger_keeps_the_cooldown(setup, make_alarm, read_metric):
    ports, state, running = setup["ports"], setup["state"], setup["running"]
    assert running["a"].terminate() == 0, running["a"].log()
    running["a"] = setup["make"]("a", ports["a"]).start().wait_ready()

    with httpx.Client() as client:
        answer = send(client, ports["a"], make_alarm(sequence=500, replica="pod-new"))
        again = send(client, ports["a"], make_alarm(sequence=10, replica="pod-0"))
    assert answer["decision"] == "suppressed" and answer["reason"] == "cooldown", answer
    assert again["status"] == "duplicate"
    assert state.run_numbers(MODEL) == [1]
    assert len(list(setup["markers"].iterdir())) == 1
    text = httpx.get(ports["a"].ops_url("/metrics"), timeout=5).text
    assert read_metric(text, "closedloop_trigger_decisions_total", reason="cooldown") == 1
    assert read_metric(text, "closedloop_trigger_run_in_flight", model=MODEL) == 0
