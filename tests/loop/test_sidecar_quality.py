"""The sidecar measures quality: labelled feedback joined to its logged prediction.

Unit tests of the join map and the labelled rows first; then an in-process
:class:`DriftMonitor` on the session's SeaweedFS, with a registered version that has a
real model's quality baseline, fed request, response and feedback events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar.alarm import DriftAlarm
from closedloop.drift.sidecar.errors import EventRefused
from closedloop.drift.sidecar.events import feedback_puid, response_prediction
from closedloop.drift.sidecar.frames import feature_fields
from closedloop.drift.sidecar.join import LabelledRows, LoggedPrediction, PredictionLog
from closedloop.drift.sidecar.loader import load_served_detector
from closedloop.drift.sidecar.monitor import DriftMonitor, MonitorSettings
from closedloop.drift.sidecar.state import Checkpoint, StateDir
from closedloop.drift.sidecar.window import OpenWindow, WindowBuffer
from closedloop.ml.schema import InputSchema, infer_schema

QUALITY_MODEL = "fraud-quality"
WINDOW = 1000
BATCH = 100


# -- the join map -----------------------------------------------------------------------
def _prediction(at: float, version: str | None = "v1") -> LoggedPrediction:
    return LoggedPrediction(np.array([[0.9, 0.1]]), version, at)


def test_the_prediction_log_forgets_the_oldest_beyond_its_capacity():
    log = PredictionLog(max_age=100.0, capacity=3)
    for i in range(5):
        log.add(f"p{i}", _prediction(float(i)))
    assert len(log) == 3
    assert log.take("p0", 5.0) == "unknown_puid"
    assert log.take("p1", 5.0) == "unknown_puid"
    found = log.take("p4", 5.0)
    assert isinstance(found, LoggedPrediction) and found.at == 4.0
    # A prediction is judged once: taken, it is gone.
    assert log.take("p4", 5.0) == "unknown_puid"


def test_the_prediction_log_expires_by_age():
    log = PredictionLog(max_age=10.0, capacity=100)
    log.add("old", _prediction(0.0))
    log.add("new", _prediction(8.0))
    assert log.take("old", 11.0) == "expired"
    log.add("newer", _prediction(25.0))  # adding also forgets what is too old
    assert len(log) == 1
    assert log.take("new", 25.0) == "unknown_puid"
    log.add("again", _prediction(30.0))
    assert log.expire(100.0) == 2 and len(log) == 0


def test_a_repeated_puid_replaces_the_older_prediction():
    log = PredictionLog(max_age=10.0)
    log.add("p", _prediction(1.0, "v1"))
    log.add("p", _prediction(2.0, "v2"))
    assert len(log) == 1
    found = log.take("p", 3.0)
    assert isinstance(found, LoggedPrediction) and found.model_version == "v2"


def _schema() -> InputSchema:
    return infer_schema(generate_transactions(200, seed=3), DEFAULT_TARGET)


def test_labels_join_as_class_indices_and_positive_class_scores():
    schema = _schema()
    rows = LabelledRows.join([1, 0], np.array([[0.2, 0.8], [0.7, 0.3]]), schema)
    assert rows.y.tolist() == [1.0, 0.0]
    assert rows.scores.tolist() == [0.8, 0.3]
    both = LabelledRows.concat([rows, LabelledRows.empty(), rows])
    assert len(both) == 4
    back = LabelledRows.from_frame(both.to_frame())
    assert back.y.tolist() == both.y.tolist() and back.scores.tolist() == both.scores.tolist()
    multi = LabelledRows(np.array([2.0]), np.array([[0.1, 0.2, 0.7]]))
    again = LabelledRows.from_frame(multi.to_frame())
    assert again.scores.shape == (1, 3) and again.scores[0, 2] == 0.7


def test_response_scores_and_the_feedback_puid_are_read_and_checked():
    schema = _schema()
    body = {
        "data": {"names": ["0", "1"], "ndarray": [[0.9, 0.1], [0.4, 0.6]]},
        "meta": {"tags": {"model_version": "v3"}, "puid": "abc"},
    }
    prediction = response_prediction(body, schema)
    assert prediction.scores.shape == (2, 2) and prediction.model_version == "v3"
    for bad in (
        {},
        {"data": {"ndarray": [[0.9, 0.1, 0.0]]}},
        {"data": {"ndarray": [["x", "y"]]}},
        {"data": {"ndarray": [[None, 0.1]]}},
        {"data": {"ndarray": []}},
    ):
        with pytest.raises(EventRefused):
            response_prediction(bad, schema)
    assert feedback_puid({"response": body, "truth": {}}) == "abc"
    assert feedback_puid({"truth": {}}) is None
    assert feedback_puid({"response": {"meta": {"puid": ""}}}) is None
    assert feedback_puid({"response": {"meta": "abc"}}) is None


def test_labels_go_with_their_window_and_survive_a_checkpoint(tmp_path):
    buffer = WindowBuffer(size=4, max_age=60.0, min_rows=1, max_labels=3)
    schema = _schema()
    frame = generate_transactions(4, seed=1)[list(schema.feature_names)]
    labelled = LabelledRows(np.array([0.0, 1.0]), np.array([0.1, 0.9]))
    assert buffer.add_labels(labelled) == 0
    assert buffer.add_labels(labelled) == 1  # over the cap of 3: one dropped
    buffer.add(frame.iloc[:2], now=1.0)
    snapshot = buffer.snapshot()
    assert len(snapshot.labels) == 3

    state = StateDir(tmp_path, feature_fields(schema), [])
    closed = buffer.add(frame.iloc[:2], now=2.0)
    assert len(closed) == 1 and len(closed[0].labels) == 3 and buffer.labelled_rows == 0
    buffer.add_labels(labelled)
    checkpoint = Checkpoint(
        model_name="m",
        model_version="v1",
        written_at=3.0,
        rows_accepted=4,
        open_window=buffer.snapshot(),
        pending=tuple(closed),
        history=(),
        dedupe_keys=(),
        feedback=pd.DataFrame(),
    )
    state.write_checkpoint(checkpoint)
    back = state.read_checkpoint()
    assert back is not None
    assert back.open_window.labels.y.tolist() == [0.0, 1.0]
    assert back.pending[0].labels.scores.tolist() == closed[0].labels.scores.tolist()
    restored = WindowBuffer(size=4, max_age=60.0, min_rows=1)
    restored.restore(OpenWindow(back.open_window.sequence, None, pd.DataFrame(), labelled))
    assert restored.labelled_rows == 2


# -- a sidecar in process, on real S3 ---------------------------------------------------
@dataclass(frozen=True)
class QualityModel:
    registry_uri: str
    schema: InputSchema
    pipeline: object
    store: object
    bucket: str


@pytest.fixture(scope="module")
def quality_model(loop_s3, tmp_path_factory) -> QualityModel:
    """``fraud-quality`` v1: a detector, a schema, and a real model's quality baseline."""
    from closedloop.drift.detector import fit_detector, save_detector_dir
    from closedloop.ml.train import ModelConfig, encode_target, predict_scores, train_model
    from closedloop.quality import QUALITY_BASELINE_FILE, QualityBaseline
    from closedloop.registry import Lineage, Registry

    reference = generate_transactions(6000, seed=0)
    schema = infer_schema(reference, DEFAULT_TARGET)
    config = ModelConfig("xgboost", {"n_estimators": 50, "n_jobs": 1}, seed=0)
    pipeline = train_model(reference.iloc[:4000], schema, config)
    holdout = reference.iloc[4000:]
    baseline = QualityBaseline.from_holdout(
        "classification",
        encode_target(holdout[DEFAULT_TARGET], schema),
        predict_scores(pipeline, holdout, schema),
    )
    version_dir = tmp_path_factory.mktemp("quality-version")
    save_detector_dir(fit_detector(reference, schema, seed=0), version_dir / "detector")
    (version_dir / "schema.json").write_text(schema.to_json())
    (version_dir / QUALITY_BASELINE_FILE).write_bytes(baseline.to_json())
    registry_uri = f"s3://{loop_s3.bucket}/registry"
    registry = Registry(loop_s3.store, registry_uri)
    manifest = registry.register(
        QUALITY_MODEL, version_dir, Lineage("generated://seed=0", "0" * 64)
    )
    assert manifest.version == "v1"
    return QualityModel(registry_uri, schema, pipeline, loop_s3.store, loop_s3.bucket)


POLICY = DriftPolicy(window_size=WINDOW, window_max_age_seconds=600, k=1, n=3, min_samples=100)


def _settings(state_dir: Path, trigger_url: str, bucket: str) -> MonitorSettings:
    return MonitorSettings(
        replica="quality-test",
        state_dir=state_dir,
        trigger_url=trigger_url,
        archive_uri=f"s3://{bucket}/feedback-{uuid.uuid4().hex[:6]}",
        checkpoint_interval=3600,
        emit_backoff_max=0.5,
        tick_seconds=0.2,
    )


@pytest.fixture()
def monitor(quality_model, receiver, tmp_path) -> Iterator[DriftMonitor]:
    served = load_served_detector(
        quality_model.store, quality_model.registry_uri, QUALITY_MODEL, "v1"
    )
    assert served.quality_baseline is not None
    sidecar = DriftMonitor(
        _settings(tmp_path / "state", receiver.url, quality_model.bucket),
        POLICY,
        served,
        quality_model.store,
    )
    sidecar.open()
    sidecar.start()
    try:
        yield sidecar
    finally:
        sidecar.stop()


def _metrics(sidecar: DriftMonitor) -> str:
    return generate_latest(sidecar.metrics.registry).decode()


def _send_labelled(sidecar, events, quality_model, frame: pd.DataFrame) -> None:
    """As the executor logs a client's traffic: response and feedback, then the request.

    The request of each batch comes last so that its labels join the window it fills.
    """
    from closedloop.ml.train import feature_frame

    schema = quality_model.schema
    for start in range(0, len(frame), BATCH):
        batch = frame.iloc[start : start + BATCH]
        puid = str(uuid.uuid4())
        probabilities = quality_model.pipeline.predict_proba(feature_frame(batch, schema))
        headers, body = events.response(probabilities, puid)
        assert sidecar.ingest(headers, body).outcome == "recorded"
        echoed = events.response_body(probabilities, puid=puid)
        headers, body = events.feedback(batch, schema, response=echoed)
        assert sidecar.ingest(headers, body).outcome == "buffered"
        headers, body = events.request(batch, schema)
        assert sidecar.ingest(headers, body).outcome == "accepted"


def _new_alarms(receiver, seen: set[str], wait) -> list[DriftAlarm]:
    def fresh() -> list[DriftAlarm]:
        return [
            DriftAlarm.from_http(h, b)
            for h, b in receiver.delivered()
            if h["ce-id"] not in seen and QUALITY_MODEL in h["ce-source"]
        ]

    return wait(fresh, 30, "a drift event for the quality model")


@pytest.mark.slow
def test_concept_drift_degrades_quality_and_the_alarm_carries_it(
    monitor, quality_model, events, receiver, read_metric, wait
):
    seen = {h["ce-id"] for h, _ in receiver.delivered()}
    drifted = generate_transactions(WINDOW, seed=21, concept_drift=1.0)
    _send_labelled(monitor, events, quality_model, drifted)
    alarms = _new_alarms(receiver, seen, wait)
    window = alarms[0].window
    assert window.quality is not None and window.quality.n_rows == WINDOW
    assert window.quality.metric == "roc_auc"
    verdict = window.verdict(POLICY)
    assert verdict.quality_degraded is True and verdict.because == "quality"
    assert not window.labels_stale
    text = _metrics(monitor)
    labels = {"model": QUALITY_MODEL, "version": "v1"}
    assert read_metric(text, "closedloop_sidecar_window_verdict_total", verdict="degraded") == 1
    assert read_metric(text, "closedloop_sidecar_feedback_joined_total", **labels) == WINDOW / BATCH
    assert read_metric(text, "closedloop_sidecar_labelled_rows") == WINDOW
    assert read_metric(text, "closedloop_sidecar_quality_drop") >= POLICY.min_quality_drop
    assert read_metric(text, "closedloop_sidecar_quality_p_value") < POLICY.quality_p_value
    value = read_metric(text, "closedloop_sidecar_quality_value", metric="roc_auc")
    baseline = read_metric(text, "closedloop_sidecar_quality_baseline", metric="roc_auc")
    assert value < baseline - POLICY.min_quality_drop
    assert read_metric(text, "closedloop_sidecar_labels_stale") == 0


@pytest.mark.slow
def test_same_concept_traffic_holds_its_quality(monitor, quality_model, events, read_metric, wait):
    _send_labelled(monitor, events, quality_model, generate_transactions(WINDOW, seed=12))

    def verdicts() -> float:
        return read_metric(_metrics(monitor), "closedloop_sidecar_window_verdict_total")

    wait(lambda: verdicts() >= 1, 30, "the window to be judged")
    text = _metrics(monitor)
    assert read_metric(text, "closedloop_sidecar_window_verdict_total", verdict="quiet") == 1
    assert read_metric(text, "closedloop_sidecar_labelled_rows") == WINDOW
    assert read_metric(text, "closedloop_sidecar_quality_p_value") >= POLICY.quality_p_value


@pytest.mark.slow
def test_unjoined_and_mislabelled_feedback_never_enter_a_window(
    monitor, quality_model, events, read_metric
):
    schema = quality_model.schema
    batch = generate_transactions(10, seed=5)
    probabilities = np.tile([0.9, 0.1], (10, 1))
    unmatched = {
        "unknown_puid": events.response_body(probabilities, puid="never-predicted"),
        "no_puid": events.response_body(probabilities),
    }
    for response in unmatched.values():
        headers, body = events.feedback(batch, schema, response=response)
        assert monitor.ingest(headers, body).outcome == "buffered"  # archived all the same
    headers, body = events.feedback(batch, schema)  # no response at all
    monitor.ingest(headers, body)
    # A prediction of another version, and one whose row count differs from the labels.
    for rows, version in ((10, "v9"), (3, "v1")):
        puid = str(uuid.uuid4())
        monitor.ingest(*events.response(np.tile([0.9, 0.1], (rows, 1)), puid, version=version))
        echoed = events.response_body(probabilities, version=version, puid=puid)
        monitor.ingest(*events.feedback(batch, schema, response=echoed))
    # A bad label is refused (acknowledged, 202 on HTTP), counted, and joins nothing.
    puid = str(uuid.uuid4())
    monitor.ingest(*events.response(probabilities, puid))
    headers, body = events.feedback(
        batch, schema, response=events.response_body(probabilities, puid=puid)
    )
    bad = json.loads(body)
    bad["truth"]["data"]["ndarray"][0] = [7]
    refused = monitor.ingest(headers, json.dumps(bad).encode())
    assert (refused.outcome, refused.reason) == ("refused", "label")
    bad["truth"]["data"]["ndarray"][0] = ["fraud"]
    refused = monitor.ingest({**headers, "Ce-Id": str(uuid.uuid4())}, json.dumps(bad).encode())
    assert refused.outcome == "refused"

    assert monitor.status()["window_labelled_rows"] == 0
    text = _metrics(monitor)
    name = "closedloop_sidecar_feedback_unmatched_total"
    assert read_metric(text, name, reason="unknown_puid") == 1
    assert read_metric(text, name, reason="no_puid") == 2
    assert read_metric(text, name, reason="other_version") == 1
    assert read_metric(text, name, reason="row_mismatch") == 1
    assert read_metric(text, "closedloop_sidecar_feedback_joined_total") == 0
    name = "closedloop_sidecar_rows_refused_total"
    assert read_metric(text, name, type="feedback", reason="label") == 2 * len(batch)
    # The refused feedback left its prediction in the log: a good feedback still joins.
    good = events.response_body(probabilities, puid=puid)
    monitor.ingest(*events.feedback(batch, schema, response=good))
    assert monitor.status()["window_labelled_rows"] == 10


@pytest.mark.slow
def test_labels_of_the_open_window_survive_a_clean_restart(
    quality_model, events, receiver, tmp_path
):
    served = load_served_detector(
        quality_model.store, quality_model.registry_uri, QUALITY_MODEL, "v1"
    )
    settings = _settings(tmp_path / "state", receiver.url, quality_model.bucket)
    first = DriftMonitor(settings, POLICY, served, quality_model.store)
    first.open()
    _send_labelled(first, events, quality_model, generate_transactions(3 * BATCH, seed=31))
    before = first.status()
    assert before["window_labelled_rows"] == 3 * BATCH
    first.stop()
    second = DriftMonitor(settings, POLICY, served, quality_model.store)
    second.open()
    try:
        after = second.status()
        assert after["window_rows"] == before["window_rows"]
        assert after["window_labelled_rows"] == 3 * BATCH
    finally:
        second.stop()


@pytest.mark.slow
def test_a_version_without_a_baseline_loads_with_quality_unknown(served_model):
    served = load_served_detector(
        served_model.store, served_model.registry_uri, "fraud", "champion"
    )
    assert served.quality_baseline is None


def test_the_demo_client_names_the_prediction_in_its_feedback():
    """The demo traffic echoes the response it got, with the puid the server returned."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from closedloop.demo.traffic import Phase, TrafficDriver

    feedback: list[dict] = []

    class Server(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path.endswith("/feedback"):
                feedback.append(body)
                answer: dict = {"meta": {}}
            else:
                rows = len(body["data"]["ndarray"])
                answer = {
                    "data": {"names": ["0", "1"], "ndarray": [[0.9, 0.1]] * rows},
                    "meta": {"tags": {"model_version": "v1"}},
                }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Seldon-Puid", f"puid-{len(feedback)}")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    schema = _schema()
    driver = TrafficDriver(
        f"http://127.0.0.1:{server.server_address[1]}",
        schema.feature_names,
        DEFAULT_TARGET,
        batch_rows=5,
        rows_per_second=1000,
    )
    try:
        driver.run_phase(Phase("p", rows=10))
    finally:
        driver.close()
        server.shutdown()
        server.server_close()
    assert [f["response"]["meta"]["puid"] for f in feedback] == ["puid-0", "puid-1"]
    assert all(feedback_puid(f) for f in feedback)
    assert feedback[0]["response"]["meta"]["tags"] == {"model_version": "v1"}
