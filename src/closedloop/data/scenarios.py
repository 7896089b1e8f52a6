"""Time-ordered labelled streams with a known kind of change, for drift backtests.

Each scenario is one frame of :func:`~closedloop.data.generate.generate_transactions`
rows, built from consecutive segments that each get their own generator knobs and
seed, so a backtest can replay it window by window and know what really happened
(:func:`scenario_segments` is that ground truth):

* ``abrupt``: the fraud mechanism switches at once to the drifted pattern;
* ``gradual``: the mechanism blends linearly into the drifted pattern;
* ``recurring``: the mechanism alternates between the two patterns in equal blocks;
* ``covariate``: the inputs move (more online traffic, larger amounts) while the
  fraud mechanism stays the same;
* ``none``: nothing changes (fresh rows of the same distribution).

``covariate`` uses a mild shift (``COVARIATE_SHIFT`` = 0.3: online share 35% → 49%,
amounts x1.16) so that it is a harmless input shift: the drift detector flags it,
while ROC AUC of a model trained before the change falls by about 0.015-0.02 only, and
a model retrained on shifted rows scores within 0.01 of it (nothing for a retrain to
win). At the
generator's full shift (1.0) ROC AUC falls by about 0.06 for every model, the old one
and a retrained one alike, because the mostly-online population is harder to rank;
a backtest would read that as a quality loss that retraining cannot repair.

Segments follow each other in time at about ``rows_per_day`` rows a day, so
``transaction_time`` rises strictly over the whole stream. The default rate is low on
purpose: a window of a few hundred rows then spans several days, and its hours of the
day match the reference's (at a realistic 700 rows a day a 500-row window covers part
of one day, and the drift detector flags ``hour`` in many windows of ``none``).

Segment ``i`` draws with a seed spawned from ``seed`` by
:class:`numpy.random.SeedSequence`, so it depends only on ``seed`` and ``i``: with one
seed and one ``change_at``, the concept scenarios (``abrupt``, ``gradual``,
``recurring``, ``none``) share every feature value and differ only in labels after the
change.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from closedloop.data.generate import generate_transactions

SCENARIOS: tuple[str, ...] = ("abrupt", "gradual", "recurring", "covariate", "none")

GRADUAL_RAMP = 0.3
"""Share of the rows over which ``gradual`` blends from the old concept to the new."""
RECURRING_BLOCK = 0.15
"""Share of the rows in each block of ``recurring`` after the change."""
COVARIATE_SHIFT = 0.3
"""``covariate_shift`` of the generator after the change in ``covariate`` (mild on purpose)."""

ROWS_PER_DAY = 50
"""Default rate of the stream: few enough rows a day that a window of a few hundred rows
spans many days, so its hours of the day match the reference's."""

_GRID_SEGMENTS = 100
_START = "2026-01-01"

_DESCRIPTIONS = {
    "abrupt": "sudden concept drift: the fraud pattern switches at once at the change point",
    "gradual": (
        f"gradual concept drift: the fraud pattern blends into a new one over {GRADUAL_RAMP:.0%} "
        "of the rows from the change point"
    ),
    "recurring": (
        f"recurring concept: the fraud pattern alternates new/old in blocks of "
        f"{RECURRING_BLOCK:.0%} of the rows from the change point"
    ),
    "covariate": (
        "harmless covariate shift: more online traffic and larger amounts from the "
        "change point, fraud mechanism unchanged"
    ),
    "none": "no change: fresh rows of the same distribution throughout",
}


@dataclass(frozen=True)
class Segment:
    """A run of stream rows drawn with one setting of the generator.

    Attributes:
        start: Position of the first row in the stream.
        stop: Position one past the last row.
        covariate_shift: The generator's ``covariate_shift`` for these rows.
        concept_drift: The generator's ``concept_drift`` for these rows.
    """

    start: int
    stop: int
    covariate_shift: float
    concept_drift: float


def _check_name(name: str) -> None:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")


def describe_scenario(name: str) -> str:
    """Describe a scenario in one line, for reports.

    Args:
        name: One of :data:`SCENARIOS`.

    Returns:
        A one-line description.

    Raises:
        ValueError: If ``name`` is not a known scenario.
    """
    _check_name(name)
    return _DESCRIPTIONS[name]


def _knobs(name: str, fraction: float, change_at: float) -> tuple[float, float]:
    """``(covariate_shift, concept_drift)`` at a relative position of the stream."""
    if fraction < change_at or name == "none":
        return 0.0, 0.0
    if name == "covariate":
        return COVARIATE_SHIFT, 0.0
    if name == "abrupt":
        return 0.0, 1.0
    if name == "gradual":
        return 0.0, min(1.0, (fraction - change_at) / GRADUAL_RAMP)
    block = int((fraction - change_at) // RECURRING_BLOCK)
    return 0.0, 1.0 if block % 2 == 0 else 0.0


def _breakpoints(name: str, change_at: float) -> list[float]:
    if name == "none":
        return []
    if name == "gradual":
        return [change_at, change_at + GRADUAL_RAMP]
    if name == "recurring":
        return list(np.arange(change_at, 1.0, RECURRING_BLOCK))
    return [change_at]


def scenario_segments(name: str, rows: int = 40_000, *, change_at: float = 0.4) -> list[Segment]:
    """Lay out the segments of a scenario: the ground truth of its stream.

    The stream is cut on a regular grid of 100 segments (finer than the ``gradual``
    ramp needs) and at the scenario's change points, so each change starts a segment;
    a segment's knobs are those at its middle row.

    Args:
        name: One of :data:`SCENARIOS`.
        rows: Number of rows of the stream.
        change_at: Relative position in [0, 1] of the first change.

    Returns:
        Consecutive, non-empty segments covering ``range(rows)``.

    Raises:
        ValueError: If ``name`` is unknown, ``rows`` is not positive or ``change_at``
            is outside [0, 1].
    """
    _check_name(name)
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    if not 0.0 <= change_at <= 1.0:
        raise ValueError(f"change_at must be in [0, 1], got {change_at!r}")
    fractions = [i / _GRID_SEGMENTS for i in range(_GRID_SEGMENTS + 1)]
    fractions += _breakpoints(name, change_at)
    cuts = sorted({min(rows, max(0, round(f * rows))) for f in fractions})
    segments = []
    for start, stop in pairwise(cuts):
        middle = (start + stop) / 2 / rows
        covariate_shift, concept_drift = _knobs(name, middle, change_at)
        segments.append(Segment(start, stop, covariate_shift, concept_drift))
    return segments


def scenario_stream(
    name: str,
    rows: int = 40_000,
    seed: int = 0,
    *,
    change_at: float = 0.4,
    rows_per_day: int = ROWS_PER_DAY,
) -> pd.DataFrame:
    """Generate one time-ordered labelled stream of a scenario.

    Args:
        name: One of :data:`SCENARIOS` (see the module docstring).
        rows: Number of rows.
        seed: Seed of the stream; equal arguments give equal frames.
        change_at: Relative position in [0, 1] of the first change; ``gradual``
            ramps over the next ``GRADUAL_RAMP`` of the rows and ``recurring``
            alternates in blocks of ``RECURRING_BLOCK`` of the rows from there.
        rows_per_day: Approximate rate of the stream; each segment spans a whole
            number of days (at least one).

    Returns:
        The generator's columns with target ``is_fraud``, ``transaction_time``
        strictly ascending over the whole stream and a fresh ``RangeIndex``.

    Raises:
        ValueError: If ``name`` is unknown, ``rows`` or ``rows_per_day`` is not
            positive or ``change_at`` is outside [0, 1].
    """
    segments = scenario_segments(name, rows, change_at=change_at)
    if rows_per_day < 1:
        raise ValueError(f"rows_per_day must be positive, got {rows_per_day}")
    seeds = np.random.SeedSequence(seed).spawn(len(segments))
    day = pd.Timestamp(_START)
    frames = []
    for segment, child in zip(segments, seeds, strict=True):
        n = segment.stop - segment.start
        days = max(1, round(n / rows_per_day))
        frames.append(
            generate_transactions(
                n,
                seed=int(child.generate_state(1)[0]),
                covariate_shift=segment.covariate_shift,
                concept_drift=segment.concept_drift,
                start=str(day.date()),
                days=days,
            )
        )
        day += pd.Timedelta(days=days)
    stream = pd.concat(frames, ignore_index=True)
    # The generator stamps whole seconds; rows sharing one get a microsecond each, so
    # the order is strict and the hour unchanged.
    times = stream["transaction_time"]
    ties = times.groupby(times).cumcount().to_numpy()
    stream["transaction_time"] = times + pd.to_timedelta(ties, unit="us")
    return stream
