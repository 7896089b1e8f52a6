"""The drift policy, the one window verdict, and the trigger's decision over counted windows.

Each defect test names the defect it pins down (issue "quality first").
"""

from __future__ import annotations

import json
import math

import pytest

from closedloop.drift.policy import DriftPolicy, PolicyError
from closedloop.drift.sidecar.alarm import DriftAlarm, WindowReport
from closedloop.drift.verdict import window_verdict
from closedloop.quality import QualityResult
from closedloop.trigger.policy import decide, last_windows, observe

NOW = 1_800_000_000.0
FEATURES = {"a": 0.5, "b": 0.5}


def quality(drop: float, p: float = 1e-9, rows: int = 500) -> QualityResult:
    return QualityResult("roc_auc", 0.9, 0.9 - drop, drop, p, 0.3, 0.1, rows)


def report(
    sequence: int,
    closed_at: float,
    *,
    degraded: bool = False,
    drifted: bool = False,
    rows: int = 1000,
    reason: str = "size",
) -> WindowReport:
    p = {"a": 1e-12 if drifted else 0.5, "b": 0.5}
    effect = {"a": 0.4 if drifted else 0.01, "b": 0.0}
    return WindowReport(
        sequence, closed_at - 60, closed_at, rows, reason, p, effect, effect,
        ("a",) if drifted else (), quality(0.1 if degraded else 0.0, 1e-9 if degraded else 0.6),
    )  # fmt: skip


def alarm_of(windows: list[WindowReport], replica: str = "r1") -> DriftAlarm:
    return DriftAlarm(
        "fraud", "v1", replica, windows[-1], tuple(windows[:-1]), 0.01, 0.1, "s3://b/feedback"
    )


def decision(policy: DriftPolicy, alarm: DriftAlarm, now: float):
    windows = last_windows(observe(alarm, policy), policy, "v1", alarm.window.closed_at)
    return decide(policy, alarm.window.verdict(policy), windows, [], now)


# -- defect 1: min_samples out of reach at low traffic -----------------------------------
def test_low_traffic_windows_closed_by_age_can_still_fire():
    """Windows closed by age with min_window_rows rows each: the default policy must fire."""
    policy = DriftPolicy()
    rows = policy.min_rows
    windows = [
        report(i, NOW - (80 - i) * policy.window_max_age_seconds, degraded=True, rows=rows,
               reason="age")
        for i in range(1, 81)
    ]  # fmt: skip
    last = alarm_of(windows[-policy.n :])
    assert decision(policy, last, NOW).reason == "fire"


def test_a_policy_that_can_never_fire_is_refused_naming_the_field():
    with pytest.raises(PolicyError, match="min_samples 3000 can never be reached"):
        DriftPolicy(min_samples=3000)
    with pytest.raises(PolicyError, match="quality_metric"):
        DriftPolicy.from_dict({"quality_metric": "f1"})
    with pytest.raises(PolicyError, match="min_quality_drop"):
        DriftPolicy.from_json(json.dumps({"min_quality_drop": -0.1}))
    with pytest.raises(PolicyError, match="min_labelled_rows"):
        DriftPolicy(min_labelled_rows=1)
    with pytest.raises(PolicyError, match="fire_on_input_drift"):
        DriftPolicy.from_dict({"fire_on_input_drift": "yes"})
    assert DriftPolicy(k=3, min_window_rows=200, min_samples=600).samples_needed == 600
    assert DriftPolicy().samples_needed == 3 * 100


# -- defect 2: the look-back counted time, not windows -----------------------------------
def test_windows_far_apart_still_count_as_the_last_n():
    """Three degraded windows, an hour apart, with max age 900 s: still 3 of the last 3."""
    policy = DriftPolicy(k=3, n=5)
    windows = [report(i, NOW - (3 - i) * 3600, degraded=True) for i in range(1, 4)]
    assert decision(policy, alarm_of(windows), NOW).reason == "fire"


def test_replicas_pool_and_other_versions_do_not():
    policy = DriftPolicy(k=2, n=3)
    a = alarm_of([report(1, NOW - 7200, degraded=True), report(2, NOW, degraded=True)])
    b = DriftAlarm("fraud", "v2", "r2", report(9, NOW - 10, degraded=True), (), 0.01, 0.1, "")
    pooled = observe(a, policy) + observe(b, policy)
    chosen = last_windows(pooled, policy, "v1", NOW)
    assert [(w.replica, w.sequence) for w in chosen] == [("r1", 1), ("r1", 2)]


# -- defects 3 and 4: one public verdict ----------------------------------------------------
def test_window_verdict_treats_nan_as_no_evidence():
    policy = DriftPolicy()
    v = window_verdict(policy, {"a": math.nan, "b": 1e-12}, {"a": math.nan, "b": math.nan})
    assert v.drifted_features == () and not v.alert
    v = window_verdict(policy, {"a": 1e-12}, {"a": 0.5}, quality(math.nan, math.nan))
    assert v.drifted_features == ("a",) and v.quality_degraded is None


# -- quality first ------------------------------------------------------------------------
def test_input_drift_without_quality_loss_is_an_alert_not_a_run():
    policy = DriftPolicy(k=1, n=1, min_samples=0)
    windows = [report(1, NOW, drifted=True)]
    outcome = decision(policy, alarm_of(windows), NOW)
    assert outcome.reason == "input_drift_only" and not outcome.fire
    assert "input drift in a" in outcome.detail


def test_input_drift_fires_when_labels_are_late_or_the_policy_says_so():
    stale = report(1, NOW, drifted=True)
    stale = WindowReport(**{**stale.__dict__, "quality": None, "labels_stale": True})
    assert decision(DriftPolicy(k=1, n=1), alarm_of([stale]), NOW).reason == "fire"
    eager = DriftPolicy(k=1, n=1, fire_on_input_drift=True)
    assert decision(eager, alarm_of([report(1, NOW, drifted=True)]), NOW).reason == "fire"


def test_quality_loss_fires_without_input_drift():
    policy = DriftPolicy(k=2, n=3)
    windows = [
        report(1, NOW - 20),
        report(2, NOW - 10, degraded=True),
        report(3, NOW, degraded=True),
    ]
    outcome = decision(policy, alarm_of(windows), NOW)
    assert outcome.fire and "quality" in outcome.detail


def test_alarms_round_trip_with_quality_and_old_alarms_still_parse():
    original = alarm_of([report(1, NOW - 10), report(2, NOW, degraded=True, drifted=True)])
    head, body = original.to_http()
    assert DriftAlarm.from_http(head, body) == original
    old = original.to_dict()
    old["schema_version"] = 1
    for w in [old["window"], *old["history"]]:
        del w["quality"], w["labels_stale"]
    parsed = DriftAlarm.from_dict(old)
    assert parsed.window.quality is None and parsed.window.drifted
