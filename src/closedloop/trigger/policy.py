"""The trigger's decision, as a pure function of what it knows.

The sidecars send an alarm only for a drifted window, and each alarm carries the
windows before it (:class:`~closedloop.drift.sidecar.alarm.DriftAlarm`), so the trigger
knows the quiet windows too. For one model version, it pools the windows of every
replica, keeps those that closed within ``n * window_max_age_seconds`` before the
alarm's window (older ones say nothing about now), and takes the last ``n`` of them.

:func:`decide` then answers, checks in this order:

1. ``alarm_not_drifted`` — under the trigger's own policy (p-value **and** effect size,
   re-checked on what the event carries) the alarm's window did not drift;
2. ``too_few_drifted_windows`` — fewer than ``k`` of the last ``n`` windows drifted;
3. ``too_few_samples`` — those drifted windows hold fewer than ``min_samples`` rows;
4. ``run_in_flight`` — the model's last run has not finished;
5. ``cooldown`` — the last run started less than ``cooldown_seconds`` ago;
6. ``daily_cap`` — ``daily_cap`` runs already started this UTC day;
7. otherwise ``fire``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar.alarm import DriftAlarm

Reason = Literal[
    "fire",
    "alarm_not_drifted",
    "too_few_drifted_windows",
    "too_few_samples",
    "run_in_flight",
    "cooldown",
    "daily_cap",
]


@dataclass(frozen=True)
class WindowObservation:
    """One window of one sidecar, judged by the trigger's policy.

    Attributes:
        replica: The sidecar.
        model_version: The version it watched.
        sequence: The window's number at that sidecar.
        closed_at: When it closed (Unix seconds).
        n_rows: Rows it held.
        drifted: Whether it drifted under the trigger's policy.
    """

    replica: str
    model_version: str
    sequence: int
    closed_at: float
    n_rows: int
    drifted: bool


@dataclass(frozen=True)
class RunSummary:
    """What the policy needs of a past run.

    Attributes:
        number: The run's number for its model.
        claimed_at: When the trigger started it (Unix seconds).
        in_flight: Whether it has not finished yet.
    """

    number: int
    claimed_at: float
    in_flight: bool


@dataclass(frozen=True)
class Decision:
    """Fire or not, and why.

    Attributes:
        fire: Whether to start a retraining run.
        reason: ``fire`` or why not (see the module docstring).
        detail: One human sentence with the numbers.
        windows_considered: Windows among the last ``n``.
        windows_drifted: How many of them drifted.
        drifted_rows: Rows in the drifted ones.
    """

    fire: bool
    reason: Reason
    detail: str
    windows_considered: int
    windows_drifted: int
    drifted_rows: int


def observations(alarm: DriftAlarm, policy: DriftPolicy) -> list[WindowObservation]:
    """Judge every window an alarm carries with *policy*."""
    return [
        WindowObservation(
            replica=alarm.replica,
            model_version=alarm.model_version,
            sequence=w.sequence,
            closed_at=w.closed_at,
            n_rows=w.n_rows,
            drifted=bool(policy.drifted_features(w.p_values, w.effect_sizes)),
        )
        for w in alarm.windows()
    ]


def horizon_seconds(policy: DriftPolicy) -> float:
    """How far back windows count: ``n`` windows of the longest age."""
    return policy.n * policy.window_max_age_seconds


def last_windows(
    windows: Iterable[WindowObservation], policy: DriftPolicy, version: str, until: float
) -> list[WindowObservation]:
    """Return the last ``n`` distinct windows of *version* that closed in the horizon before *until*."""
    since = until - horizon_seconds(policy)
    unique = {
        (w.replica, w.sequence): w
        for w in windows
        if w.model_version == version and since < w.closed_at <= until
    }
    ordered = sorted(unique.values(), key=lambda w: (w.closed_at, w.replica, w.sequence))
    return ordered[-policy.n :]


def utc_day(moment: float) -> str:
    """The UTC date of a Unix time, ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%d")


def decide(
    policy: DriftPolicy,
    alarm_drifted: bool,
    windows: Sequence[WindowObservation],
    runs: Sequence[RunSummary],
    now: float,
) -> Decision:
    """Decide whether an alarm starts a retraining run.

    Args:
        policy: The drift policy.
        alarm_drifted: Whether the alarm's own window drifted under *policy*.
        windows: The last ``n`` windows (see :func:`last_windows`).
        runs: The model's most recent runs, newest first (at least ``daily_cap`` of
            them when there are that many).
        now: The current time (Unix seconds).

    Returns:
        The decision.
    """
    drifted = [w for w in windows if w.drifted]
    rows = sum(w.n_rows for w in drifted)

    def verdict(reason: Reason, detail: str) -> Decision:
        return Decision(reason == "fire", reason, detail, len(windows), len(drifted), rows)

    if not alarm_drifted:
        return verdict(
            "alarm_not_drifted",
            f"the alarm's window does not drift under p_value={policy.p_value} and "
            f"effect_size_threshold={policy.effect_size_threshold}",
        )
    if len(drifted) < policy.k:
        return verdict(
            "too_few_drifted_windows",
            f"{len(drifted)} of the last {len(windows)} windows drifted; the policy needs "
            f"{policy.k} of {policy.n}",
        )
    if rows < policy.min_samples:
        return verdict(
            "too_few_samples",
            f"the drifted windows hold {rows} rows; the policy needs {policy.min_samples}",
        )
    last = runs[0] if runs else None
    if last is not None and last.in_flight:
        return verdict("run_in_flight", f"run {last.number} has not finished yet")
    if last is not None and now - last.claimed_at < policy.cooldown_seconds:
        left = policy.cooldown_seconds - (now - last.claimed_at)
        return verdict(
            "cooldown",
            f"run {last.number} started {now - last.claimed_at:.0f} s ago; "
            f"cooldown {policy.cooldown_seconds:.0f} s ({left:.0f} s left)",
        )
    today = utc_day(now)
    started_today = sum(1 for r in runs if utc_day(r.claimed_at) == today)
    if started_today >= policy.daily_cap:
        return verdict(
            "daily_cap",
            f"{started_today} runs started today (UTC); daily_cap is {policy.daily_cap}",
        )
    return verdict(
        "fire",
        f"{len(drifted)} of the last {len(windows)} windows drifted ({rows} rows): "
        "starting a retraining run",
    )
