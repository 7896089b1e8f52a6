"""The deployment gate: does a challenger replace the champion?

A challenger **passes** when, on the same holdout rows:

1. it meets every absolute threshold in ``min_metric`` (a floor for metrics where
   higher is better, a ceiling for ``log_loss``, ``rmse`` and ``mae``), except a
   threshold the champion misses too on these rows: that one becomes an **alert**
   (recorded in :attr:`GateDecision.alerts`), not a blocker, because rejecting the
   challenger would only keep serving a champion that misses the bar as well.
   Without a champion, or when the champion meets the threshold, a miss still
   rejects; and
2. either there is no champion and ``first_model="accept_if_thresholds"``, or
3. its primary metric beats the champion's by **more than** ``min_improvement``
   (in the metric's better direction), and
4. that improvement is significant: a paired bootstrap resamples holdout rows
   ``bootstrap_rounds`` times, recomputes both models' metric on each resample and
   takes the share of resamples whose improvement is ``<= min_improvement`` as the
   one-sided p-value (with the usual +1 correction); it must be below ``alpha``.

The checks run in this order and the first failure is the reason. A challenger equal
to the champion therefore never passes: replacing a model needs evidence, also when
the champion has fallen below a threshold (steps 3 and 4 still apply).

Scores: the positive-class probability for binary classification (1-D), class
probabilities for multi-class (2-D), predictions for regression; ``y_true`` holds
class indices or target values (see :func:`closedloop.ml.train.encode_target`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn import metrics as skm

FirstModelPolicy = Literal["accept_if_thresholds", "reject"]
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "rmse", "mae"})


def _hard(scores: np.ndarray) -> np.ndarray:
    return scores.argmax(axis=1) if scores.ndim == 2 else (scores >= 0.5).astype(int)


def _average(scores: np.ndarray) -> str:
    return "macro" if scores.ndim == 2 else "binary"


def _roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    if s.ndim == 2:
        return float(skm.roc_auc_score(y, s, multi_class="ovr", labels=np.arange(s.shape[1])))
    return float(skm.roc_auc_score(y, s))


def _log_loss(y: np.ndarray, s: np.ndarray) -> float:
    # Plain numpy: the bootstrap calls this hundreds of times (same clipping as sklearn).
    probabilities = s if s.ndim == 2 else np.column_stack([1 - s, s])
    picked = probabilities[np.arange(len(y)), y.astype(int)]
    eps = np.finfo(probabilities.dtype).eps
    return float(-np.mean(np.log(np.clip(picked, eps, 1 - eps))))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "roc_auc": _roc_auc,
    "average_precision": lambda y, s: float(skm.average_precision_score(y, s)),
    "accuracy": lambda y, s: float(np.mean(_hard(s) == y)),
    "f1": lambda y, s: float(skm.f1_score(y, _hard(s), average=_average(s), zero_division=0)),
    "precision": lambda y, s: float(
        skm.precision_score(y, _hard(s), average=_average(s), zero_division=0)
    ),
    "recall": lambda y, s: float(
        skm.recall_score(y, _hard(s), average=_average(s), zero_division=0)
    ),
    "log_loss": _log_loss,
    "rmse": lambda y, s: float(np.sqrt(np.mean((y - s) ** 2))),
    "mae": lambda y, s: float(np.mean(np.abs(y - s))),
    "r2": lambda y, s: float(1.0 - np.sum((y - s) ** 2) / np.sum((y - np.mean(y)) ** 2)),
}


def _oriented(metric: str, value: float) -> float:
    """The value with "higher is better" for every metric."""
    return -value if metric in LOWER_IS_BETTER else value


@dataclass(frozen=True)
class GatePolicy:
    """When a challenger may replace the champion (see the module docstring).

    Attributes:
        min_metric: Absolute thresholds, e.g. ``{"roc_auc": 0.7}``; floors, or
            ceilings for ``log_loss``/``rmse``/``mae``.
        primary_metric: The metric compared with the champion.
        min_improvement: Improvement the challenger must exceed.
        bootstrap_rounds: Paired bootstrap resamples.
        alpha: Significance level of the one-sided bootstrap test.
        first_model: What to do without a champion: ``accept_if_thresholds`` or
            ``reject``.
        seed: Bootstrap seed.
    """

    min_metric: Mapping[str, float] = field(default_factory=lambda: {"roc_auc": 0.7}, hash=False)
    primary_metric: str = "roc_auc"
    min_improvement: float = 0.0
    bootstrap_rounds: int = 500
    alpha: float = 0.05
    first_model: FirstModelPolicy = "accept_if_thresholds"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_metric", dict(self.min_metric))
        unknown = sorted({self.primary_metric, *self.min_metric} - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {sorted(METRICS)}")
        if self.bootstrap_rounds < 1:
            raise ValueError("bootstrap_rounds must be at least 1")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.first_model not in ("accept_if_thresholds", "reject"):
            raise ValueError(f"unknown first_model policy {self.first_model!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {
            "min_metric": dict(self.min_metric),
            "primary_metric": self.primary_metric,
            "min_improvement": self.min_improvement,
            "bootstrap_rounds": self.bootstrap_rounds,
            "alpha": self.alpha,
            "first_model": self.first_model,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GatePolicy:
        """Build a policy from :meth:`to_dict` output (missing keys take defaults)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict.

    Attributes:
        passed: Whether the challenger may be promoted.
        reason: One sentence saying why.
        primary_metric: The compared metric.
        challenger_metric: The challenger's primary metric on the holdout.
        champion_metric: The champion's, or ``None`` without a champion.
        improvement: Challenger minus champion in the better direction, or ``None``.
        p_value: One-sided paired-bootstrap p-value, or ``None`` if not computed.
        challenger_metrics: Every metric the policy looked at, for the challenger.
        alerts: Thresholds the challenger missed but did not block on, because the
            champion misses them too on the same rows (one sentence each).
    """

    passed: bool
    reason: str
    primary_metric: str
    challenger_metric: float
    champion_metric: float | None = None
    improvement: float | None = None
    p_value: float | None = None
    challenger_metrics: Mapping[str, float] = field(default_factory=dict)
    alerts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {
            "passed": self.passed,
            "reason": self.reason,
            "primary_metric": self.primary_metric,
            "challenger_metric": self.challenger_metric,
            "champion_metric": self.champion_metric,
            "improvement": self.improvement,
            "p_value": self.p_value,
            "challenger_metrics": dict(self.challenger_metrics),
            "alerts": list(self.alerts),
        }

    def to_markdown(self) -> str:
        """A short Markdown report."""

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        lines = [
            f"**Gate: {'PASSED' if self.passed else 'REJECTED'}** — {self.reason}",
            "",
            "| | value |",
            "|---|---:|",
            f"| challenger {self.primary_metric} | {fmt(self.challenger_metric)} |",
            f"| champion {self.primary_metric} | {fmt(self.champion_metric)} |",
            f"| improvement | {fmt(self.improvement)} |",
            f"| p-value (paired bootstrap) | {fmt(self.p_value)} |",
        ]
        lines += [
            f"| challenger {name} | {value:.4f} |"
            for name, value in self.challenger_metrics.items()
            if name != self.primary_metric
        ]
        if self.alerts:
            lines += ["", "**Alerts**", ""] + [f"- {alert}" for alert in self.alerts]
        return "\n".join(lines) + "\n"


def _weighted_auc(groups: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> float:
    """ROC AUC with row weights; ``groups`` ranks the distinct scores (ties share one)."""
    size = int(groups.max()) + 1
    pos = np.bincount(groups, weights=weights * positive, minlength=size)
    neg = np.bincount(groups, weights=weights * ~positive, minlength=size)
    total = pos.sum() * neg.sum()
    if total == 0:
        raise ValueError("a single class: ROC AUC is undefined")
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)) / total)


def _misses(name: str, value: float, limit: float) -> bool:
    """Whether *value* fails the threshold *limit* of metric *name* (NaN always fails)."""
    return math.isnan(value) or _oriented(name, value) < _oriented(name, limit)


def _paired_bootstrap_p_value(
    metric: Callable[[np.ndarray, np.ndarray], float],
    name: str,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    policy: GatePolicy,
) -> float:
    rng = np.random.default_rng(policy.seed)
    n = len(y)
    fast_auc = name == "roc_auc" and challenger.ndim == 1
    if fast_auc:
        # A resample is a vector of row counts; AUC with those weights needs no re-sorting.
        positive = y == 1
        challenger_groups = np.unique(challenger, return_inverse=True)[1]
        champion_groups = np.unique(champion, return_inverse=True)[1]
    not_better = 0
    valid = 0
    for _ in range(policy.bootstrap_rounds):
        rows = rng.integers(0, n, n)
        try:
            if fast_auc:
                weights = np.bincount(rows, minlength=n).astype(np.float64)
                diff = _weighted_auc(challenger_groups, positive, weights) - _weighted_auc(
                    champion_groups, positive, weights
                )
            else:
                diff = _oriented(name, metric(y[rows], challenger[rows])) - _oriented(
                    name, metric(y[rows], champion[rows])
                )
        except ValueError:
            # A resample with a single class has no AUC; it says nothing either way.
            continue
        valid += 1
        not_better += bool(diff <= policy.min_improvement)
    if valid == 0:
        return 1.0
    return (not_better + 1) / (valid + 1)


def gate(
    policy: GatePolicy,
    y_true: np.ndarray,
    challenger_scores: np.ndarray,
    champion_scores: np.ndarray | None,
) -> GateDecision:
    """Decide whether the challenger passes (see the module docstring).

    Args:
        policy: The gate policy.
        y_true: Holdout labels (class indices) or targets.
        challenger_scores: The challenger's scores on the holdout.
        champion_scores: The champion's scores on the same rows, or ``None``.

    Returns:
        The decision.

    Raises:
        ValueError: If lengths differ or the holdout is empty.
    """
    y = np.asarray(y_true)
    challenger = np.asarray(challenger_scores, dtype=np.float64)
    champion = None if champion_scores is None else np.asarray(champion_scores, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("empty holdout")
    if len(challenger) != len(y) or (champion is not None and len(champion) != len(y)):
        raise ValueError("y_true and scores must have the same number of rows")

    name = policy.primary_metric
    metric = METRICS[name]
    values = {m: METRICS[m](y, challenger) for m in dict.fromkeys([name, *policy.min_metric])}
    alerts: list[str] = []

    def decide(
        passed: bool,
        reason: str,
        champion_metric: float | None = None,
        improvement: float | None = None,
        p_value: float | None = None,
    ) -> GateDecision:
        return GateDecision(
            passed=passed,
            reason=reason,
            primary_metric=name,
            challenger_metric=values[name],
            champion_metric=champion_metric,
            improvement=improvement,
            p_value=p_value,
            challenger_metrics=values,
            alerts=tuple(alerts),
        )

    for metric_name, limit in policy.min_metric.items():
        value = values[metric_name]
        if not _misses(metric_name, value, limit):
            continue
        relation = (
            "above the allowed maximum"
            if metric_name in LOWER_IS_BETTER
            else "below the required minimum"
        )
        missed = f"challenger {metric_name} {value:.4f} is {relation} {limit:.4f}"
        champion_value = None if champion is None else METRICS[metric_name](y, champion)
        if champion_value is None:
            return decide(False, f"{missed}.")
        if not _misses(metric_name, champion_value, limit):
            return decide(False, f"{missed}, which the champion meets ({champion_value:.4f}).")
        alerts.append(
            f"{missed}, but the champion misses it too on the same rows "
            f"({champion_value:.4f}): an alert, not a blocker."
        )
    if champion is None:
        if policy.first_model == "reject":
            return decide(False, "there is no champion and the policy rejects a first model.")
        return decide(True, "there is no champion and the challenger meets every threshold.")

    champion_value = metric(y, champion)
    improvement = _oriented(name, values[name]) - _oriented(name, champion_value)
    if not improvement > policy.min_improvement:
        return decide(
            False,
            f"challenger {name} {values[name]:.4f} vs champion {champion_value:.4f}: "
            f"improvement {improvement:+.4f} does not exceed {policy.min_improvement:.4f}.",
            champion_value,
            improvement,
        )
    p_value = _paired_bootstrap_p_value(metric, name, y, challenger, champion, policy)
    if p_value >= policy.alpha:
        return decide(
            False,
            f"improvement {improvement:+.4f} in {name} is not significant "
            f"(bootstrap p = {p_value:.3f} >= alpha {policy.alpha}).",
            champion_value,
            improvement,
            p_value,
        )
    return decide(
        True,
        f"challenger improves {name} by {improvement:+.4f} over the champion "
        f"(bootstrap p = {p_value:.3f} < alpha {policy.alpha}).",
        champion_value,
        improvement,
        p_value,
    )
