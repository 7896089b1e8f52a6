"""The drift sidecar as a real process: checks, dedupe, false alarms, drift, feedback, restarts."""

from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.drift.sidecar.alarm import DRIFT_EVENT_TYPE, DriftAlarm, alarm_id
from closedloop.drift.sidecar.archive import (
    EVENT_ID,
    MODEL_VERSION,
    RECEIVED_AT,
    read_archive,
)

pytestmark = pytest.mark.slow

MODEL = "fraud"
WINDOW = 1000
EVENT_ROWS = 100
FALSE_ALARM_WINDOWS = 30
# The policy tests each window at p < 0.01 / 7 per feature (Bonferroni) AND needs an
# effect size >= 0.1; the expected false-alarm rate is far below 1%. Bound: <= 1 of 30.
FALSE_ALARM_BOUND = 1 / FALSE_ALARM_WINDOWS


@pytest.fixture(scope="module")
def sidecar(served_model, receiver, policy_file, make_service, new_ports, tmp_path_factory):
    """One sidecar process for the module (the last test restarts and kills it)."""
    work = tmp_path_factory.mktemp("sidecar")
    ports = new_ports()
    archive_uri = f"s3://{served_model.bucket}/feedback-{uuid.uuid4().hex[:6]}"
    args = [
        "sidecar", "serve",
        "--registry-uri", served_model.registry_uri,
        "--model-name", MODEL,
        "--model-version", "champion",
        "--policy", str(policy_file(work / "policy.json")),
        "--port", str(ports.events),
        "--metrics-port", str(ports.ops),
        "--trigger-url", receiver.url,
        "--state-dir", str(work / "state"),
        "--archive-uri", archive_uri,
        "--archive-batch-rows", "50",
        "--archive-flush-seconds", "1",
        "--emit-backoff-max", "0.5",
        "--replica-id", "replica-a",
        # Only start-up and shutdown checkpoints: a hard kill's loss is exactly known.
        "--checkpoint-interval", "3600",
    ]  # fmt: skip
    started = []

    def start():
        service = make_service("sidecar", args, served_model.env, work, ports)
        started.append(service)
        return service.start().wait_ready()

    handle = {"service": start(), "start": start, "ports": ports, "archive_uri": archive_uri}
    handle["state_dir"] = work / "state"
    try:
        yield handle
        current = handle["service"]
        if current.proc.poll() is None:
            assert current.terminate() == 0, current.log()
    finally:
        for service in started:
            service.stop_quietly()


CLIENT = httpx.Client(timeout=10)  # one connection pool for the module's many requests


def post(ports, headers, body) -> httpx.Response:
    return CLIENT.post(ports.events_url, headers=headers, content=body)


def metrics(ports) -> str:
    return CLIENT.get(ports.ops_url("/metrics")).text


def window_count(read_metric, ports, drifted: str | None = None) -> float:
    labels = {"drifted": drifted} if drifted else {}
    return read_metric(metrics(ports), "closedloop_sidecar_windows_evaluated_total", **labels)


def send_rows(ports, events, schema, frame: pd.DataFrame) -> None:
    for start in range(0, len(frame), EVENT_ROWS):
        headers, body = events.request(frame.iloc[start : start + EVENT_ROWS], schema)
        response = post(ports, headers, body)
        assert response.status_code == 200, response.text


def test_bad_events_are_refused_and_later_events_still_count(
    sidecar, served_model, events, read_metric
):
    ports = sidecar["ports"]
    schema = served_model.schema
    rows = generate_transactions(7, seed=7)
    good_headers, good_body = events.request(rows, schema)
    names = list(schema.feature_names)
    payload = json.loads(good_body)["data"]["ndarray"]

    def body(data: object) -> bytes:
        return json.dumps(data).encode()

    def with_headers(**changes: str | None) -> dict[str, str]:
        headers = {**good_headers, "Ce-Id": str(uuid.uuid4())}
        for key, value in changes.items():
            key = key.replace("_", "-")
            if value is None:
                headers.pop(key)
            else:
                headers[key] = value
        return headers

    swapped = [row[1:2] + row[:1] + row[2:] for row in payload]
    text_amount = [["a lot", *row[1:]] for row in payload]
    missing_key = {"jsonData": [dict(zip(names[:-1], payload[0][:-1], strict=True))]}
    # Unreadable: a client error, 400.
    rejected = [
        ("attributes", with_headers(Ce_Id=None), good_body),
        ("attributes", with_headers(Ce_Source=None), good_body),
        ("attributes", with_headers(Ce_Specversion="0.3"), good_body),
        ("type", with_headers(Ce_Type="io.seldon.serving.inference.bogus"), good_body),
        ("not_json", with_headers(), b"{not json"),
    ]
    # Readable, but the model server refuses it: acknowledged (202), nothing taken.
    refused = [
        ("message", with_headers(), body([1, 2, 3])),
        ("message", with_headers(), body({"data": {"ndarray": []}})),
        ("message", with_headers(), body({"data": {"ndarray": [payload[0], payload[1][:3]]}})),
        ("message", with_headers(), body({"strData": "hello"})),
        ("columns", with_headers(), body({"data": {"ndarray": [row[:3] for row in payload]}})),
        ("not_a_number", with_headers(), body({"data": {"names": names, "ndarray": text_amount}})),
        ("columns", with_headers(), body({"data": {"names": names[1:2] + names[:1] + names[2:], "ndarray": swapped}})),
        ("missing", with_headers(), body({"data": {"names": names, "ndarray": [[float("nan"), *payload[0][1:]]]}})),
        ("infinite", with_headers(), body({"data": {"names": names, "ndarray": [[float("inf"), *payload[0][1:]]]}})),
        ("columns", with_headers(), body(missing_key)),
    ]  # fmt: skip
    before = metrics(ports)
    for reason, headers, content in rejected:
        response = post(ports, headers, content)
        assert response.status_code == 400, (reason, response.text)
        assert response.json()["reason"] == reason, response.text
        assert response.json()["error"]
    for reason, headers, content in refused:
        response = post(ports, headers, content)
        assert response.status_code == 202, (reason, response.text)
        assert response.json()["status"] == "refused", response.text
        assert response.json()["reason"] == reason, response.text
        assert response.json()["error"]

    assert post(ports, good_headers, good_body).json() == {"status": "accepted", "rows": 7}
    json_headers = {**good_headers, "Ce-Id": str(uuid.uuid4())}
    records = [dict(zip(names, row, strict=True)) for row in payload[:3]]
    response = post(ports, json_headers, body({"jsonData": records}))
    assert response.json() == {"status": "accepted", "rows": 3}
    response = post(
        ports,
        {**good_headers, "Ce-Type": "io.seldon.serving.inference.response", "Ce-Id": "r1"},
        b"{}",
    )
    assert response.status_code == 202

    after = metrics(ports)

    def delta(name: str, **labels: str) -> float:
        return read_metric(after, name, **labels) - read_metric(before, name, **labels)

    assert delta("closedloop_sidecar_events_rejected_total") == len(rejected)
    assert delta("closedloop_sidecar_events_total", outcome="refused") == len(refused)
    assert delta("closedloop_sidecar_rows_accepted_total") == 10
    for reason in {r for r, _, _ in rejected}:
        assert read_metric(after, "closedloop_sidecar_events_rejected_total", reason=reason) > 0
    for reason in {r for r, _, _ in refused}:
        name = "closedloop_sidecar_rows_refused_total"
        assert read_metric(after, name, type="request", reason=reason) > 0


def test_the_same_event_ten_times_at_once_counts_once(sidecar, served_model, events, read_metric):
    ports = sidecar["ports"]
    headers, body = events.request(generate_transactions(12, seed=8), served_model.schema)
    before = metrics(ports)
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: post(ports, headers, body).json(), range(10)))
    after = metrics(ports)
    assert sorted(a["status"] for a in answers) == ["accepted"] + ["duplicate"] * 9
    assert (
        read_metric(after, "closedloop_sidecar_rows_accepted_total")
        - read_metric(before, "closedloop_sidecar_rows_accepted_total")
        == 12
    )
    duplicates = read_metric(after, "closedloop_sidecar_events_total", outcome="duplicate")
    assert (
        duplicates - read_metric(before, "closedloop_sidecar_events_total", outcome="duplicate")
        == 9
    )


def test_false_alarm_rate_on_in_distribution_traffic(
    sidecar, served_model, events, receiver, read_metric, wait
):
    ports = sidecar["ports"]
    evaluated = window_count(read_metric, ports)
    drifted = window_count(read_metric, ports, "true")
    for i in range(FALSE_ALARM_WINDOWS):
        send_rows(ports, events, served_model.schema, generate_transactions(WINDOW, seed=1000 + i))
    wait(
        lambda: window_count(read_metric, ports) >= evaluated + FALSE_ALARM_WINDOWS,
        60,
        "the in-distribution windows to be evaluated",
    )
    false_alarms = window_count(read_metric, ports, "true") - drifted
    rate = false_alarms / FALSE_ALARM_WINDOWS
    print(
        f"\nfalse-alarm rate: {int(false_alarms)} of {FALSE_ALARM_WINDOWS} in-distribution "
        f"windows of {WINDOW} rows drifted = {rate:.1%} (bound {FALSE_ALARM_BOUND:.1%})"
    )
    assert rate <= FALSE_ALARM_BOUND
    if false_alarms == 0:
        assert receiver.posts == [], "no drift event may be sent for quiet windows"


def test_covariate_shift_drifts_and_each_alarm_has_a_stable_id(
    sidecar, served_model, events, receiver, read_metric, wait
):
    ports = sidecar["ports"]
    drifted_before = window_count(read_metric, ports, "true")
    already = {h["ce-id"] for h, _ in receiver.delivered()}
    shifted = generate_transactions(4 * WINDOW, seed=77, covariate_shift=1.0)
    send_rows(ports, events, served_model.schema, shifted)
    wait(
        lambda: window_count(read_metric, ports, "true") >= drifted_before + 3,
        60,
        "three drifted windows",
    )

    def new_deliveries() -> list[tuple[dict[str, str], bytes]]:
        fresh = [(h, b) for h, b in receiver.delivered() if h["ce-id"] not in already]
        return fresh if len(fresh) >= 3 else []

    fresh = wait(new_deliveries, 30, "three drift events delivered")
    alarms = [DriftAlarm.from_http(h, b) for h, b in fresh]
    sequences = [a.window.sequence for a in alarms]
    assert sequences == sorted(set(sequences))
    for (headers, _), alarm in zip(fresh, alarms, strict=True):
        assert headers["ce-type"] == DRIFT_EVENT_TYPE
        assert headers["ce-id"] == alarm_id(MODEL, "v1", "replica-a", alarm.window.sequence)
        assert headers["ce-source"] == "/closedloop/sidecar/fraud/v1/replica-a"
        assert alarm.model_version == "v1" and alarm.window.drifted
        assert {"channel", "amount"} <= set(alarm.window.drifted_features)
        assert alarm.window.effect_sizes["channel"] >= 0.1
        assert len(alarm.history) == 2  # n - 1 earlier windows
        assert [w.sequence for w in alarm.history] == [
            alarm.window.sequence - 2,
            alarm.window.sequence - 1,
        ]
    # The trigger stand-in failed the first two posts: they were retried with the same id.
    failed_ids = [h["ce-id"] for h, _, status in receiver.posts if status != 200]
    delivered_ids = [h["ce-id"] for h, _ in receiver.delivered()]
    assert len(failed_ids) == 2 and set(failed_ids) <= set(delivered_ids)
    assert len(delivered_ids) == len(set(delivered_ids))
    text = metrics(ports)
    assert read_metric(text, "closedloop_sidecar_drift_events_failed_total") >= 2
    assert read_metric(text, "closedloop_sidecar_window_drift") == 1
    assert read_metric(text, "closedloop_sidecar_feature_effect_size", feature="channel") >= 0.1


def test_feedback_is_archived_as_parquet_rows(sidecar, served_model, events, wait):
    ports, archive_uri = sidecar["ports"], sidecar["archive_uri"]
    schema = served_model.schema
    frames = [generate_transactions(20, seed=500 + i) for i in range(3)]
    ids = [str(uuid.uuid4()) for _ in frames]
    for frame, event_id in zip(frames, ids, strict=True):
        headers, body = events.feedback(frame, schema, event_id)
        assert post(ports, headers, body).json() == {"status": "buffered", "rows": 20}
    headers, body = events.feedback(frames[0], schema, ids[0])
    assert post(ports, headers, body).json()["status"] == "duplicate"
    bad = json.loads(body)
    bad["truth"]["data"]["ndarray"] = bad["truth"]["data"]["ndarray"][:5]
    response = post(ports, {**headers, "Ce-Id": str(uuid.uuid4())}, json.dumps(bad).encode())
    assert response.status_code == 202 and response.json()["reason"] == "label"
    assert "truth labels" in response.json()["error"]

    store = served_model.store
    files = wait(lambda: store.list(archive_uri), 30, "feedback files on S3")
    pattern = re.compile(
        rf"^{re.escape(archive_uri)}/model=fraud/date=\d{{4}}-\d{{2}}-\d{{2}}/hour=\d{{2}}/\d{{8}}T\d{{6}}-[0-9a-f]{{32}}\.parquet$"
    )
    assert all(pattern.match(uri) for uri in files), files
    wait(lambda: len(read_archive(store, archive_uri, MODEL)) == 60, 30, "60 archived rows")
    rows = read_archive(store, archive_uri, MODEL)
    assert list(rows.columns[: len(schema.feature_names)]) == list(schema.feature_names)
    assert set(rows[EVENT_ID]) == set(ids)
    assert set(rows[MODEL_VERSION]) == {"v1"}
    assert str(rows[RECEIVED_AT].dt.tz) == "UTC"
    expected = pd.concat(frames, ignore_index=True)
    merged = rows.sort_values([EVENT_ID, "_event_row"]).reset_index(drop=True)
    by_id = {event_id: frame for event_id, frame in zip(ids, frames, strict=True)}
    for event_id, part in merged.groupby(EVENT_ID):
        assert part[DEFAULT_TARGET].tolist() == by_id[event_id][DEFAULT_TARGET].tolist()
        assert part["amount"].tolist() == pytest.approx(by_id[event_id]["amount"].tolist())
    assert len(expected) == len(rows)


def test_health_and_metrics_endpoints(sidecar, served_model, read_metric):
    ports = sidecar["ports"]
    health = httpx.get(ports.ops_url("/healthz"), timeout=5).json()
    assert health["status"] == "ok" and health["model"] == MODEL and health["version"] == "v1"
    assert health["replica"] == "replica-a"
    text = metrics(ports)
    for feature in ("amount", "channel", "merchant_category", "hour", "country"):
        assert 0 <= read_metric(text, "closedloop_sidecar_feature_p_value", feature=feature) <= 1
    assert read_metric(text, "closedloop_sidecar_window_fill_ratio") < 1
    assert httpx.get(f"http://127.0.0.1:{ports.events}/healthz", timeout=5).status_code == 404


def test_window_survives_sigterm_and_a_hard_kill_loses_nothing(
    sidecar, served_model, events, read_metric, wait
):
    ports, state_dir = sidecar["ports"], sidecar["state_dir"]
    shifted = generate_transactions(3000, seed=9, covariate_shift=1.0)

    def health() -> dict:
        return CLIENT.get(ports.ops_url("/healthz")).json()

    def send(rows: pd.DataFrame) -> None:
        send_rows(ports, events, served_model.schema, rows)

    # A clean stop (SIGTERM) checkpoints the open window; the next start resumes it.
    send(shifted.iloc[:600])
    before = health()
    assert sidecar["service"].terminate() == 0, sidecar["service"].log()
    assert not (state_dir / "RUNNING").exists()
    sidecar["service"] = sidecar["start"]()
    resumed = health()
    assert (resumed["window_sequence"], resumed["window_rows"]) == (
        before["window_sequence"],
        before["window_rows"],
    )
    text = metrics(ports)
    assert read_metric(text, "closedloop_sidecar_starts_total", previous="clean") == 1
    assert read_metric(text, "closedloop_sidecar_rows_lost_total") == 0

    # The resumed window closes with the rows it had plus new ones.
    top_up = 1000 - resumed["window_rows"]
    send(shifted.iloc[600 : 600 + top_up])
    wait(
        lambda: (
            read_metric(metrics(ports), "closedloop_sidecar_window_sequence")
            == resumed["window_sequence"]
        ),
        30,
        "the resumed window to be evaluated",
    )
    assert read_metric(metrics(ports), "closedloop_sidecar_window_last_rows") == 1000

    # A hard kill long after the last checkpoint (the interval is an hour): every row
    # acknowledged since comes back from the journal, in the window it went to.
    send(shifted.iloc[2000:2300])
    killed = health()
    assert killed["window_rows"] == 300
    sidecar["service"].kill()
    assert (state_dir / "RUNNING").exists()
    sidecar["service"] = sidecar["start"]()
    text = metrics(ports)
    assert read_metric(text, "closedloop_sidecar_starts_total", previous="unclean") == 1
    assert read_metric(text, "closedloop_sidecar_rows_lost_total") == 0
    assert read_metric(text, "closedloop_sidecar_events_replayed_total") > 0
    after = health()
    assert (after["window_sequence"], after["window_rows"]) == (
        killed["window_sequence"],
        killed["window_rows"],
    )
    assert after["rows_accepted"] == killed["rows_accepted"]
