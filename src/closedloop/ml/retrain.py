"""A retraining recipe that recovers after drift: let the data decide what old data to keep.

The retraining pipeline and any in-process caller (benchmarks, backtests) share these
pure functions, so both learn and judge a new model the same way:

1. :func:`choose_reference_rows` tests whether the concept changed, i.e. whether the
   champion's relation between its output and the outcome still holds on the recent
   labelled rows. If it changed, the old reference rows teach the old concept and are
   **all dropped**; if not, a reference sample is kept beside the recent rows (at most
   ``max_reference_rows``, and at most ``reference_per_recent`` per recent row so the
   recent rows keep at least their share). Without a champion there is nothing to test
   and the sample is kept.
2. :func:`assemble_retraining_rows` puts the kept reference rows first and the recent
   rows after them in the order they arrived, so **row order is time order**.
3. :func:`retrain` runs the pipeline's own steps in process: assemble, clean
   (:func:`closedloop.ml.clean.clean_dataset`, whose fitted cleaning goes into the
   challenger's schema as in the pipeline), split with
   ``split_dataset(strategy="ordered")`` so the holdout is the most recent labelled
   slice (which neither the champion, trained earlier, nor the challenger has seen),
   train (:func:`closedloop.ml.train.train_model`), score both models on that holdout
   and :func:`closedloop.ml.gate.gate` them.

The concept test. Per row, the champion's loss is its log loss (classification) or
absolute error (regression). Comparing those losses between recent and reference rows
directly does not work, and this was measured on
:func:`closedloop.data.generate.generate_transactions` with a champion trained on the
old concept: a pure covariate shift (more online traffic, larger amounts: the fraud
rate rises from about 4.5% to 13% with the concept unchanged) raises the mean log loss about
3x, as much as a full concept change does, because rows move to where the outcome is
less certain; and a one-sided Mann-Whitney test on those losses rated the covariate
shift as the *larger* change (probability of superiority 0.75 vs 0.56). What a
changed concept does and a covariate shift does not is break the *map from the
champion's output to the outcome*. So, per group (recent rows, a sample of reference
rows), each row's loss is compared with the loss of the champion's output recalibrated
on that group's own rows: outputs are cut into deciles (of both groups pooled; for
multi-class, deciles of the top probability per predicted class), and the recalibrated
prediction is the decile's smoothed label frequencies (add-0.5) or, for regression, the
output plus the decile's mean residual. The recalibration is cross-fitted (fitted on
one half of the group, applied to the other), so it cannot gain by memorising. A row's
**recalibration gain** is its loss minus its recalibrated loss: about zero on average
where the champion's map holds, large where the concept moved.

The test is one-sided **Welch's t-test** (``scipy.stats.ttest_ind(equal_var=False,
alternative="greater")``) of mean gain on recent rows > mean gain on reference rows:
it compares means, which is what log loss and the effect add up, does not assume
equal variances, and at the hundreds of rows a retraining run needs the means are
close to normal. A rank test is the wrong tool here: with a rare class most rows'
gains sit near zero in both groups and ranks ignore the few large ones that carry the
change (measured: Mann-Whitney on the gains gave p = 1 for a full concept change).
The **effect** is the difference in mean gain divided by the recent rows'
recalibrated loss: the share by which the champion's loss on recent rows exceeds what
its own outputs could achieve there, beyond the same excess on reference rows.
The concept changed when ``p < alpha`` **and** ``effect >= min_effect``.

Measured with default XGBoost and logistic-regression champions (5k reference rows
scored, 300-3000 recent rows): no drift and covariate shift alone give effects of
-0.10 to 0.08; ``concept_drift=0.25`` gives 0.27-0.58 from 1000 recent rows (less, and
not always significant, at 300) and full concept drift 1.0-3.2, hence the default
``min_effect=0.25``; a random-forest champion reached 0.28 without drift, but not at
``p < 0.01``. Limits: reference rows are mostly the champion's own
training rows, and an overfitted champion (e.g. 600 trees of depth 8) is miscalibrated
on any new rows, so it reads as a changed concept; that error costs only data (the
reference rows are dropped), while the opposite one would train on the old concept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ttest_ind
from sklearn.pipeline import Pipeline

from closedloop.ml.clean import (
    CleaningRecord,
    CleanOptions,
    apply_cleaning,
    clean_dataset,
    fitted_schema,
)
from closedloop.ml.gate import GateDecision, GatePolicy, gate
from closedloop.ml.schema import InputSchema, is_null_like
from closedloop.ml.split import split_dataset
from closedloop.ml.train import (
    MODEL_KINDS,
    ModelConfig,
    ModelKind,
    encode_target,
    predict_scores,
    train_model,
)
from closedloop.ml.tune import (
    CandidateResult,
    candidate_configs,
    score_candidate,
    score_metric_name,
    select_best,
)

# The feedback archive's provenance columns (closedloop.drift.sidecar.archive writes them;
# named here because the ML layer does not import the drift layer).
RECEIVED_AT = "_received_at"
MODEL_VERSION = "_model_version"
EVENT_PREFIX = "_event_"

# Reference rows scored for the concept test: enough for a stable mean, cheap to score.
_SCORED_REFERENCE_ROWS = 5000
# Fewer scorable rows than this in either group: no test, the reference sample is kept.
_MIN_ROWS_TO_TEST = 30
_BINS = 10
_PRIOR = 0.5
_EPS = 1e-15
# Scoring only needs types coerced and labels present; keep every row otherwise.
_SCORING_CLEAN = CleanOptions(drop_duplicates=False, clip_outliers=False)


@dataclass(frozen=True)
class RecencyDecision:
    """Whether the concept changed, and how many reference rows were kept.

    Attributes:
        concept_changed: The champion's output-to-outcome map no longer holds on the
            recent rows (see the module docstring); the reference rows were dropped.
        reference_rows_kept: Reference rows kept for training.
        recent_rows: Recent labelled rows given.
        champion_loss_recent: The champion's mean per-row loss (log loss, or absolute
            error for regression) on the recent rows; ``None`` without a champion or
            a test.
        champion_loss_reference: The same on the scored reference sample.
        p_value: One-sided Welch t-test p-value, or ``None`` if no test ran.
        effect: Excess recalibration gain of the recent rows, as a share of their
            recalibrated loss; ``None`` if no test ran.
        reason: One sentence with the numbers.
    """

    concept_changed: bool
    reference_rows_kept: int
    recent_rows: int
    champion_loss_recent: float | None
    champion_loss_reference: float | None
    p_value: float | None
    effect: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {
            "concept_changed": self.concept_changed,
            "reference_rows_kept": self.reference_rows_kept,
            "recent_rows": self.recent_rows,
            "champion_loss_recent": self.champion_loss_recent,
            "champion_loss_reference": self.champion_loss_reference,
            "p_value": self.p_value,
            "effect": self.effect,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class _ConceptTest:
    loss_recent: float
    loss_reference: float
    gain_recent: float
    gain_reference: float
    p_value: float
    effect: float
    n_recent: int
    n_reference: int


def _row_losses(scores: np.ndarray, y: np.ndarray, schema: InputSchema) -> np.ndarray:
    if schema.task == "regression":
        return np.abs(y - scores)
    probabilities = scores if scores.ndim == 2 else np.column_stack([1 - scores, scores])
    picked = probabilities[np.arange(len(y)), y]
    return -np.log(np.clip(picked, _EPS, 1.0))


def _scored(
    rows: pd.DataFrame, schema: InputSchema, champion: Pipeline
) -> tuple[np.ndarray, np.ndarray]:
    """The champion's scores and the encoded targets, on rows as the champion serves them.

    With a fitted cleaning in the champion's schema, the rows get it (as the server
    would apply it); an older schema without one gets types coerced and gaps imputed.
    """
    if schema.has_cleaning:
        prepared = apply_cleaning(rows[~is_null_like(rows[schema.target])], schema)
    else:
        prepared, _ = clean_dataset(rows, schema, _SCORING_CLEAN)
    if prepared.empty:
        return np.empty(0), np.empty(0, dtype=np.int64)
    return predict_scores(champion, prepared, schema), encode_target(
        prepared[schema.target], schema
    )


def _strata(recent: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Deciles of the output over both groups (per predicted class for multi-class)."""

    def key(scores: np.ndarray) -> np.ndarray:
        return scores.max(axis=1) if scores.ndim == 2 else scores

    edges = np.unique(
        np.quantile(
            np.concatenate([key(recent), key(reference)]), np.linspace(0, 1, _BINS + 1)[1:-1]
        )
    )
    width = len(edges) + 1

    def assign(scores: np.ndarray) -> np.ndarray:
        bins = np.searchsorted(edges, key(scores), side="right")
        return scores.argmax(axis=1) * width + bins if scores.ndim == 2 else bins

    n_strata = width * (recent.shape[1] if recent.ndim == 2 else 1)
    return assign(recent), assign(reference), n_strata


def _recalibration_gains(
    losses: np.ndarray,
    scores: np.ndarray,
    y: np.ndarray,
    strata: np.ndarray,
    n_strata: int,
    schema: InputSchema,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per row: loss minus the loss of the output recalibrated per stratum (2-fold cross-fit)."""
    fold = rng.permutation(len(y)) % 2
    recalibrated = np.empty(len(y))
    for held_fold in (0, 1):
        fit, held = fold != held_fold, fold == held_fold
        if schema.task == "regression":
            residual = y - scores
            sums = np.bincount(strata[fit], weights=residual[fit], minlength=n_strata)
            counts = np.bincount(strata[fit], minlength=n_strata)
            shift = np.divide(sums, counts, out=np.zeros(n_strata), where=counts > 0)
            recalibrated[held] = np.abs(residual[held] - shift[strata[held]])
        else:
            n_classes = len(schema.classes or ())
            counts = np.zeros((n_strata, n_classes))
            np.add.at(counts, (strata[fit], y[fit]), 1.0)
            frequencies = (counts + _PRIOR) / (
                counts.sum(axis=1, keepdims=True) + n_classes * _PRIOR
            )
            recalibrated[held] = -np.log(frequencies[strata[held], y[held]])
    return losses - recalibrated


def _concept_test(
    reference: pd.DataFrame,
    recent: pd.DataFrame,
    schema: InputSchema,
    champion: Pipeline,
    rng: np.random.Generator,
) -> _ConceptTest | None:
    if len(reference) > _SCORED_REFERENCE_ROWS:
        positions = np.sort(rng.choice(len(reference), _SCORED_REFERENCE_ROWS, replace=False))
        reference = reference.iloc[positions]
    if len(recent) < _MIN_ROWS_TO_TEST:
        return None
    scores_recent, y_recent = _scored(recent, schema, champion)
    scores_reference, y_reference = _scored(reference, schema, champion)
    if min(len(y_recent), len(y_reference)) < _MIN_ROWS_TO_TEST:
        return None
    loss_recent = _row_losses(scores_recent, y_recent, schema)
    loss_reference = _row_losses(scores_reference, y_reference, schema)
    strata_recent, strata_reference, n_strata = _strata(scores_recent, scores_reference)
    gain_recent = _recalibration_gains(
        loss_recent, scores_recent, y_recent, strata_recent, n_strata, schema, rng
    )
    gain_reference = _recalibration_gains(
        loss_reference, scores_reference, y_reference, strata_reference, n_strata, schema, rng
    )
    p_value = float(
        ttest_ind(gain_recent, gain_reference, equal_var=False, alternative="greater").pvalue
    )
    recalibrated_recent = float(np.mean(loss_recent - gain_recent))
    effect = float(gain_recent.mean() - gain_reference.mean()) / max(recalibrated_recent, _EPS)
    return _ConceptTest(
        loss_recent=float(loss_recent.mean()),
        loss_reference=float(loss_reference.mean()),
        gain_recent=float(gain_recent.mean()),
        gain_reference=float(gain_reference.mean()),
        # Zero variance in both groups (e.g. a perfect champion): no evidence either way.
        p_value=1.0 if math.isnan(p_value) else p_value,
        effect=effect,
        n_recent=len(y_recent),
        n_reference=len(y_reference),
    )


def choose_reference_rows(
    reference: pd.DataFrame,
    recent: pd.DataFrame,
    schema: InputSchema | None,
    champion: Pipeline | None,
    *,
    max_reference_rows: int,
    reference_per_recent: float = 1.0,
    alpha: float = 0.01,
    min_effect: float = 0.25,
    seed: int = 0,
) -> tuple[pd.DataFrame, RecencyDecision]:
    """Decide from the data whether the concept changed, and keep reference rows accordingly.

    The test and its thresholds are in the module docstring. Changed: every reference
    row is dropped (one rule, no down-weighted share: the holdout and the gate judge
    the result on recent rows only, and a sample of the old concept could only pull
    the model back). Unchanged, or no champion to test with, or fewer than 30 scorable
    rows in a group: a seeded sample of at most ``max_reference_rows`` reference rows,
    and at most ``reference_per_recent`` per recent row, is kept.

    Args:
        reference: The original training data (raw rows with the target).
        recent: Recent labelled rows (raw or as the feedback archive holds them).
        schema: The champion's input schema (features, target, classes); may be
            ``None`` only without a champion.
        champion: The fitted served pipeline of the champion, or ``None``.
        max_reference_rows: Most reference rows kept (0: none).
        reference_per_recent: Most reference rows kept per recent row.
        alpha: Significance level of the one-sided test.
        min_effect: Smallest effect that counts as a changed concept.
        seed: Seed of the reference sample, the scored sample and the cross-fit folds.

    Returns:
        The kept reference rows in the reference data's own order (oldest first when it
        is time-ordered, as generated and archived data are), and the decision.

    Raises:
        ValueError: On a negative limit, ``alpha`` outside (0, 1), a champion without a
            schema, or rows the champion cannot score (a missing feature column, a
            label outside its classes).
    """
    if max_reference_rows < 0 or reference_per_recent < 0 or min_effect < 0:
        raise ValueError(
            "max_reference_rows, reference_per_recent and min_effect must be non-negative"
        )
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    cap = min(max_reference_rows, math.floor(reference_per_recent * len(recent)), len(reference))
    positions = np.sort(rng.choice(len(reference), cap, replace=False))
    sample = reference.iloc[positions]
    limits = (
        f"at most {max_reference_rows} and {reference_per_recent:g} per recent row of {len(recent)}"
    )
    if champion is None:
        return sample, RecencyDecision(
            concept_changed=False,
            reference_rows_kept=len(sample),
            recent_rows=len(recent),
            champion_loss_recent=None,
            champion_loss_reference=None,
            p_value=None,
            effect=None,
            reason=(
                f"no champion to test the concept against: kept {len(sample)} of "
                f"{len(reference)} reference rows ({limits})."
            ),
        )
    if schema is None:
        raise ValueError("a champion needs its input schema to be scored")
    if reference.empty:
        return sample, RecencyDecision(
            concept_changed=False,
            reference_rows_kept=0,
            recent_rows=len(recent),
            champion_loss_recent=None,
            champion_loss_reference=None,
            p_value=None,
            effect=None,
            reason="no reference rows to keep or to test the concept against.",
        )
    test = _concept_test(reference, recent, schema, champion, rng)
    if test is None:
        return sample, RecencyDecision(
            concept_changed=False,
            reference_rows_kept=len(sample),
            recent_rows=len(recent),
            champion_loss_recent=None,
            champion_loss_reference=None,
            p_value=None,
            effect=None,
            reason=(
                f"too few scorable rows to test the concept (fewer than {_MIN_ROWS_TO_TEST} "
                f"recent or reference rows): kept {len(sample)} of {len(reference)} "
                f"reference rows ({limits})."
            ),
        )
    changed = test.p_value < alpha and test.effect >= min_effect
    loss = "absolute error" if schema.task == "regression" else "log loss"
    evidence = (
        f"the champion's {loss} is {test.loss_recent:.4f} on {test.n_recent} recent rows vs "
        f"{test.loss_reference:.4f} on {test.n_reference} reference rows, and recalibrating "
        f"its output on the rows themselves gains {test.gain_recent:.4f} per recent row vs "
        f"{test.gain_reference:.4f} per reference row (effect {test.effect:.2f}, "
        f"threshold {min_effect:g}; one-sided Welch p = {test.p_value:.2g}, alpha {alpha:g})"
    )
    if changed:
        kept = reference.iloc[:0]
        reason = f"concept changed: {evidence}; dropped all {len(reference)} reference rows."
    else:
        kept = sample
        reason = (
            f"concept unchanged: {evidence}; kept {len(sample)} of {len(reference)} "
            f"reference rows ({limits})."
        )
    return kept, RecencyDecision(
        concept_changed=changed,
        reference_rows_kept=len(kept),
        recent_rows=len(recent),
        champion_loss_recent=test.loss_recent,
        champion_loss_reference=test.loss_reference,
        p_value=test.p_value,
        effect=test.effect,
        reason=reason,
    )


def _is_provenance(column: object) -> bool:
    name = str(column)
    return name.startswith(EVENT_PREFIX) or name in (RECEIVED_AT, MODEL_VERSION)


def assemble_retraining_rows(
    reference: pd.DataFrame,
    recent: pd.DataFrame,
    schema: InputSchema | None,
    champion: Pipeline | None,
    *,
    max_reference_rows: int,
    seed: int,
    reference_per_recent: float = 1.0,
    alpha: float = 0.01,
    min_effect: float = 0.25,
) -> tuple[pd.DataFrame, RecencyDecision]:
    """Kept reference rows first, then the recent rows in arrival order: row order is time order.

    Recent rows are ordered by the archive's ``_received_at`` (stable, so the rows of
    one event keep their order) when the column is there, and kept as given otherwise.
    The archive's provenance columns (``_event_*``, ``_received_at``,
    ``_model_version``) are dropped; the output has the reference data's columns.

    Args:
        reference: The original training data.
        recent: Recent labelled rows, e.g. from
            :func:`closedloop.drift.sidecar.archive.read_archive`.
        schema: The champion's input schema (``None`` only without a champion).
        champion: The champion's fitted served pipeline, or ``None``.
        max_reference_rows: Most reference rows kept.
        seed: Seed of every random choice.
        reference_per_recent: Most reference rows kept per recent row.
        alpha: Significance level of the concept test.
        min_effect: Smallest effect that counts as a changed concept.

    Returns:
        The rows (fresh ``RangeIndex``) and the decision of :func:`choose_reference_rows`.

    Raises:
        ValueError: If the recent rows lack a column of the reference data, or as
            :func:`choose_reference_rows` does.
    """
    columns = list(reference.columns)
    missing = [c for c in columns if c not in recent.columns]
    if missing:
        raise ValueError(f"recent rows lack columns {missing} of the reference data")
    if RECEIVED_AT in recent.columns:
        order = pd.to_datetime(recent[RECEIVED_AT], utc=True).argsort(kind="stable")
        recent = recent.iloc[np.asarray(order)]
    recent = recent.loc[:, [c for c in columns if not _is_provenance(c)]]
    kept, decision = choose_reference_rows(
        reference,
        recent,
        schema,
        champion,
        max_reference_rows=max_reference_rows,
        reference_per_recent=reference_per_recent,
        alpha=alpha,
        min_effect=min_effect,
        seed=seed,
    )
    rows = pd.concat([kept.loc[:, recent.columns], recent], ignore_index=True)
    return rows, decision


@dataclass(frozen=True)
class RetrainRecipe:
    """Every knob of :func:`retrain`, with the retraining pipeline's defaults.

    Attributes:
        max_reference_rows: Most reference rows kept when the concept is unchanged.
        reference_per_recent: Most reference rows kept per recent row.
        concept_alpha: Significance level of the concept test.
        concept_min_effect: Smallest effect that counts as a changed concept.
        test_size: Share of rows, the latest, held out for the gate.
        model_kind: The estimator kind (see :data:`closedloop.ml.train.MODEL_KINDS`).
        params: Its hyperparameters (the defaults of :mod:`closedloop.ml.train` otherwise).
        engineer: Whether the feature step adds engineered features.
        n_candidates: Configurations tried; 1 trains ``model_kind`` with ``params``,
            more adds random-search draws of the same kind, each scored on a stratified
            validation split of the training rows (as the pipeline's ``train_candidate``
            does), and the best is retrained on all training rows.
        valid_fraction: Share of training rows used to score candidates.
        seed: Seed of sampling, folds, candidates and the estimator.
        clean: The cleaning options (the ``clean_data`` component's defaults).
        gate: The gate policy (the ``gate_model`` component's defaults).
    """

    max_reference_rows: int = 20000
    reference_per_recent: float = 1.0
    concept_alpha: float = 0.01
    concept_min_effect: float = 0.25
    test_size: float = 0.2
    model_kind: ModelKind = "xgboost"
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    engineer: bool = True
    n_candidates: int = 1
    valid_fraction: float = 0.2
    seed: int = 0
    clean: CleanOptions = field(default_factory=CleanOptions)
    gate: GatePolicy = field(default_factory=GatePolicy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))
        if self.model_kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.model_kind!r}; choose from {MODEL_KINDS}")
        if self.n_candidates < 1:
            raise ValueError(f"n_candidates must be at least 1, got {self.n_candidates}")
        for name in ("test_size", "valid_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")

    @property
    def config(self) -> ModelConfig:
        """The configuration trained when ``n_candidates`` is 1."""
        return ModelConfig(self.model_kind, self.params, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {
            "max_reference_rows": self.max_reference_rows,
            "reference_per_recent": self.reference_per_recent,
            "concept_alpha": self.concept_alpha,
            "concept_min_effect": self.concept_min_effect,
            "test_size": self.test_size,
            "model_kind": self.model_kind,
            "params": dict(self.params),
            "engineer": self.engineer,
            "n_candidates": self.n_candidates,
            "valid_fraction": self.valid_fraction,
            "seed": self.seed,
            "clean": {k: getattr(self.clean, k) for k in self.clean.__dataclass_fields__},
            "gate": self.gate.to_dict(),
        }


# eq=False: it holds a fitted pipeline and arrays, which have no useful equality.
@dataclass(frozen=True, eq=False)
class RetrainOutcome:
    """What :func:`retrain` produced.

    Attributes:
        challenger: The fitted served pipeline.
        gate: The gate's decision (``gate.passed``: promote).
        recency: The concept test's decision and the reference rows kept.
        config: The configuration the challenger was trained with.
        cleaning: What cleaning did to the assembled rows.
        schema: The challenger's schema: the given one carrying the cleaning fitted on
            the assembled rows (:func:`closedloop.ml.clean.fitted_schema`), the one to
            serve it with.
        train_rows: Rows the challenger was trained on.
        holdout_rows: Rows of the holdout, the latest ones.
        y_holdout: Holdout labels (class indices) or targets.
        challenger_scores: The challenger's scores on the holdout.
        champion_scores: The champion's scores on the holdout, or ``None``.
    """

    challenger: Pipeline
    gate: GateDecision
    recency: RecencyDecision
    config: ModelConfig
    cleaning: CleaningRecord
    schema: InputSchema
    train_rows: int
    holdout_rows: int
    y_holdout: np.ndarray
    challenger_scores: np.ndarray
    champion_scores: np.ndarray | None

    @property
    def promoted(self) -> bool:
        """Whether the gate passed."""
        return self.gate.passed


def _best_config(train: pd.DataFrame, schema: InputSchema, recipe: RetrainRecipe) -> ModelConfig:
    if recipe.n_candidates == 1:
        return recipe.config
    drawn = candidate_configs(recipe.n_candidates - 1, recipe.seed, kinds=(recipe.model_kind,))
    fit_rows, valid_rows = split_dataset(
        train, schema.target, test_size=recipe.valid_fraction, seed=recipe.seed
    )
    metric = score_metric_name(schema)
    results = []
    for index, config in enumerate([recipe.config, *drawn]):
        pipeline = train_model(fit_rows, schema, config, engineer=recipe.engineer)
        score = score_candidate(pipeline, valid_rows, schema)
        results.append(CandidateResult(config, score, metric, f"candidate-{index}"))
    return select_best(results).config


def retrain(
    reference: pd.DataFrame,
    recent: pd.DataFrame,
    schema: InputSchema,
    champion: Pipeline | None,
    recipe: RetrainRecipe | None = None,
) -> RetrainOutcome:
    """Retrain in process with the retraining pipeline's own functions, and gate the result.

    Assemble (:func:`assemble_retraining_rows`) → ``clean_dataset`` → ``split_dataset``
    with ``strategy="ordered"`` → ``train_model`` → scores of challenger and champion on
    the holdout → ``gate``. The pipeline also validates the assembled rows against the
    champion's schema before cleaning and tunes candidates across model kinds; this
    function skips validation and, with ``n_candidates=1``, tuning, so that a benchmark
    can call it many times.

    Args:
        reference: The original training data.
        recent: Recent labelled rows (raw or in archive form).
        schema: The champion's input schema; the challenger keeps it, with the cleaning
            fitted on these rows (``RetrainOutcome.schema``).
        champion: The champion's fitted served pipeline, or ``None``.
        recipe: The knobs; the defaults of :class:`RetrainRecipe` when ``None``.

    Returns:
        The challenger, the gate's and the concept test's decisions, and the holdout's
        labels and scores.

    Raises:
        ValueError: If the rows cannot be assembled, split or trained on (e.g. too few
            rows, a single class in the training rows).
    """
    recipe = recipe or RetrainRecipe()
    rows, recency = assemble_retraining_rows(
        reference,
        recent,
        schema,
        champion,
        max_reference_rows=recipe.max_reference_rows,
        seed=recipe.seed,
        reference_per_recent=recipe.reference_per_recent,
        alpha=recipe.concept_alpha,
        min_effect=recipe.concept_min_effect,
    )
    cleaned, cleaning = clean_dataset(rows, schema, recipe.clean)
    served = fitted_schema(schema, cleaning)
    train, holdout = split_dataset(
        cleaned, served.target, test_size=recipe.test_size, strategy="ordered"
    )
    config = _best_config(train, served, recipe)
    challenger = train_model(train, served, config, engineer=recipe.engineer)
    y_holdout = encode_target(holdout[served.target], served)
    challenger_scores = predict_scores(challenger, holdout, served)
    champion_scores = None if champion is None else predict_scores(champion, holdout, served)
    decision = gate(recipe.gate, y_holdout, challenger_scores, champion_scores)
    return RetrainOutcome(
        challenger=challenger,
        gate=decision,
        recency=recency,
        config=config,
        cleaning=cleaning,
        schema=served,
        train_rows=len(train),
        holdout_rows=len(holdout),
        y_holdout=y_holdout,
        challenger_scores=challenger_scores,
        champion_scores=champion_scores,
    )
