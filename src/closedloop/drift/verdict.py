"""The one verdict on a window: input drift, quality loss, and whether it counts towards a run.

Every place that judges a window calls :func:`window_verdict` with the drift policy: the
drift-detector sidecar (live windows), the retrain trigger (re-judging what alarms
carry), the batch ``check-drift`` step and ``closedloop backtest``. So a window judged
drifted or degraded in one place is judged the same everywhere.

The rules (see :mod:`closedloop.drift.policy` for why):

* **input drift**: some feature's p-value is below ``p_value / m`` and its effect size
  at least ``effect_size_threshold``; a NaN p-value or effect (a test without
  information, e.g. a constant column) is no evidence;
* **quality degraded**: with at least ``min_labelled_rows`` labelled rows, the loss test's
  p-value is below ``quality_p_value`` and the metric dropped by at least
  ``min_quality_drop``; fewer rows, or a NaN p-value or drop, is *unknown* (``None``);
* the window **counts** towards "k of the last n" when quality degraded, or when input
  drifted and either ``fire_on_input_drift`` is set or labels are stale (no label for
  ``label_delay_seconds``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from closedloop.drift.policy import DriftPolicy
from closedloop.quality.baseline import QualityResult

CountsBecause = Literal["quality", "input_drift", "input_drift_labels_stale", "none"]


@dataclass(frozen=True)
class WindowVerdict:
    """What the policy says of one window.

    Attributes:
        drifted_features: Features with significant and large input drift.
        quality_degraded: ``True``/``False``, or ``None`` when quality could not be
            judged (no baseline, too few labelled rows, or an undefined metric).
        counts: Whether the window counts towards "k of the last n".
        because: Why it counts (``quality``, ``input_drift``,
            ``input_drift_labels_stale``) or ``none``.
        quality: The quality result it was judged on, if any.
    """

    drifted_features: tuple[str, ...]
    quality_degraded: bool | None
    counts: bool
    because: CountsBecause
    quality: QualityResult | None = None

    @property
    def input_drift(self) -> bool:
        """Whether the inputs drifted."""
        return bool(self.drifted_features)

    @property
    def alert(self) -> bool:
        """Whether anything is wrong: input drift or quality loss (counting or not)."""
        return self.input_drift or bool(self.quality_degraded)

    def summary(self) -> str:
        """One human phrase."""
        parts = []
        q = self.quality
        if self.quality_degraded and q is not None:
            parts.append(
                f"quality degraded: {q.metric} {q.baseline_value:.3f} → {q.value:.3f} "
                f"(drop {q.drop:+.3f}, p = {q.p_value:.2g}, {q.n_rows} labelled rows)"
            )
        elif self.quality_degraded:
            parts.append("quality degraded")
        elif self.quality_degraded is False and q is not None:
            parts.append(f"quality held: {q.metric} {q.value:.3f} ({q.n_rows} labelled rows)")
        else:
            parts.append("quality unknown")
        if self.input_drift:
            parts.append(f"input drift in {', '.join(self.drifted_features)}")
        return "; ".join(parts)


def clean_scores(values: Mapping[str, float], missing: float) -> dict[str, float]:
    """Replace NaN (a test without information) with *missing* (1.0 for p-values, 0.0 for effects)."""
    return {k: missing if math.isnan(v) else float(v) for k, v in values.items()}


def drifted_features(
    policy: DriftPolicy, p_values: Mapping[str, float], effect_sizes: Mapping[str, float]
) -> tuple[str, ...]:
    """Features that drifted under *policy*; NaN is no evidence."""
    return policy.drifted_features(clean_scores(p_values, 1.0), clean_scores(effect_sizes, 0.0))


def quality_degraded(policy: DriftPolicy, quality: QualityResult | None) -> bool | None:
    """Whether a window's quality degraded under *policy*; ``None`` when unknown."""
    if quality is None or quality.n_rows < policy.min_labelled_rows:
        return None
    if math.isnan(quality.p_value) or math.isnan(quality.drop):
        return None
    return quality.p_value < policy.quality_p_value and quality.drop >= policy.min_quality_drop


def window_verdict(
    policy: DriftPolicy,
    p_values: Mapping[str, float] | None = None,
    effect_sizes: Mapping[str, float] | None = None,
    quality: QualityResult | None = None,
    labels_stale: bool = False,
) -> WindowVerdict:
    """Judge one window.

    Args:
        policy: The drift policy.
        p_values: Feature → p-value of the input-drift tests (``None``: not tested).
        effect_sizes: Feature → effect size of those tests.
        quality: The window's labelled rows against the version's baseline.
        labels_stale: Whether no label has arrived for ``label_delay_seconds``.

    Returns:
        The verdict.
    """
    drifted = drifted_features(policy, p_values or {}, effect_sizes or {})
    degraded = quality_degraded(policy, quality)
    because: CountsBecause = "none"
    if degraded:
        because = "quality"
    elif drifted and policy.fire_on_input_drift:
        because = "input_drift"
    elif drifted and labels_stale:
        because = "input_drift_labels_stale"
    return WindowVerdict(
        drifted_features=drifted,
        quality_degraded=degraded,
        counts=because != "none",
        because=because,
        quality=quality,
    )
