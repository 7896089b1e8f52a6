"""Model quality on labelled traffic: per-row losses, a version's baseline, the degradation test.

* :mod:`closedloop.quality.metrics` — window metrics and per-row losses, from the same
  metric functions the gate uses;
* :mod:`closedloop.quality.baseline` — :class:`QualityBaseline` (a version's holdout
  losses and metrics, saved with the version) and :func:`assess`, which tests one
  window of labelled rows against it and returns a :class:`QualityResult`.

Whether a result counts as *degraded* is the drift policy's call
(:func:`closedloop.drift.verdict.window_verdict`), not this package's.
"""

from closedloop.quality.baseline import (
    QUALITY_BASELINE_FILE,
    QualityBaseline,
    QualityError,
    QualityResult,
    assess,
)
from closedloop.quality.metrics import (
    QUALITY_METRICS,
    default_metric,
    row_losses,
    window_metrics,
)

__all__ = [
    "QUALITY_BASELINE_FILE",
    "QUALITY_METRICS",
    "QualityBaseline",
    "QualityError",
    "QualityResult",
    "assess",
    "default_metric",
    "row_losses",
    "window_metrics",
]
