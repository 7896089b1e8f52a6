"""Replay a time-ordered labelled dataset window by window under three retraining strategies.

:func:`run_backtest` sorts the rows by the time column (or keeps their order), trains
the first model on the first ``initial_rows`` rows, and cuts the rest into windows of
``window_rows`` rows (a shorter tail is left out). Each strategy replays every window:
it scores the window with its current model, records the window's metric, then
decides whether to retrain:

* ``static`` never retrains;
* ``periodic`` retrains after every ``periodic_every``-th window (the clock);
* ``policy`` judges the window as the live loop does and retrains when the trigger
  fires: input drift from a detector fitted (:func:`~closedloop.drift.detector.fit_detector`)
  on the current model's training rows, quality from
  :func:`~closedloop.quality.assess` against the current model's
  :class:`~closedloop.quality.QualityBaseline` (measured on its retraining holdout),
  one :class:`~closedloop.drift.sidecar.alarm.WindowReport` per window re-judged by
  the policy, and :func:`closedloop.trigger.policy.decide` over the current version's
  last ``n`` :class:`~closedloop.trigger.policy.WindowObservation`.

Every retraining goes through :func:`closedloop.ml.retrain.retrain` with the same
recipe (timing is the only difference between the arms): ``reference`` is the current
model's training rows and ``recent`` the labelled rows since the current model was
trained (for ``policy``: since the first counting window of the last ``n``, as the
trigger passes ``drift_started_at``), at least the last labelled window. Only a passed
gate replaces the model; ``retrains`` counts the runs started, ``promotions`` the
passed gates.

**Time.** Window ``i`` (0-based) closes at the synthetic time ``(i + 1) *
window_seconds``, which the trigger's cooldown and daily cap see. When the time column
holds datetimes, ``window_seconds`` is the windows' mean span in that column (the span
from the first to the last windowed row over the number of windows); otherwise one
window lasts ``policy.window_max_age_seconds``.

**Late labels.** With ``label_delay_windows = d``, the labels of window ``i`` arrive at
the close of window ``i + d``: window ``i``'s report carries its own input-drift scores
and the quality of window ``i - d``'s labels (none while ``i < d``); labels count as
stale (``labels_stale``) only while none has arrived yet (before window ``d`` closes)
and the replay has run for ``policy.label_delay_seconds``; a retraining at window ``i``
sees labelled rows up to window ``i - d`` only. The recorded window metric is always the window's own, on its true labels: it is the
backtest's measurement, not something any strategy knows.

A time column that does not hold datetimes (a day number, a row counter) only orders
the rows and is dropped: as a feature it would drift in every window by construction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from closedloop.drift.policy import QUALITY_METRIC_CHOICES, DriftPolicy
from closedloop.drift.sidecar.alarm import WindowReport
from closedloop.drift.verdict import WindowVerdict, drifted_features
from closedloop.errors import ClosedLoopError
from closedloop.ml.schema import InputSchema, infer_schema, parse_datetimes
from closedloop.ml.train import encode_target, predict_scores
from closedloop.quality import QualityBaseline, QualityResult, assess, window_metrics
from closedloop.trigger.policy import RunSummary, WindowObservation, decide, last_windows

if TYPE_CHECKING:
    from closedloop.drift.detector import FittedDetector
    from closedloop.ml.retrain import RetrainRecipe

STRATEGIES: tuple[str, ...] = ("static", "periodic", "policy")
CURVE_EVERY: tuple[int, ...] = (1, 2, 3, 5, 10)
"""Retraining periods (in windows) of the periodic curve."""

_REPLICA = "backtest"


class BacktestError(ClosedLoopError, ValueError):
    """A backtest cannot run: a missing column, too few rows, a bad window size."""


@dataclass(frozen=True)
class BacktestProgress:
    """One replayed window, for progress output.

    Attributes:
        run: The replay: ``static``, ``periodic k=2``, ``policy``.
        window: The window's number (1-based).
        windows: Windows in the replay.
        metric: The reported metric's name.
        value: The window's metric (NaN when undefined).
        event: What happened after it (``""``, ``retrained, promoted``, ...).
    """

    run: str
    window: int
    windows: int
    metric: str
    value: float
    event: str = ""

    def line(self) -> str:
        """One human line."""
        text = f"[{self.run}] window {self.window}/{self.windows} {self.metric} {self.value:.4f}"
        return f"{text}: {self.event}" if self.event else text


@dataclass(frozen=True)
class StrategyResult:
    """How one strategy did, window by window.

    Attributes:
        name: ``static``, ``periodic`` or ``policy``.
        metrics: The window metric of each window (NaN where undefined).
        runs: Windows (0-based) after which a retraining run started.
        promotions_at: Windows after which a challenger passed the gate.
        alarms: ``policy`` only: windows whose verdict alerted (input drift or quality loss).
        counting: ``policy`` only: windows that counted towards "k of the last n".
        reasons: ``policy`` only: the trigger's decision for each window.
        every: ``periodic`` only: the retraining period in windows.
    """

    name: str
    metrics: tuple[float, ...]
    runs: tuple[int, ...] = ()
    promotions_at: tuple[int, ...] = ()
    alarms: tuple[int, ...] = ()
    counting: tuple[int, ...] = ()
    reasons: tuple[str, ...] = ()
    every: int | None = None

    @property
    def retrains(self) -> int:
        """Retraining runs started."""
        return len(self.runs)

    @property
    def promotions(self) -> int:
        """Challengers that passed the gate and replaced the model."""
        return len(self.promotions_at)

    @property
    def mean_metric(self) -> float:
        """Mean of the defined window metrics (NaN if none is)."""
        return _nan_stat(np.nanmean, self.metrics)

    @property
    def min_metric(self) -> float:
        """Worst defined window metric... the smallest one (NaN if none is)."""
        return _nan_stat(np.nanmin, self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible data (NaN as null)."""
        return {
            "retrains": self.retrains,
            "promotions": self.promotions,
            "mean_metric": _json_number(self.mean_metric),
            "min_metric": _json_number(self.min_metric),
            "windows": [_json_number(v) for v in self.metrics],
            "runs": list(self.runs),
            "promotions_at": list(self.promotions_at),
            "alarms": list(self.alarms),
            "counting": list(self.counting),
            "reasons": list(self.reasons),
            "every": self.every,
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> StrategyResult:
        """Parse :meth:`to_dict` output."""
        try:
            return cls(
                name=name,
                metrics=tuple(math.nan if v is None else float(v) for v in data["windows"]),
                runs=tuple(int(v) for v in data.get("runs", ())),
                promotions_at=tuple(int(v) for v in data.get("promotions_at", ())),
                alarms=tuple(int(v) for v in data.get("alarms", ())),
                counting=tuple(int(v) for v in data.get("counting", ())),
                reasons=tuple(str(v) for v in data.get("reasons", ())),
                every=None if data.get("every") is None else int(data["every"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BacktestError(
                f"malformed strategy {name!r} in a backtest result: {exc!r}"
            ) from exc


@dataclass(frozen=True)
class CurvePoint:
    """The periodic strategy at one retraining period.

    Attributes:
        every: Retrain after every ``every``-th window.
        retrains: Retraining runs started.
        promotions: Challengers promoted.
        mean_metric: Mean window metric.
        min_metric: Smallest window metric.
    """

    every: int
    retrains: int
    promotions: int
    mean_metric: float
    min_metric: float

    @classmethod
    def of(cls, run: StrategyResult) -> CurvePoint:
        """Summarise a periodic replay."""
        assert run.every is not None
        return cls(run.every, run.retrains, run.promotions, run.mean_metric, run.min_metric)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible data (NaN as null)."""
        return {
            "every": self.every,
            "retrains": self.retrains,
            "promotions": self.promotions,
            "mean_metric": _json_number(self.mean_metric),
            "min_metric": _json_number(self.min_metric),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurvePoint:
        """Parse :meth:`to_dict` output."""
        try:
            return cls(
                every=int(data["every"]),
                retrains=int(data["retrains"]),
                promotions=int(data.get("promotions", 0)),
                mean_metric=_number_or_nan(data["mean_metric"]),
                min_metric=_number_or_nan(data.get("min_metric")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BacktestError(f"malformed periodic curve point: {exc!r}") from exc


@dataclass(frozen=True)
class BacktestResult:
    """Every strategy's windows, and the periodic curve.

    Attributes:
        metric: The reported window metric.
        window_rows: Rows per window.
        initial_rows: Rows the first model trained on.
        label_delay_windows: Windows a label arrives after its row.
        window_seconds: Synthetic length of one window (see the module docstring).
        clock: ``time_column`` (derived from datetimes) or ``policy``
            (``window_max_age_seconds``).
        strategies: Strategy name → its result, in the order run.
        periodic_curve: The periodic strategy at each period of :data:`CURVE_EVERY`.
    """

    metric: str
    window_rows: int
    initial_rows: int
    label_delay_windows: int
    window_seconds: float
    clock: str
    strategies: Mapping[str, StrategyResult]
    periodic_curve: tuple[CurvePoint, ...] = field(default=())

    @property
    def windows(self) -> int:
        """Windows replayed."""
        return max((len(s.metrics) for s in self.strategies.values()), default=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible data (NaN as null)."""
        return {
            "metric": self.metric,
            "window_rows": self.window_rows,
            "initial_rows": self.initial_rows,
            "label_delay_windows": self.label_delay_windows,
            "window_seconds": self.window_seconds,
            "clock": self.clock,
            "strategies": {name: s.to_dict() for name, s in self.strategies.items()},
            "periodic_curve": [p.to_dict() for p in self.periodic_curve],
        }

    def to_json(self) -> str:
        """Serialize (strict JSON: no NaN)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> BacktestResult:
        """Parse :meth:`to_dict` output.

        Raises:
            BacktestError: If a field is missing or malformed.
        """
        if not isinstance(data, Mapping):
            raise BacktestError(f"a backtest result is a JSON object, got {type(data).__name__}")
        try:
            return cls(
                metric=str(data["metric"]),
                window_rows=int(data["window_rows"]),
                initial_rows=int(data["initial_rows"]),
                label_delay_windows=int(data["label_delay_windows"]),
                window_seconds=float(data["window_seconds"]),
                clock=str(data["clock"]),
                strategies={
                    str(name): StrategyResult.from_dict(str(name), s)
                    for name, s in dict(data["strategies"]).items()
                },
                periodic_curve=tuple(CurvePoint.from_dict(p) for p in data["periodic_curve"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, BacktestError):
                raise
            raise BacktestError(f"malformed backtest result: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> BacktestResult:
        """Parse :meth:`to_json` output.

        Raises:
            BacktestError: If it is not JSON or not a backtest result.
        """
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise BacktestError(f"a backtest result is not valid JSON: {exc}") from exc


def beats_clock(result: BacktestResult) -> dict[str, Any]:
    """Did the policy beat retraining on a clock?

    The clock's curve is the periodic strategy's mean metric against its retrains, with
    ``static`` as its point at 0 retrains (retraining never), interpolated linearly in
    retrains (flat beyond its ends; equal retrain counts averaged).

    Returns:
        ``policy_retrains``, ``policy_mean``, ``clock_at_policy_retrains`` (the curve
        at the policy's retrains), ``beats_clock`` (policy mean at least that),
        ``periodic1_retrains``, ``periodic1_mean`` and ``within_budget`` (policy mean
        at least periodic k=1's minus 0.005, with at most half its retrains); a value
        is ``None`` when its inputs are missing.
    """
    policy = result.strategies.get("policy")
    points: dict[int, list[float]] = {}
    static = result.strategies.get("static")
    if static is not None and not math.isnan(static.mean_metric):
        points.setdefault(0, []).append(static.mean_metric)
    for p in result.periodic_curve:
        if not math.isnan(p.mean_metric):
            points.setdefault(p.retrains, []).append(p.mean_metric)
    first = next((p for p in result.periodic_curve if p.every == 1), None)
    out: dict[str, Any] = {
        "policy_retrains": None if policy is None else policy.retrains,
        "policy_mean": None if policy is None else _json_number(policy.mean_metric),
        "clock_at_policy_retrains": None,
        "beats_clock": None,
        "periodic1_retrains": None if first is None else first.retrains,
        "periodic1_mean": None if first is None else _json_number(first.mean_metric),
        "within_budget": None,
    }
    if policy is None or math.isnan(policy.mean_metric):
        return out
    if result.periodic_curve and points:
        xs = sorted(points)
        ys = [float(np.mean(points[x])) for x in xs]
        clock = float(np.interp(policy.retrains, xs, ys))
        out["clock_at_policy_retrains"] = clock
        out["beats_clock"] = bool(policy.mean_metric >= clock)
    if first is not None and not math.isnan(first.mean_metric):
        out["within_budget"] = bool(
            policy.mean_metric >= first.mean_metric - 0.005
            and policy.retrains <= 0.5 * first.retrains
        )
    return out


@dataclass(frozen=True, eq=False)
class _Model:
    """One trained version inside a replay.

    ``schema``: its served schema, carrying the cleaning fitted when it was trained;
    its windows are scored, and tested for drift, as the server would see them.
    ``labelled_until``: the windows ``[0, labelled_until)`` whose labels existed when it
    was trained; the next periodic retraining takes its recent rows from there.
    """

    version: int
    pipeline: Any
    schema: InputSchema
    training_rows: pd.DataFrame
    baseline: QualityBaseline
    labelled_until: int


@dataclass(frozen=True)
class _Trained:
    """What the backtest needs of one retraining run."""

    pipeline: Any
    schema: InputSchema
    passed: bool
    reason: str
    training_rows: pd.DataFrame
    y_holdout: np.ndarray
    holdout_scores: np.ndarray


def _retrain(
    reference: pd.DataFrame,
    recent: pd.DataFrame,
    schema: InputSchema,
    champion: Any | None,
    recipe: RetrainRecipe,
) -> _Trained:
    """The one call into :func:`closedloop.ml.retrain.retrain` (the retraining pipeline's steps).

    The challenger's *training rows* (the next run's reference, and its drift
    detector's reference) are the rows its run drew on: the reference rows unless the
    concept test found the concept changed (then it dropped them all), then the recent
    rows; the latest ``max_reference_rows`` of them, as the run would keep no more.
    """
    from closedloop.ml.retrain import retrain

    try:
        outcome = retrain(reference, recent, schema, champion, recipe)
    except ValueError as exc:
        if isinstance(exc, ClosedLoopError):
            raise
        raise BacktestError(f"a retraining run failed: {exc}") from exc
    kept = reference.iloc[:0] if outcome.recency.concept_changed else reference
    drawn_on = pd.concat([kept, recent], ignore_index=True)
    return _Trained(
        pipeline=outcome.challenger,
        schema=outcome.schema,
        passed=outcome.gate.passed,
        reason=outcome.gate.reason,
        training_rows=drawn_on.iloc[-max(recipe.max_reference_rows, len(recent)) :],
        y_holdout=np.asarray(outcome.y_holdout),
        holdout_scores=np.asarray(outcome.challenger_scores),
    )


class _Replay:
    """The ordered rows, their windows, and what every replay shares (scores, detectors)."""

    def __init__(
        self,
        frame: pd.DataFrame,
        schema: InputSchema,
        policy: DriftPolicy,
        recipe: RetrainRecipe,
        *,
        initial_rows: int,
        window_rows: int,
        windows: int,
        window_seconds: float,
        label_delay_windows: int,
        metric: str | None,
        progress: Callable[[BacktestProgress], None] | None,
    ) -> None:
        self.frame = frame
        self.schema = schema
        self.policy = policy
        self.recipe = recipe
        self.initial_rows = initial_rows
        self.window_rows = window_rows
        self.windows = windows
        self.window_seconds = window_seconds
        self.delay = label_delay_windows
        self.progress = progress
        self._versions = 0
        self._scores: dict[tuple[int, int], np.ndarray] = {}
        self._labels: dict[int, np.ndarray] = {}
        self._detectors: dict[int, FittedDetector] = {}
        self._served: dict[tuple[int, int], pd.DataFrame] = {}
        # No champion: retrain keeps no reference rows (at most one per recent row of none).
        trained = _retrain(frame.iloc[:0], frame.iloc[:initial_rows], schema, None, recipe)
        if not trained.passed:
            raise BacktestError(
                f"the first model, trained on the first {initial_rows} rows, failed the gate: "
                f"{trained.reason} Give more initial rows, or a recipe with a laxer gate"
            )
        self.initial = self._model(trained, labelled_until=0)
        self.metric = self.initial.baseline.metric_name(metric or policy.quality_metric)
        # Fail now, not in the middle of a replay, if the policy's metric does not fit the task.
        self.initial.baseline.metric_name(policy.quality_metric)

    def _model(self, trained: _Trained, labelled_until: int) -> _Model:
        n_classes = len(self.schema.classes or ()) if self.schema.task == "classification" else 0
        baseline = QualityBaseline.from_holdout(
            self.schema.task, trained.y_holdout, trained.holdout_scores, n_classes=n_classes
        )
        version = self._versions
        self._versions += 1
        return _Model(
            version,
            trained.pipeline,
            trained.schema,
            trained.training_rows,
            baseline,
            labelled_until,
        )

    def window(self, w: int) -> pd.DataFrame:
        start = self.initial_rows + w * self.window_rows
        return self.frame.iloc[start : start + self.window_rows]

    def rows(self, first: int, stop: int) -> pd.DataFrame:
        """Rows of windows ``[first, stop)``."""
        begin = self.initial_rows + first * self.window_rows
        return self.frame.iloc[begin : self.initial_rows + stop * self.window_rows]

    def labels(self, w: int) -> np.ndarray:
        if w not in self._labels:
            try:
                self._labels[w] = encode_target(self.window(w)[self.schema.target], self.schema)
            except ValueError as exc:
                raise BacktestError(
                    f"window {w + 1}: {exc} (classes are read from the first rows)"
                ) from exc
        return self._labels[w]

    def served(self, model: _Model, w: int) -> pd.DataFrame:
        """Window ``w`` as ``model``'s server sees it: with its fitted cleaning applied."""
        from closedloop.ml.clean import apply_cleaning

        key = (model.version, w)
        if key not in self._served:
            self._served[key] = apply_cleaning(self.window(w), model.schema)
        return self._served[key]

    def scores(self, model: _Model, w: int) -> np.ndarray:
        key = (model.version, w)
        if key not in self._scores:
            self._scores[key] = predict_scores(model.pipeline, self.served(model, w), model.schema)
        return self._scores[key]

    def detector(self, model: _Model) -> FittedDetector:
        if model.version not in self._detectors:
            from closedloop.drift.detector import fit_detector
            from closedloop.ml.clean import apply_cleaning

            self._detectors[model.version] = fit_detector(
                apply_cleaning(model.training_rows, model.schema),
                model.schema,
                p_val=self.policy.p_value,
                seed=self.recipe.seed,
            )
        return self._detectors[model.version]

    def window_metric(self, w: int, scores: np.ndarray) -> float:
        return window_metrics(self.schema.task, self.labels(w), scores)[self.metric]

    def labels_stale(self, w: int) -> bool:
        """Whether no label has arrived for ``label_delay_seconds`` when window ``w`` closes.

        Labels arrive steadily, ``d`` windows after their rows, so they are stale only
        while none has arrived yet: before window ``d`` closes, once the replay has run
        for ``label_delay_seconds``.
        """
        return w < self.delay and (w + 1) * self.window_seconds >= self.policy.label_delay_seconds

    def judge(self, model: _Model, w: int) -> WindowVerdict:
        """The policy's verdict on window ``w``, as the trigger re-judges a sidecar's report."""
        window = self.window(w)
        drift = self.detector(model).score(self.served(model, w))
        quality: QualityResult | None = None
        labelled = w - self.delay
        if labelled >= 0:
            quality = assess(
                model.baseline,
                self.labels(labelled),
                self.scores(model, labelled),
                self.policy.quality_metric,
            )
        report = WindowReport(
            sequence=w + 1,
            opened_at=w * self.window_seconds,
            closed_at=(w + 1) * self.window_seconds,
            n_rows=len(window),
            close_reason="size",
            p_values=drift.p_values,
            distances=drift.distances,
            effect_sizes=drift.effect_sizes,
            drifted_features=drifted_features(self.policy, drift.p_values, drift.effect_sizes),
            quality=quality,
            labels_stale=self.labels_stale(w),
        )
        return report.verdict(self.policy)

    def retrain(self, model: _Model, first: int, at: int) -> tuple[_Model, bool] | None:
        """Retrain after window ``at`` on labelled windows from ``first``.

        Returns ``None`` when no window is labelled yet (no run starts), else the model
        to go on with and whether the challenger was promoted.
        """
        stop = at + 1 - self.delay
        if stop <= 0:
            return None
        recent = self.rows(min(first, stop - 1), stop)
        trained = _retrain(model.training_rows, recent, self.schema, model.pipeline, self.recipe)
        if not trained.passed:
            return model, False
        return self._model(trained, labelled_until=stop), True

    def run(self, name: str, label: str, every: int | None = None) -> StrategyResult:
        """Replay every window under one strategy."""
        model = self.initial
        metrics: list[float] = []
        runs: list[int] = []
        promotions: list[int] = []
        alarms: list[int] = []
        counting: list[int] = []
        reasons: list[str] = []
        observations: list[WindowObservation] = []
        summaries: list[RunSummary] = []
        for w in range(self.windows):
            value = self.window_metric(w, self.scores(model, w))
            metrics.append(value)
            now = (w + 1) * self.window_seconds
            first: int | None = None
            event = ""
            if name == "periodic" and every is not None and (w + 1) % every == 0:
                first = model.labelled_until
            elif name == "policy":
                verdict = self.judge(model, w)
                if verdict.alert:
                    alarms.append(w)
                if verdict.counts:
                    counting.append(w)
                observations.append(
                    WindowObservation(
                        replica=_REPLICA,
                        model_version=str(model.version),
                        sequence=w + 1,
                        closed_at=now,
                        n_rows=self.window_rows,
                        drifted=verdict.counts,
                        because=verdict.because,
                        quality_degraded=verdict.quality_degraded,
                        input_drift=verdict.input_drift,
                    )
                )
                last = last_windows(observations, self.policy, str(model.version), now)
                decision = decide(self.policy, verdict, last, summaries, now)
                reasons.append(decision.reason)
                if decision.reason not in ("fire", "alarm_not_drifted"):
                    event = decision.reason.replace("_", " ")
                if decision.fire:
                    started = min(o.sequence - 1 for o in last if o.drifted)
                    first = max(0, started - self.delay)
            if first is not None:
                retrained = self.retrain(model, first, w)
                if retrained is None:
                    event = "no labelled window yet: no run"
                else:
                    runs.append(w)
                    summaries.insert(0, RunSummary(len(runs), now, in_flight=False))
                    model, promoted = retrained
                    if promoted:
                        promotions.append(w)
                    event = "retrained, promoted" if promoted else "retrained, gate rejected"
            if self.progress is not None:
                self.progress(
                    BacktestProgress(label, w + 1, self.windows, self.metric, value, event)
                )
        return StrategyResult(
            name=name,
            metrics=tuple(metrics),
            runs=tuple(runs),
            promotions_at=tuple(promotions),
            alarms=tuple(alarms),
            counting=tuple(counting),
            reasons=tuple(reasons),
            every=every,
        )


def _ordered(frame: pd.DataFrame, time_column: str | None) -> tuple[pd.DataFrame, pd.Series | None]:
    """Sort by the time column; return the frame and its datetimes (``None`` if not datetimes)."""
    if time_column is None:
        return frame.reset_index(drop=True), None
    values = frame[time_column]
    stamps: pd.Series | None = None
    if pd.api.types.is_datetime64_any_dtype(values) or not (
        pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
    ):
        # Naive UTC datetimes, whether given as datetimes (time zone or not) or as text.
        parsed, _ = parse_datetimes(values)
        bad = parsed.isna() & values.notna()
        if bool(bad.any()):
            raise BacktestError(
                f"time column {time_column!r} holds {int(bad.sum())} values that are neither "
                "numbers nor dates"
            )
        stamps = parsed
    if stamps is not None:
        if bool(stamps.isna().any()):
            raise BacktestError(
                f"time column {time_column!r} has {int(stamps.isna().sum())} missing values"
            )
        out = frame.assign(**{time_column: stamps})
        order = np.argsort(stamps.to_numpy(), kind="stable")
        out = out.iloc[order].reset_index(drop=True)
        return out, out[time_column]
    if bool(values.isna().any()):
        raise BacktestError(
            f"time column {time_column!r} has {int(values.isna().sum())} missing values"
        )
    order = np.argsort(values.to_numpy(), kind="stable")
    return frame.iloc[order].drop(columns=[time_column]).reset_index(drop=True), None


def _check_arguments(
    frame: pd.DataFrame,
    target: str,
    time_column: str | None,
    window_rows: int,
    initial_rows: int,
    strategies: Sequence[str],
    periodic_every: int,
    label_delay_windows: int,
    curve_every: Sequence[int],
    metric: str | None,
) -> None:
    if target not in frame.columns:
        raise BacktestError(
            f"target column {target!r} is not in the data (columns: {list(frame.columns)})"
        )
    if time_column is not None and time_column not in frame.columns:
        raise BacktestError(
            f"time column {time_column!r} is not in the data (columns: {list(frame.columns)})"
        )
    if time_column == target:
        raise BacktestError("the time column cannot be the target")
    if window_rows < 1:
        raise BacktestError(f"window_rows must be at least 1, got {window_rows}")
    if initial_rows < 2:
        raise BacktestError(f"initial_rows must be at least 2, got {initial_rows}")
    if periodic_every < 1 or any(k < 1 for k in curve_every):
        raise BacktestError("retraining periods (periodic_every, the curve) must be at least 1")
    if label_delay_windows < 0:
        raise BacktestError(f"label_delay_windows must be at least 0, got {label_delay_windows}")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if metric is not None and metric not in QUALITY_METRIC_CHOICES:
        raise BacktestError(
            f"unknown metric {metric!r}; choose one of {list(QUALITY_METRIC_CHOICES)}"
        )
    if unknown or not strategies:
        raise BacktestError(
            f"strategies must be some of {list(STRATEGIES)}, got {list(strategies)}"
        )


def run_backtest(
    frame: pd.DataFrame,
    target: str,
    policy: DriftPolicy,
    *,
    time_column: str | None = None,
    window_rows: int = 1000,
    initial_rows: int = 5000,
    strategies: Sequence[str] = STRATEGIES,
    periodic_every: int = 1,
    recipe: RetrainRecipe | None = None,
    metric: str | None = None,
    label_delay_windows: int = 0,
    curve_every: Sequence[int] = CURVE_EVERY,
    progress: Callable[[BacktestProgress], None] | None = None,
) -> BacktestResult:
    """Replay a labelled dataset window by window under each strategy (see the module docstring).

    Args:
        frame: The labelled rows (features and target; rows with no label are dropped).
        target: The label column.
        policy: The drift policy (as ``policy.json``): the ``policy`` strategy's
            judgement and trigger, and the default metric (``quality_metric``).
        time_column: Orders the rows; ``None`` keeps the frame's order. Datetimes set
            the synthetic clock; anything else only orders and is dropped.
        window_rows: Rows per window.
        initial_rows: Rows the first model trains on (through the same retraining,
            without a champion).
        strategies: Which of :data:`STRATEGIES` to run.
        periodic_every: The ``periodic`` strategy retrains after every this many windows.
        recipe: The retraining recipe of every arm (default: ``RetrainRecipe()``).
        metric: The reported window metric (default: the policy's ``quality_metric``,
            ``auto`` resolved for the task).
        label_delay_windows: Windows after which a window's labels arrive.
        curve_every: Periods of the periodic curve (empty: no curve); the one equal to
            ``periodic_every`` reuses the ``periodic`` replay.
        progress: Called after every replayed window.

    Returns:
        The result.

    Raises:
        BacktestError: On a missing column, a bad argument or too few rows, or when a
            retraining run fails.
    """
    _check_arguments(
        frame,
        target,
        time_column,
        window_rows,
        initial_rows,
        strategies,
        periodic_every,
        label_delay_windows,
        curve_every,
        metric,
    )
    labelled = frame[frame[target].notna()]
    ordered, stamps = _ordered(labelled, time_column)
    windows = (len(ordered) - initial_rows) // window_rows
    if windows < 1:
        raise BacktestError(
            f"{len(ordered)} labelled rows hold no window: a backtest needs initial_rows "
            f"({initial_rows}) plus at least one window of window_rows ({window_rows})"
        )
    window_seconds, clock = policy.window_max_age_seconds, "policy"
    if stamps is not None:
        first = stamps.iloc[initial_rows]
        last = stamps.iloc[initial_rows + windows * window_rows - 1]
        span = (last - first).total_seconds() / windows
        if span > 0:
            window_seconds, clock = span, "time_column"
    try:
        schema = infer_schema(ordered.iloc[:initial_rows], target)
    except ValueError as exc:
        raise BacktestError(
            f"cannot read a schema from the first {initial_rows} rows: {exc}"
        ) from exc
    if recipe is None:
        from closedloop.ml.retrain import RetrainRecipe

        recipe = RetrainRecipe()
    replay = _Replay(
        ordered,
        schema,
        policy,
        recipe,
        initial_rows=initial_rows,
        window_rows=window_rows,
        windows=windows,
        window_seconds=window_seconds,
        label_delay_windows=label_delay_windows,
        metric=metric,
        progress=progress,
    )
    results: dict[str, StrategyResult] = {}
    for name in STRATEGIES:
        if name not in strategies:
            continue
        if name == "periodic":
            results[name] = replay.run(name, f"periodic k={periodic_every}", periodic_every)
        else:
            results[name] = replay.run(name, name)
    curve = []
    for every in dict.fromkeys(curve_every):
        periodic = results.get("periodic")
        if periodic is None or periodic.every != every:
            periodic = replay.run("periodic", f"periodic k={every}", every)
        curve.append(CurvePoint.of(periodic))
    return BacktestResult(
        metric=replay.metric,
        window_rows=window_rows,
        initial_rows=initial_rows,
        label_delay_windows=label_delay_windows,
        window_seconds=window_seconds,
        clock=clock,
        strategies=results,
        periodic_curve=tuple(curve),
    )


def _nan_stat(stat: Callable[..., Any], values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 or bool(np.all(np.isnan(array))):
        return math.nan
    return float(stat(array))


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _number_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)
