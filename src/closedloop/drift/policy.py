"""The drift policy: when a window drifts (sidecar) and when drift starts a retraining run (trigger).

Both services read the same ``policy.json`` (the ``closedloop-drift-policy`` ConfigMap on
Kubernetes, mounted at ``/etc/closedloop/policy/policy.json``)::

    {
      "window_size": 1000,            rows per detection window (sidecar)
      "window_max_age_seconds": 900,  a window also closes when this old... (sidecar)
      "min_window_rows": 100,         ...if it holds at least this many rows (optional)
      "p_value": 0.01,                family-wise significance level of a window's tests
      "effect_size_threshold": 0.1,   smallest effect size that counts as drift
      "k": 3, "n": 5,                 fire when k of the last n windows drifted (trigger)
      "min_samples": 3000,            rows the drifted windows must hold together (trigger)
      "cooldown_seconds": 21600,      per model, no new run this long after one started
      "daily_cap": 2                  at most this many runs per model per UTC day
    }

A window drifts when at least one feature is both significant and large: its p-value is
below ``p_value / m`` (Bonferroni over the ``m`` tested features, as alibi-detect's
``TabularDrift`` does) **and** its effect size (the KS statistic for numeric features,
Cramér's V for categorical ones, both on a 0-1 scale) is at least
``effect_size_threshold``. With thousands of rows a KS test flags shifts far too small to
matter; the effect size keeps those from starting retraining runs.
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


class PolicyError(ClosedLoopError, ValueError):
    """A drift policy file is missing, not JSON, or holds a value out of range."""


@dataclass(frozen=True)
class DriftPolicy:
    """When a window drifts and when drift starts a retraining run.

    Attributes:
        window_size: Rows per detection window; a window closes when it holds this many.
        window_max_age_seconds: A window also closes when its first row is this old,
            provided it holds at least ``min_window_rows`` rows.
        p_value: Family-wise significance level of one window's per-feature tests
            (each feature is compared with ``p_value / m``).
        effect_size_threshold: Smallest effect size (0-1) that counts as drift.
        k: Fire when at least ``k`` ...
        n: ... of the last ``n`` windows drifted.
        min_samples: Rows the drifted windows among the last ``n`` must hold together.
        cooldown_seconds: Per model, no new run this long after the last one started.
        daily_cap: At most this many runs per model per UTC day.
        min_window_rows: Fewest rows an age-closed window may hold; defaults to a tenth
            of ``window_size`` (at least 1).
    """

    window_size: int = 1000
    window_max_age_seconds: float = 900.0
    p_value: float = 0.01
    effect_size_threshold: float = 0.1
    k: int = 3
    n: int = 5
    min_samples: int = 3000
    cooldown_seconds: float = 21600.0
    daily_cap: int = 2
    min_window_rows: int | None = None

    def __post_init__(self) -> None:
        _check_int("window_size", self.window_size, 1, _MAX_WINDOW_SIZE)
        _check_float("window_max_age_seconds", self.window_max_age_seconds, low_open=0.0)
        _check_float("p_value", self.p_value, low_open=0.0, high_open=1.0)
        _check_float("effect_size_threshold", self.effect_size_threshold, low=0.0, high=1.0)
        _check_int("n", self.n, 1, _MAX_N)
        _check_int("k", self.k, 1, self.n)
        _check_int("min_samples", self.min_samples, 0, None)
        _check_float("cooldown_seconds", self.cooldown_seconds, low=0.0)
        _check_int("daily_cap", self.daily_cap, 1, None)
        if self.min_window_rows is None:
            object.__setattr__(self, "min_window_rows", max(1, self.window_size // 10))
        else:
            _check_int("min_window_rows", self.min_window_rows, 1, self.window_size)
        object.__setattr__(self, "window_max_age_seconds", float(self.window_max_age_seconds))
        object.__setattr__(self, "p_value", float(self.p_value))
        object.__setattr__(self, "effect_size_threshold", float(self.effect_size_threshold))
        object.__setattr__(self, "cooldown_seconds", float(self.cooldown_seconds))

    @property
    def min_rows(self) -> int:
        """Fewest rows an age-closed window may hold (``min_window_rows`` resolved)."""
        assert self.min_window_rows is not None
        return self.min_window_rows

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
        """Return the policy as JSON-compatible data (``min_window_rows`` resolved)."""
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
