"""kill -9 under load loses no acknowledged event and takes none twice.

A real sidecar process (the CLI) on a registry in a local directory (no S3): four
threads post one-row requests and two-row labelled feedback, each event with its own
amount so that every window row names its event, and note which were answered 2xx. The
sidecar is killed with SIGKILL mid-way (checkpoints every half second, so the journal
has been rotated and replayed across segments), restarted, and everything that was not
acknowledged is sent again, with some acknowledged events as well (they must come back
"duplicate"). The window rows and the feedback rows, read from the checkpoint the
sidecar writes and from the archive files its clean stop writes, are then exactly the
events sent: each once.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.drift.sidecar.archive import EVENT_ID, archive_fields
from closedloop.drift.sidecar.frames import feature_fields, from_parquet
from closedloop.drift.sidecar.state import StateDir
from closedloop.ml.schema import InputSchema, infer_schema
from closedloop.registry import Lineage, Registry
from closedloop.storage import Store

pytestmark = pytest.mark.slow

MODEL = "fraud"
EVENTS = 1800
FEEDBACK_EVERY = 6  # every sixth event is a labelled feedback of two rows
THREADS = 4
KILL_AFTER = 0.4  # of the events acknowledged
ROW = ["online", "grocery", 3, "US", 100, 0, "2026-01-02T03:04:05"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, InputSchema]:
    from closedloop.drift.detector import fit_detector, save_detector_dir

    reference = generate_transactions(3000, seed=0)
    schema = infer_schema(reference, DEFAULT_TARGET)
    version = tmp_path_factory.mktemp("version")
    save_detector_dir(fit_detector(reference, schema, seed=0), version / "detector")
    (version / "schema.json").write_text(schema.to_json())
    root = str(tmp_path_factory.mktemp("registry") / "registry")
    registry = Registry(Store(), root)
    registry.promote(
        MODEL, registry.register(MODEL, version, Lineage("t://", "0" * 64)).version, "t"
    )
    return root, schema


def amount(schema: InputSchema, i: int) -> float:
    spec = next(c for c in schema.columns if c.name == "amount")
    base = float(spec.minimum or 0.0) + 1.0
    assert spec.maximum is None or base + EVENTS * 0.01 < spec.maximum
    return round(base + i * 0.01, 6)


def build_events(schema: InputSchema) -> list[tuple[str, dict[str, str], bytes, list[float]]]:
    """``(kind, headers, body, amounts)`` of every event, in sending order."""
    names = list(schema.feature_names)
    built = []
    for i in range(EVENTS):
        headers = {
            "Ce-Specversion": "1.0",
            "Ce-Id": str(uuid.uuid4()),
            "Ce-Source": "durability-test",
            "Ce-Requestid": str(uuid.uuid4()),
            "Content-Type": "application/json",
        }
        first = amount(schema, i)
        if i % FEEDBACK_EVERY == FEEDBACK_EVERY - 1:
            amounts = [first, round(first + 0.005, 6)]
            body = {
                "request": {"data": {"names": names, "ndarray": [[a, *ROW] for a in amounts]}},
                "truth": {"data": {"ndarray": [[0], [1]]}},
            }
            headers["Ce-Type"] = "io.seldon.serving.feedback"
            built.append(("feedback", headers, json.dumps(body).encode(), amounts))
        else:
            body = {"data": {"names": names, "ndarray": [[first, *ROW]]}}
            headers["Ce-Type"] = "io.seldon.serving.inference.request"
            built.append(("request", headers, json.dumps(body).encode(), [first]))
    return built


def read_state(state_dir: Path, schema: InputSchema) -> tuple[list[float], Counter[str]]:
    """Window amounts and feedback rows per event id, from the current checkpoint."""
    state = StateDir(state_dir, feature_fields(schema), archive_fields(schema))
    checkpoint = state.read_checkpoint()
    assert checkpoint is not None
    frames = [checkpoint.open_window.frame, *(w.frame for w in checkpoint.pending)]
    amounts = [round(float(a), 6) for f in frames if len(f) for a in f["amount"]]
    feedback = checkpoint.feedback
    return amounts, Counter(feedback[EVENT_ID]) if len(feedback) else Counter()


def test_kill_9_under_load_loses_no_acknowledged_event(
    registry, policy_file, make_service, new_ports, read_metric, tmp_path
) -> None:
    root, schema = registry
    ports = new_ports()
    state_dir = tmp_path / "state"

    def service(checkpoint_interval: float):
        args = [
            "sidecar", "serve",
            "--registry-uri", root,
            "--model-name", MODEL,
            "--policy", str(policy_file(tmp_path / "policy.json", window_size=100_000)),
            "--port", str(ports.events),
            "--metrics-port", str(ports.ops),
            "--trigger-url", "http://127.0.0.1:9/",
            "--state-dir", str(state_dir),
            "--archive-uri", str(tmp_path / "archive"),
            "--archive-batch-rows", "1000000",
            "--archive-flush-seconds", "3600",
            "--checkpoint-interval", str(checkpoint_interval),
            "--log-level", "warning",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return make_service("sidecar", args, env, tmp_path, ports).start().wait_ready()

    events = build_events(schema)
    acked = [False] * EVENTS
    answered = threading.Event()
    lock = threading.Lock()
    done = [0]

    def sender(offset: int) -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(offset, EVENTS, THREADS):
                _, headers, body, _ = events[i]
                try:
                    answer = client.post(ports.events_url, headers=headers, content=body)
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200:
                    acked[i] = True
                    with lock:
                        done[0] += 1
                        if done[0] >= KILL_AFTER * EVENTS:
                            answered.set()

    first = service(checkpoint_interval=0.5)
    try:
        threads = [threading.Thread(target=sender, args=(k,)) for k in range(THREADS)]
        for thread in threads:
            thread.start()
        assert answered.wait(60), first.log()
        first.kill()
        for thread in threads:
            thread.join(60)
    finally:
        first.stop_quietly()
    assert 0 < sum(acked) < EVENTS

    second = service(checkpoint_interval=3600)  # keeps its start-up checkpoint
    try:
        # What came back from the checkpoint and the journal: every acknowledged event,
        # perhaps some that were durable but not answered, nothing twice.
        window, feedback = read_state(state_dir, schema)
        sent = {a for kind, *_, amounts in events if kind == "request" for a in amounts}
        got = {a for i, (kind, *_, amounts) in enumerate(events) if acked[i] and kind == "request" for a in amounts}  # fmt: skip
        assert len(window) == len(set(window)), "a row was taken twice"
        assert got <= set(window) <= sent
        acked_feedback = {events[i][1]["Ce-Id"] for i in range(EVENTS) if acked[i] and events[i][0] == "feedback"}  # fmt: skip
        assert acked_feedback <= set(feedback) and set(feedback.values()) <= {2}

        text = httpx.get(ports.ops_url("/metrics"), timeout=10).text
        replayed = read_metric(text, "closedloop_sidecar_events_replayed_total")
        assert replayed > 0, second.log()

        # Resend what was not acknowledged, and some of what was.
        again = [i for i in range(EVENTS) if not acked[i]]
        repeats = [i for i in range(EVENTS) if acked[i]][:50]
        outcomes: Counter[str] = Counter()
        with httpx.Client(timeout=10) as client:
            for i in again + repeats:
                _, headers, body, _ = events[i]
                answer = client.post(ports.events_url, headers=headers, content=body)
                assert answer.status_code == 200, answer.text
                if i in repeats:
                    assert answer.json() == {"status": "duplicate"}
                else:
                    outcomes[answer.json()["status"]] += 1
        print(
            f"\n{sum(acked)} of {EVENTS} events acknowledged before kill -9; {int(replayed)} "
            f"journal records replayed; of the {len(again)} resent, {outcomes['duplicate']} "
            "were durable already (answered duplicate)"
        )
        assert second.terminate() == 0, second.log()
    finally:
        second.stop_quietly()

    window, feedback = read_state(state_dir, schema)
    assert sorted(window) == sorted(sent), "window rows differ from the requests sent"
    # The clean stop wrote the buffered feedback to the archive: every file, as written.
    for path in (tmp_path / "archive").rglob("*.parquet"):
        feedback.update(from_parquet(path.read_bytes())[EVENT_ID])
    all_feedback = {headers["Ce-Id"] for kind, headers, _, _ in events if kind == "feedback"}
    assert set(feedback) == all_feedback and set(feedback.values()) == {2}
