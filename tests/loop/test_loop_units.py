"""Fast checks of the loop's pure parts: policy, windows, decisions, events, state files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml

from closedloop.cli import sidecar as sidecar_cli
from closedloop.cli import trigger as trigger_cli
from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.deploy.seldon import BASE_CONFIG, SIDECAR_CONTAINER, build_seldon_deployment
from closedloop.drift.policy import DriftPolicy, PolicyError
from closedloop.drift.sidecar.alarm import AlarmError, DriftAlarm, WindowReport
from closedloop.drift.sidecar.archive import archive_fields, default_archive_uri
from closedloop.drift.sidecar.errors import EventRefused, EventRejected
from closedloop.drift.sidecar.events import (
    check_rows,
    feedback_rows,
    parse_attributes,
    request_message,
)
from closedloop.drift.sidecar.frames import feature_fields
from closedloop.drift.sidecar.state import StateDir
from closedloop.drift.sidecar.window import Deduper, OpenWindow, WindowBuffer
from closedloop.drift.verdict import WindowVerdict, window_verdict
from closedloop.ml.rowplan import RowPlan
from closedloop.ml.schema import infer_schema
from closedloop.trigger.policy import RunSummary, WindowObservation, decide, last_windows

ROOT = Path(__file__).parents[2]
SCHEMA = infer_schema(generate_transactions(2000, seed=0), DEFAULT_TARGET)
PLAN = RowPlan(SCHEMA)
NOW = 1_800_000_000.0
DEGRADED = WindowVerdict((), quality_degraded=True, counts=True, because="quality")


def configmap_policy() -> dict:
    docs = yaml.safe_load_all((ROOT / "manifests/base/configmaps.yaml").read_text())
    configmap = next(d for d in docs if d["metadata"]["name"] == "closedloop-drift-policy")
    return json.loads(configmap["data"]["policy.json"])


# -- the policy file ------------------------------------------------------------------
def test_the_configmap_policy_loads_unchanged():
    raw = configmap_policy()
    policy = DriftPolicy.from_dict(raw)
    assert {k: getattr(policy, k) for k in raw} == raw
    assert policy.min_rows == 100


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 6}, "k must be between 1 and 5"),
        ({"p_value": 0}, "p_value must be greater than 0"),
        ({"p_value": 1.5}, "p_value must be less than 1"),
        ({"effect_size_threshold": -0.1}, "effect_size_threshold must be at least 0"),
        ({"window_size": "1000"}, "window_size must be an integer"),
        ({"daily_cap": True}, "daily_cap must be an integer"),
        ({"cooldown_seconds": float("nan")}, "cooldown_seconds must be a finite number"),
        ({"min_window_rows": 2000}, "min_window_rows must be between 1 and 1000"),
        ({"windowsize": 10}, "unknown drift policy fields ['windowsize']"),
    ],
)
def test_bad_policies_are_refused_with_the_field_named(change, message):
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DriftPolicy.from_dict({**configmap_policy(), **change})


def test_policy_file_errors_name_the_file(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text("{nope")
    with pytest.raises(PolicyError, match=r"policy\.json: the drift policy is not valid JSON"):
        DriftPolicy.load(path)
    with pytest.raises(PolicyError, match="cannot read the drift policy"):
        DriftPolicy.load(tmp_path / "missing.json")


def test_a_feature_drifts_only_when_significant_and_large():
    policy = DriftPolicy(p_value=0.01, effect_size_threshold=0.1)
    p = {"a": 0.001, "b": 0.001, "c": 0.5, "d": 0.004}
    effect = {"a": 0.2, "b": 0.05, "c": 0.9, "d": 0.3}
    # Bonferroni: 0.01 / 4 features = 0.0025, so "d" (p 0.004) is not significant.
    assert policy.drifted_features(p, effect) == ("a",)


# -- windows and dedupe ---------------------------------------------------------------
def test_windows_close_by_size_splitting_an_event():
    buffer = WindowBuffer(size=10, max_age=60, min_rows=3)
    rows = pd.DataFrame({"x": range(25)})
    closed = buffer.add(rows, now=NOW)
    assert [(w.sequence, len(w.frame), w.reason) for w in closed] == [
        (1, 10, "size"),
        (2, 10, "size"),
    ]
    assert closed[1].frame["x"].tolist() == list(range(10, 20))
    assert (buffer.sequence, buffer.rows) == (3, 5)


def test_windows_close_by_age_only_with_enough_rows():
    buffer = WindowBuffer(size=10, max_age=60, min_rows=3)
    buffer.add(pd.DataFrame({"x": [1, 2]}), now=NOW)
    assert buffer.close_if_old(NOW + 120) is None  # old but too small: stays open
    buffer.add(pd.DataFrame({"x": [3]}), now=NOW + 121)
    assert buffer.close_if_old(NOW + 59) is None  # big enough but not old
    closed = buffer.close_if_old(NOW + 121)
    assert closed is not None and closed.reason == "age" and len(closed.frame) == 3
    assert closed.opened_at == NOW and buffer.rows == 0


def test_a_restored_window_keeps_its_age_and_number():
    buffer = WindowBuffer(size=10, max_age=60, min_rows=1, next_sequence=7)
    assert buffer.restore(OpenWindow(4, NOW, pd.DataFrame({"x": [1, 2]}))) == []
    assert (buffer.sequence, buffer.rows, buffer.opened_at) == (7, 2, NOW)


def test_dedupe_forgets_the_least_recently_seen_first():
    dedupe = Deduper(capacity=2)
    dedupe.extend([("s", "1"), ("s", "2")])
    dedupe.add(("s", "1"))
    dedupe.add(("s", "3"))
    assert ("s", "2") not in dedupe and dedupe.keys() == [("s", "1"), ("s", "3")]


# -- events ---------------------------------------------------------------------------
def headers(**extra: str) -> dict[str, str]:
    return {
        "ce-id": "1",
        "ce-source": "src",
        "ce-type": "io.seldon.serving.inference.request",
        "ce-specversion": "1.0",
        "content-type": "application/json",
        **extra,
    }


def test_tensor_and_json_payloads_are_checked_against_the_schema():
    frame = generate_transactions(2, seed=3)
    names = list(SCHEMA.feature_names)
    records = [
        {**{k: row[k] for k in names}, "transaction_time": str(row["transaction_time"])}
        for row in frame.to_dict("records")
    ]
    body = {"jsonData": json.loads(json.dumps(records, default=int))}
    rows = check_rows(PLAN, request_message(body, 10)).frame
    assert list(rows.columns) == names and len(rows) == 2
    with pytest.raises(EventRefused) as info:
        tensor = {"data": {"tensor": {"shape": [1, 3], "values": [1, 2, 3]}}}
        check_rows(PLAN, request_message(tensor, 10))
    assert info.value.reason == "columns" and "wrong width" in str(info.value)


def test_event_attributes_are_required_and_the_type_checked():
    event = parse_attributes(headers(**{"ce-requestid": "r-1"}))
    assert (event.kind, event.key, event.request_id) == ("request", ("src", "1"), "r-1")
    assert event.encoding == "json"
    with pytest.raises(EventRejected, match="Ce-Specversion"):
        parse_attributes({k: v for k, v in headers().items() if k != "ce-specversion"})
    with pytest.raises(EventRejected, match="unsupported specversion"):
        parse_attributes(headers(**{"ce-specversion": "0.3"}))
    with pytest.raises(EventRejected, match="unexpected Ce-Type"):
        parse_attributes(headers(**{"ce-type": "io.seldon.serving.inference.other"}))
    # The HTTP binding percent-encodes attribute values.
    assert parse_attributes(headers(**{"ce-source": "a%20b"})).source == "a b"


def test_feedback_labels_must_be_known_classes():
    frame = generate_transactions(2, seed=4)
    names = list(SCHEMA.feature_names)
    message = {
        "request": {"data": {"names": names, "ndarray": [[None] * 8]}},
        "truth": {"data": {"ndarray": [[1]]}},
    }
    with pytest.raises(EventRefused) as info:
        feedback_rows(message, PLAN, SCHEMA, 10)  # amount may not be missing
    assert info.value.reason == "missing"
    rows = frame.drop(columns=[DEFAULT_TARGET]).astype({"transaction_time": str})
    ndarray = json.loads(json.dumps(rows.to_numpy().tolist(), default=int))
    message["request"] = {"data": {"names": names, "ndarray": ndarray}}
    message["truth"] = {"data": {"ndarray": [1.0, "0"]}}
    checked, labels = feedback_rows(message, PLAN, SCHEMA, 10)
    assert labels == [1, 0] and checked.n_rows == 2
    message["truth"] = {"data": {"ndarray": [1, 7]}}
    with pytest.raises(
        EventRefused, match=r"truth label 1 is 7; the model's classes are \[0, 1\]"
    ) as info:
        feedback_rows(message, PLAN, SCHEMA, 10)
    assert info.value.rows == {"label": 2}


# -- alarms and decisions ---------------------------------------------------------------
def report(sequence: int, closed_at: float, drifted: bool, rows: int = 1000) -> WindowReport:
    p, effect = (1e-9, 0.3) if drifted else (0.4, 0.01)
    return WindowReport(sequence, closed_at - 10, closed_at, rows, "size", {"a": p, "b": 0.5},
                        {"a": effect, "b": 0.0}, {"a": effect, "b": 0.0}, ("a",) if drifted else ())  # fmt: skip


def alarm(sequence: int = 3, replica: str = "r1") -> DriftAlarm:
    history = (report(sequence - 2, NOW - 20, False), report(sequence - 1, NOW - 10, True))
    return DriftAlarm(
        "fraud", "v1", replica, report(sequence, NOW, True), history, 0.01, 0.1, "s3://b/feedback"
    )


def test_a_drift_alarm_survives_the_http_round_trip():
    original = alarm()
    head, body = original.to_http()
    assert head["ce-type"] == "io.closedloop.drift.detected" and head["ce-id"] == original.id
    assert DriftAlarm.from_http(head, body) == original
    assert alarm(replica="r2").id != original.id and alarm().id == original.id
    with pytest.raises(AlarmError, match="does not match its window"):
        DriftAlarm.from_http({**head, "ce-id": alarm(sequence=4).id}, body)
    with pytest.raises(AlarmError, match="unexpected CloudEvent type"):
        DriftAlarm.from_http({**head, "ce-type": "io.seldon.serving.feedback"}, body)


def window(
    sequence: int, closed_at: float, drifted: bool, replica: str = "r1", version: str = "v1"
):
    return WindowObservation(replica, version, sequence, closed_at, 1000, drifted)


def test_last_windows_pool_replicas_within_the_horizon_and_version():
    policy = DriftPolicy(n=3, window_max_age_seconds=100)  # horizon 300 s
    windows = [
        window(1, NOW - 400, True),  # too old
        window(2, NOW - 200, False),
        window(2, NOW - 200, False),  # the same window twice
        window(7, NOW - 150, True, replica="r2"),
        window(3, NOW - 100, True),
        window(4, NOW - 50, True, version="v2"),  # another version
        window(5, NOW + 10, True),  # after the alarm
    ]
    chosen = last_windows(windows, policy, "v1", NOW)
    assert [(w.replica, w.sequence) for w in chosen] == [("r1", 2), ("r2", 7), ("r1", 3)]


@pytest.mark.parametrize(
    ("drifted", "runs", "reason"),
    [
        ([True, False, False], [], "too_few_drifted_windows"),
        ([True, True, False], [RunSummary(1, NOW - 10, in_flight=True)], "run_in_flight"),
        ([True, True, True], [RunSummary(1, NOW - 100, in_flight=False)], "cooldown"),
        (
            [True, True],
            [RunSummary(2, NOW - 4000, False), RunSummary(1, NOW - 8000, False)],
            "daily_cap",
        ),
        ([True, True], [RunSummary(1, NOW - 4000, False)], "fire"),
        ([True, True], [], "fire"),
    ],
)
def test_decide_applies_the_policy_in_order(drifted, runs, reason):
    policy = DriftPolicy(
        k=2, n=3, min_window_rows=1000, min_samples=2000, cooldown_seconds=3600, daily_cap=2
    )
    windows = [window(i, NOW - 10 * i, d) for i, d in enumerate(drifted)]
    decision = decide(policy, DEGRADED, windows, runs, NOW)
    assert decision.reason == reason and decision.fire == (reason == "fire")
    assert decision.detail


def test_the_trigger_offers_what_the_retraining_pipeline_declares():
    from closedloop.trigger.backends import KfpBackend, pipeline_package

    declared = KfpBackend("http://unused", pipeline_package("retraining"), "e").declared_inputs()
    offered = {"model_name", "registry_uri", "archive_uri", "drift_started_at", "reference_uri"}
    assert offered <= declared


def test_decide_needs_samples_and_a_drifted_alarm():
    policy = DriftPolicy(k=1, n=3, window_size=5000, min_window_rows=5000, min_samples=5000)
    windows = [window(1, NOW, True)]
    assert decide(policy, DEGRADED, windows, [], NOW).reason == "too_few_samples"
    assert decide(policy, window_verdict(policy), windows, [], NOW).reason == "alarm_not_drifted"


# -- state files ----------------------------------------------------------------------
def test_a_checkpoint_reads_back_what_was_written(tmp_path):
    from closedloop.drift.sidecar.state import Checkpoint
    from closedloop.drift.sidecar.window import ClosedWindow
    from closedloop.ml.schema import check_frame

    rows = check_frame(
        generate_transactions(30, seed=2).drop(columns=[DEFAULT_TARGET]), SCHEMA
    ).frame
    rows.loc[3, "country"] = float("nan")
    state = StateDir(tmp_path, feature_fields(SCHEMA), archive_fields(SCHEMA))
    checkpoint = Checkpoint(
        model_name="fraud",
        model_version="v1",
        written_at=NOW,
        rows_accepted=50,
        open_window=OpenWindow(3, NOW - 5, rows.iloc[:10].reset_index(drop=True)),
        pending=(
            ClosedWindow(2, NOW - 60, NOW - 6, "size", rows.iloc[10:].reset_index(drop=True)),
        ),
        history=(report(1, NOW - 100, False),),
        dedupe_keys=(("s", "a"), ("s", "b")),
        feedback=pd.DataFrame(),
    )
    state.write_checkpoint(checkpoint)
    state.write_checkpoint(checkpoint)  # a second one replaces the first
    back = state.read_checkpoint()
    assert back is not None
    pd.testing.assert_frame_equal(back.open_window.frame, checkpoint.open_window.frame)
    pd.testing.assert_frame_equal(back.pending[0].frame, checkpoint.pending[0].frame)
    assert back.history == checkpoint.history and back.dedupe_keys == checkpoint.dedupe_keys
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("ckpt-")]) == 1
    assert back.journal_segment == 0


def test_default_archive_sits_beside_the_registry():
    assert default_archive_uri("s3://closedloop/registry") == "s3://closedloop/feedback"
    assert default_archive_uri("/data/cl/registry") == "/data/cl/feedback"


# -- the CLI matches the manifests ----------------------------------------------------
def options_of(register, group: str) -> set[str]:
    root = typer.Typer()
    register(root)

    @root.command()
    def noop() -> None:
        """Keep typer from collapsing the single group."""

    command = typer.main.get_command(root).commands[group].commands["serve"]
    return {opt for param in command.params for opt in param.opts}


def test_the_sidecar_cli_takes_every_flag_the_seldon_deployment_passes():
    spec = build_seldon_deployment(BASE_CONFIG)
    containers = spec["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"]
    args = next(c for c in containers if c["name"] == SIDECAR_CONTAINER)["args"]
    assert args[:2] == ["sidecar", "serve"]
    flags = {a for a in args if a.startswith("--")}
    assert flags <= options_of(sidecar_cli.register, "sidecar")
    assert DriftPolicy.from_dict(configmap_policy())  # the policy it mounts is valid


def test_the_trigger_cli_takes_every_flag_of_the_trigger_manifest():
    docs = yaml.safe_load_all((ROOT / "manifests/base/trigger.yaml").read_text())
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["trigger", "serve"]
    flags = {a for a in args if a.startswith("--")}
    assert flags <= options_of(trigger_cli.register, "trigger")
    assert args[args.index("--port") + 1] == "8090"
