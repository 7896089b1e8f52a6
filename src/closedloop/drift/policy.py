"""The drift policy: how a window is judged, and when judged windows start a retraining run.

Every service reads the same ``policy.json`` (the ``closedloop-drift-policy`` ConfigMap on
Kubernetes, mounted at ``/etc/closedloop/policy/policy.json``); ``closedloop backtest
--policy`` takes the same file::

    {
      "window_size": 1000,            rows per window (sidecar, backtest)
      "window_max_age_seconds": 900,  a window also closes when this old... (sidecar)
      "min_window_rows": 100,         ...if it holds at least this many rows (optional)
      "quality_metric": "auto",       roc_auc | log_loss | accuracy | mae | rmse | auto
      "min_quality_drop": 0.02,       smallest loss of quality that counts, in metric units
      "quality_p_value": 0.01,        significance of the window's loss increase
      "min_labelled_rows": 200,       labelled rows a window needs to be judged on quality
      "p_value": 0.01,                family-wise significance of the input-drift tests
      "effect_size_threshold": 0.1,   smallest input-drift effect size that counts
      "fire_on_input_drift": false,   let input drift alone start runs
      "label_delay_seconds": 86400,   ...or only when no label arrived for this long
      "k": 3, "n": 5,                 fire when k of the last n windows count (trigger)
      "min_samples": 300,             rows the counting windows must hold together
      "cooldown_seconds": 21600,      per model, no new run this long after one started
      "daily_cap": 2                  at most this many runs per model per UTC day
    }

**Quality first.** A window is *degraded* when its labelled rows show a significant
increase in loss over the version's own holdout (one-sided p below ``quality_p_value``)
**and** its metric is worse by at least ``min_quality_drop`` in the metric's own units
(see :mod:`closedloop.quality`). Degraded windows count towards "k of the last n".

**Input drift** is judged as before: a window drifts when at least one feature is both
significant (p below ``p_value / m``, Bonferroni over the ``m`` tested features, as
alibi-detect's ``TabularDrift`` does) and large (effect size, the KS statistic or
Cramér's V on a 0-1 scale, at least ``effect_size_threshold``). Input drift without
quality loss is an alert: it is exported, reported and audited, and counts towards a
run only when ``fire_on_input_drift`` is set, or when labels are late — no label
arrived for ``label_delay_seconds`` — so quality cannot be measured.

:func:`closedloop.drift.verdict.window_verdict` is the one place that turns a window's
test results into this verdict; the sidecar, the trigger, the batch ``check-drift``
step and ``closedloop backtest`` all call it.

Why these defaults: ``min_quality_drop`` 0.02 is two points of ROC AUC or accuracy, a
loss a business notices and a window of a few hundred labelled rows can resolve;
``quality_p_value`` 0.01 keeps a healthy model's noise from firing (with k of n windows
on top, a false run needs several unlucky windows in a row); ``min_labelled_rows`` 200
keeps the loss test's normal approximation honest. k=3 of n=5 rides out one noisy window
but reacts within three windows. ``fire_on_input_drift`` is off because measured on
real drifting data, input drift flagged nearly every window, including windows where
the old model was still the better one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from closedloop.errors import ClosedLoopError

_MAX_WINDOW_SIZE = 1_000_000
_MAX_N = 1000
QUALITY_METRIC_CHOICES: tuple[str, ...] = ("auto", "roc_auc", "log_loss", "accuracy", "mae", "rmse")


class PolicyError(ClosedLoopError, ValueError):
    """A drift policy file is missing, not JSON, or holds a value out of range."""


@dataclass(frozen=True)
class DriftPolicy:
    """How a window is judged, and when judged windows start a retraining run.

    Attributes:
        window_size: Rows per window; a window closes when it holds this many.
        window_max_age_seconds: A window also closes when its first row is this old,
            provided it holds at least ``min_window_rows`` rows.
        p_value: Family-wise significance level of one window's per-feature input
            tests (each feature is compared with ``p_value / m``).
        effect_size_threshold: Smallest input-drift effect size (0-1) that counts.
        k: Fire when at least ``k`` ...
        n: ... of the last ``n`` windows count (degraded, or drifted where input
            drift may fire). Windows are counted, whatever time lies between them.
        min_samples: Rows the counting windows among the last ``n`` must hold
            together; at most ``k * min_window_rows``, so that windows closed by age
            at low traffic can still reach it. Defaults to ``k * min_window_rows``.
        cooldown_seconds: Per model, no new run this long after the last one started.
        daily_cap: At most this many runs per model per UTC day.
        min_window_rows: Fewest rows an age-closed window may hold; defaults to a tenth
            of ``window_size`` (at least 1).
        quality_metric: The metric whose drop counts: ``roc_auc``, ``log_loss``,
            ``accuracy``, ``mae``, ``rmse`` or ``auto`` (ROC AUC for binary
            classification, accuracy for multi-class, MAE for regression).
        min_quality_drop: Smallest drop of ``quality_metric`` (in its units) that counts.
        quality_p_value: Significance level of the one-sided loss test.
        min_labelled_rows: Labelled rows a window needs to be judged on quality.
        fire_on_input_drift: Whether input drift alone counts towards a run.
        label_delay_seconds: Input drift also counts when no label has arrived for
            this long (quality cannot be measured then).
    """

    window_size: int = 1000
    window_max_age_seconds: float = 900.0
    p_value: float = 0.01
    effect_size_threshold: float = 0.1
    k: int = 3
    n: int = 5
    min_samples: int | None = None
    cooldown_seconds: float = 21600.0
    daily_cap: int = 2
    min_window_rows: int | None = None
    quality_metric: str = "auto"
    min_quality_drop: float = 0.02
    quality_p_value: float = 0.01
    min_labelled_rows: int = 200
    fire_on_input_drift: bool = False
    label_delay_seconds: float = 86400.0

    def __post_init__(self) -> None:
        _check_int("window_size", self.window_size, 1, _MAX_WINDOW_SIZE)
        _check_float("window_max_age_seconds", self.window_max_age_seconds, low_open=0.0)
        _check_float("p_value", self.p_value, low_open=0.0, high_open=1.0)
        _check_float("effect_size_threshold", self.effect_size_threshold, low=0.0, high=1.0)
        _check_int("n", self.n, 1, _MAX_N)
        _check_int("k", self.k, 1, self.n)
        _check_float("cooldown_seconds", self.cooldown_seconds, low=0.0)
        _check_int("daily_cap", self.daily_cap, 1, None)
        if self.min_window_rows is None:
            object.__setattr__(self, "min_window_rows", max(1, self.window_size // 10))
        else:
            _check_int("min_window_rows", self.min_window_rows, 1, self.window_size)
        reachable = self.k * self.min_rows
        if self.min_samples is None:
            object.__setattr__(self, "min_samples", reachable)
        else:
            _check_int("min_samples", self.min_samples, 0, None)
            if self.min_samples > reachable:
                raise PolicyError(
                    f"min_samples {self.min_samples} can never be reached: at low traffic "
                    f"windows close by age with min_window_rows={self.min_rows} rows, so "
                    f"k={self.k} windows may hold only {reachable}; lower min_samples to at "
                    f"most {reachable} or raise min_window_rows"
                )
        if not isinstance(self.quality_metric, str) or (
            self.quality_metric not in QUALITY_METRIC_CHOICES
        ):
            raise PolicyError(
                f"quality_metric must be one of {list(QUALITY_METRIC_CHOICES)}, "
                f"got {self.quality_metric!r}"
            )
        _check_float("min_quality_drop", self.min_quality_drop, low=0.0)
        _check_float("quality_p_value", self.quality_p_value, low_open=0.0, high_open=1.0)
        _check_int("min_labelled_rows", self.min_labelled_rows, 2, None)
        if not isinstance(self.fire_on_input_drift, bool):
            raise PolicyError(
                f"fire_on_input_drift must be true or false, got {self.fire_on_input_drift!r}"
            )
        _check_float("label_delay_seconds", self.label_delay_seconds, low_open=0.0)
        object.__setattr__(self, "window_max_age_seconds", float(self.window_max_age_seconds))
        object.__setattr__(self, "p_value", float(self.p_value))
        object.__setattr__(self, "effect_size_threshold", float(self.effect_size_threshold))
        object.__setattr__(self, "cooldown_seconds", float(self.cooldown_seconds))
        object.__setattr__(self, "min_quality_drop", float(self.min_quality_drop))
        object.__setattr__(self, "quality_p_value", float(self.quality_p_value))
        object.__setattr__(self, "label_delay_seconds", float(self.label_delay_seconds))

    @property
    def min_rows(self) -> int:
        """Fewest rows an age-closed window may hold (``min_window_rows`` resolved)."""
        assert self.min_window_rows is not None
        return self.min_window_rows

    @property
    def samples_needed(self) -> int:
        """Rows the counting windows must hold together (``min_samples`` resolved)."""
        assert self.min_samples is not None
        return self.min_samples

    def feature_p_threshold(self, n_features: int) -> float:
        """The per-feature p-value threshold for ``n_features`` tests (Bonferroni)."""
        return self.p_value / max(1, n_features)

    def drifted_features(
        self, p_values: Mapping[str, float], effect_sizes: Mapping[str, float]
    ) -> tuple[str, ...]:
        """Return the features that are both significant and large enough.

        Args:
            p_values: Feature → p-value of its two-sample test.
            effect_sizes: Feature → effect size on a 0-1 scale.

        Returns:
            The drifted features, in the order of ``p_values``; empty if none.
        """
        threshold = self.feature_p_threshold(len(p_values))
        return tuple(
            name
            for name, p in p_values.items()
            if p < threshold and effect_sizes.get(name, 0.0) >= self.effect_size_threshold
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as JSON-compatible data (defaults resolved)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftPolicy:
        """Build a policy from parsed JSON; missing fields take their defaults.

        Raises:
            PolicyError: On an unknown field or a value of the wrong type or range.
        """
        if not isinstance(data, Mapping):
            raise PolicyError(f"a drift policy is a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PolicyError(f"unknown drift policy fields {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text: str | bytes) -> DriftPolicy:
        """Parse a policy from JSON text.

        Raises:
            PolicyError: If the text is not JSON or :meth:`from_dict` rejects it.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"the drift policy is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DriftPolicy:
        """Read a policy file.

        Raises:
            PolicyError: If the file cannot be read or holds an invalid policy.
        """
        location = Path(path)
        try:
            text = location.read_text()
        except OSError as exc:
            raise PolicyError(f"cannot read the drift policy {location}: {exc}") from exc
        try:
            return cls.from_json(text)
        except PolicyError as exc:
            raise PolicyError(f"{location}: {exc}") from exc


def _check_int(name: str, value: Any, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise PolicyError(f"{name} must be {bound}, got {value}")


def _check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: float | None = None,
    high_open: float | None = None,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyError(f"{name} must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise PolicyError(f"{name} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise PolicyError(f"{name} must be at most {high}, got {value}")
    if low_open is not None and value <= low_open:
        raise PolicyError(f"{name} must be greater than {low_open}, got {value}")
    if high_open is not None and value >= high_open:
        raise PolicyError(f"{name} must be less than {high_open}, got {value}")
