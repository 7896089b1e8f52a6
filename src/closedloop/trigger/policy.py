"""The trigger's decision, as a pure function of what it knows.

The sidecars send an alarm only for an alerting window, and each alarm carries the
windows before it (:class:`~closedloop.drift.sidecar.alarm.DriftAlarm`), so the trigger
knows the quiet windows too. For one model version, it pools the windows of every
replica and takes the last ``n`` of them by closing time. Windows are **counted**: a
quiet night between two windows does not push either out of "the last n". Each window
is re-judged with :func:`closedloop.drift.verdict.window_verdict` under the trigger's
policy.

:func:`decide` then answers, checks in this order:

1. ``alarm_not_drifted`` — under the trigger's policy the alarm's window shows neither
   input drift nor quality loss;
2. ``input_drift_only`` — the alarm's window drifted in its inputs but its quality held
   (or is unknown while labels are fresh): an alert, audited, no run;
3. ``too_few_drifted_windows`` — fewer than ``k`` of the last ``n`` windows count;
4. ``too_few_samples`` — those windows hold fewer than ``min_samples`` rows;
5. ``run_in_flight`` — the model's last run has not finished;
6. ``cooldown`` — the last run started less than ``cooldown_seconds`` ago;
7. ``daily_cap`` — ``daily_cap`` runs already started this UTC day;
8. otherwise ``fire``.

A run whose gate rejected its model leaves quality degraded, so later windows keep
counting: after the cooldown the trigger fires again, on more data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar.alarm import DriftAlarm
from closedloop.drift.verdict import CountsBecause, WindowVerdict

# Other replicas' windows are read back this far; the alarm's own history always counts.
POOL_LOOKBACK_SECONDS = 7 * 86_400.0

Reason = Literal[
    "fire",
    "alarm_not_drifted",
    "input_drift_only",
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
        drifted: Whether it counts towards "k of the last n" under the trigger's
            policy (quality degraded, or input drift where that may fire).
        because: Why it counts, or ``none``.
        quality_degraded: The quality verdict (``None``: unknown).
        input_drift: Whether its inputs drifted.
    """

    replica: str
    model_version: str
    sequence: int
    closed_at: float
    n_rows: int
    drifted: bool
    because: CountsBecause = "none"
    quality_degraded: bool | None = None
    input_drift: bool = False


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
        windows_drifted: How many of them count.
        drifted_rows: Rows in the counting ones.
    """

    fire: bool
    reason: Reason
    detail: str
    windows_considered: int
    windows_drifted: int
    drifted_rows: int


def observe(alarm: DriftAlarm, policy: DriftPolicy) -> list[WindowObservation]:
    """Judge every window an alarm carries with *policy*."""
    out = []
    for w in alarm.windows():
        verdict = w.verdict(policy)
        out.append(
            WindowObservation(
                replica=alarm.replica,
                model_version=alarm.model_version,
                sequence=w.sequence,
                closed_at=w.closed_at,
                n_rows=w.n_rows,
                drifted=verdict.counts,
                because=verdict.because,
                quality_degraded=verdict.quality_degraded,
                input_drift=verdict.input_drift,
            )
        )
    return out


def last_windows(
    windows: Iterable[WindowObservation], policy: DriftPolicy, version: str, until: float
) -> list[WindowObservation]:
    """Return the last ``n`` distinct windows of *version* that closed by *until*.

    Windows are counted, not timed: however far apart they closed, the last ``n`` are
    the last ``n``.
    """
    unique = {
        (w.replica, w.sequence): w
        for w in windows
        if w.model_version == version and w.closed_at <= until
    }
    ordered = sorted(unique.values(), key=lambda w: (w.closed_at, w.replica, w.sequence))
    return ordered[-policy.n :]


def utc_day(moment: float) -> str:
    """The UTC date of a Unix time, ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%d")


def decide(
    policy: DriftPolicy,
    alarm: WindowVerdict,
    windows: Sequence[WindowObservation],
    runs: Sequence[RunSummary],
    now: float,
) -> Decision:
    """Decide whether an alarm starts a retraining run.

    Args:
        policy: The drift policy.
        alarm: The verdict on the alarm's own window under *policy*.
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

    if not alarm.alert:
        return verdict(
            "alarm_not_drifted",
            "the alarm's window shows neither quality loss (min_quality_drop="
            f"{policy.min_quality_drop}, quality_p_value={policy.quality_p_value}) nor input "
            f"drift (p_value={policy.p_value}, effect_size_threshold="
            f"{policy.effect_size_threshold})",
        )
    if not alarm.counts:
        return verdict(
            "input_drift_only",
            f"{alarm.summary()}: input drift without quality loss is an alert, not a run "
            "(fire_on_input_drift is off and labels are arriving)",
        )
    if len(drifted) < policy.k:
        return verdict(
            "too_few_drifted_windows",
            f"{len(drifted)} of the last {len(windows)} windows count; the policy needs "
            f"{policy.k} of {policy.n}",
        )
    if rows < policy.samples_needed:
        return verdict(
            "too_few_samples",
            f"the counting windows hold {rows} rows; the policy needs {policy.samples_needed}",
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
    causes = sorted({w.because for w in drifted})
    return verdict(
        "fire",
        f"{len(drifted)} of the last {len(windows)} windows count ({rows} rows; "
        f"{', '.join(causes)}); {alarm.summary()}: starting a retraining run",
    )
