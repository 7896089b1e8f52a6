"""The retraining recipe: the data decides what old data to keep; the latest rows judge."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.ml.clean import clean_dataset, fitted_schema
from closedloop.ml.gate import GatePolicy
from closedloop.ml.retrain import (
    RECEIVED_AT,
    RetrainRecipe,
    assemble_retraining_rows,
    choose_reference_rows,
    retrain,
)
from closedloop.ml.schema import InputSchema, infer_schema
from closedloop.ml.train import ModelConfig, train_model

# One thread: XGBoost's OpenMP threads collapse when other processes share the cores.
FAST = {"n_estimators": 60, "max_depth": 3, "n_jobs": 1}


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    """The original training data: the old concept."""
    return generate_transactions(6000, seed=11)


@pytest.fixture(scope="module")
def schema(reference: pd.DataFrame) -> InputSchema:
    return infer_schema(reference, DEFAULT_TARGET)


@pytest.fixture(scope="module")
def champion(reference: pd.DataFrame, schema: InputSchema) -> Pipeline:
    return train_model(reference, schema, ModelConfig("xgboost", FAST, seed=0))


@pytest.fixture(scope="module")
def new_concept() -> pd.DataFrame:
    return generate_transactions(3000, seed=12, concept_drift=1.0)


@pytest.fixture(scope="module")
def old_concept() -> pd.DataFrame:
    return generate_transactions(3000, seed=13)


def archived(frame: pd.DataFrame, start: float = 1.8e9) -> pd.DataFrame:
    """*frame* as the feedback archive holds it: provenance columns, arrival times."""
    rows = frame.copy()
    rows["_event_id"] = [f"e{i // 10}" for i in range(len(rows))]
    rows["_event_source"] = "test"
    rows["_event_row"] = np.arange(len(rows)) % 10
    rows[RECEIVED_AT] = pd.to_datetime(start + np.arange(len(rows)), unit="s", utc=True)
    rows["_model_version"] = "v1"
    return rows


def test_a_new_concept_is_detected_and_the_reference_dropped(
    reference: pd.DataFrame, schema: InputSchema, champion: Pipeline, new_concept: pd.DataFrame
) -> None:
    kept, decision = choose_reference_rows(
        reference, new_concept, schema, champion, max_reference_rows=5000
    )
    assert decision.concept_changed, decision.reason
    assert len(kept) == decision.reference_rows_kept == 0
    assert decision.recent_rows == 3000
    assert decision.p_value < 0.01 and decision.effect > 0.25
    assert decision.champion_loss_recent > 2 * decision.champion_loss_reference
    assert decision.reason.startswith("concept changed: ")
    assert "dropped all 6000 reference rows" in decision.reason
    assert json.loads(json.dumps(decision.to_dict())) == decision.to_dict()


def test_the_old_concept_keeps_a_reference_sample(
    reference: pd.DataFrame, schema: InputSchema, champion: Pipeline, old_concept: pd.DataFrame
) -> None:
    recent = old_concept.head(1500)
    kept, decision = choose_reference_rows(
        reference, recent, schema, champion, max_reference_rows=5000, seed=3
    )
    assert not decision.concept_changed, decision.reason
    assert decision.effect < 0.25
    # At most one reference row per recent row, so the recent rows keep their share.
    assert len(kept) == decision.reference_rows_kept == 1500
    # A sample in the reference data's own order (it is time-ordered: oldest first).
    assert kept.index.is_monotonic_increasing and kept.index.is_unique
    pd.testing.assert_frame_equal(kept, reference.loc[kept.index])
    assert decision.reason.startswith("concept unchanged: ")
    again, _ = choose_reference_rows(
        reference, recent, schema, champion, max_reference_rows=5000, seed=3
    )
    assert again.index.equals(kept.index)
    capped, _ = choose_reference_rows(
        reference, recent, schema, champion, max_reference_rows=400, seed=3
    )
    assert len(capped) == 400


def test_a_covariate_shift_alone_is_not_a_new_concept(
    reference: pd.DataFrame, schema: InputSchema, champion: Pipeline
) -> None:
    # More online traffic, larger amounts: the champion's loss rises, its map still holds.
    shifted = generate_transactions(3000, seed=14, covariate_shift=1.0)
    _, decision = choose_reference_rows(
        reference, shifted, schema, champion, max_reference_rows=5000
    )
    assert decision.champion_loss_recent > 1.5 * decision.champion_loss_reference
    assert not decision.concept_changed, decision.reason


def test_without_a_champion_the_reference_sample_is_kept(
    reference: pd.DataFrame, schema: InputSchema, new_concept: pd.DataFrame
) -> None:
    kept, decision = choose_reference_rows(
        reference, new_concept, schema, None, max_reference_rows=2000, reference_per_recent=0.5
    )
    assert len(kept) == 1500  # 0.5 per recent row beats the 2000 cap
    assert not decision.concept_changed
    assert decision.p_value is None and decision.champion_loss_recent is None
    assert "no champion" in decision.reason


def test_nothing_to_test_with_keeps_what_there_is(
    reference: pd.DataFrame, schema: InputSchema, champion: Pipeline, new_concept: pd.DataFrame
) -> None:
    kept, decision = choose_reference_rows(
        reference.iloc[:0], new_concept, schema, champion, max_reference_rows=100
    )
    assert kept.empty and decision.p_value is None
    assert "no reference rows" in decision.reason
    kept, decision = choose_reference_rows(
        reference, new_concept.head(20), schema, champion, max_reference_rows=100
    )
    assert len(kept) == 20 and not decision.concept_changed
    assert "too few scorable rows" in decision.reason


def test_invalid_arguments(
    reference: pd.DataFrame, schema: InputSchema, old_concept: pd.DataFrame
) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        choose_reference_rows(reference, old_concept, schema, None, max_reference_rows=-1)
    with pytest.raises(ValueError, match="alpha"):
        choose_reference_rows(reference, old_concept, schema, None, max_reference_rows=1, alpha=0)
    with pytest.raises(ValueError, match=r"lack columns \['country'\]"):
        assemble_retraining_rows(
            reference,
            old_concept.drop(columns=["country"]),
            schema,
            None,
            max_reference_rows=10,
            seed=0,
        )


def test_assembled_rows_are_in_time_order_without_provenance(
    reference: pd.DataFrame, schema: InputSchema, champion: Pipeline, old_concept: pd.DataFrame
) -> None:
    recent = archived(old_concept.head(1000))
    shuffled = recent.sample(frac=1.0, random_state=0)
    rows, decision = assemble_retraining_rows(
        reference, shuffled, schema, champion, max_reference_rows=300, seed=0
    )
    assert list(rows.columns) == list(reference.columns)
    assert rows.index.equals(pd.RangeIndex(1300))
    assert decision.reference_rows_kept == 300
    # Reference rows first, then the recent rows in the order they arrived.
    tail = rows.iloc[300:].reset_index(drop=True)
    pd.testing.assert_frame_equal(tail, old_concept.head(1000).reset_index(drop=True))
    assert rows["transaction_time"].iloc[:300].is_monotonic_increasing


def test_retrain_recovers_from_a_new_concept(
    reference: pd.DataFrame, schema: InputSchema, champion: Pipeline, new_concept: pd.DataFrame
) -> None:
    recipe = RetrainRecipe(params=FAST, gate=GatePolicy(bootstrap_rounds=200))
    outcome = retrain(reference, new_concept, schema, champion, recipe)
    assert outcome.recency.concept_changed
    assert outcome.recency.reference_rows_kept == 0
    assert outcome.promoted, outcome.gate.reason
    assert outcome.gate.challenger_metric > 0.75 > outcome.gate.champion_metric
    assert outcome.train_rows + outcome.holdout_rows == outcome.cleaning.n_rows_out
    assert outcome.holdout_rows == 600
    # The holdout is the latest slice of the recent rows, in order.
    assert np.array_equal(outcome.y_holdout, new_concept[DEFAULT_TARGET].to_numpy()[-600:])
    assert outcome.challenger_scores.shape == outcome.champion_scores.shape == (600,)
    assert outcome.config == recipe.config
    # The challenger's schema carries the cleaning fitted on its rows, as the pipeline's.
    assert outcome.schema == fitted_schema(schema, outcome.cleaning)
    assert all(spec.fill is not None for spec in outcome.schema.columns)


def test_a_champion_with_a_fitted_cleaning_is_scored_as_it_serves(
    reference: pd.DataFrame, schema: InputSchema, champion: Pipeline, old_concept: pd.DataFrame
) -> None:
    _, record = clean_dataset(reference, schema)
    fitted = fitted_schema(schema, record)
    gappy = old_concept.copy()
    gappy.loc[gappy.index[:300], "amount"] = np.nan
    gappy.loc[gappy.index[300:310], "amount"] = 1e9
    _, decision = choose_reference_rows(reference, gappy, fitted, champion, max_reference_rows=5000)
    assert decision.recent_rows == 3000 and decision.champion_loss_recent is not None
    assert not decision.concept_changed, decision.reason


def test_retrain_on_the_old_concept_keeps_the_reference(
    reference: pd.DataFrame, schema: InputSchema, champion: Pipeline, old_concept: pd.DataFrame
) -> None:
    recipe = RetrainRecipe(params=FAST, gate=GatePolicy(bootstrap_rounds=100))
    outcome = retrain(reference, old_concept, schema, champion, recipe)
    assert not outcome.recency.concept_changed, outcome.recency.reason
    assert outcome.recency.reference_rows_kept == 3000
    assert outcome.train_rows + outcome.holdout_rows == outcome.cleaning.n_rows_out == 6000
    # The holdout is recent rows only: the last 20% of 3000 reference + 3000 recent rows.
    assert np.array_equal(outcome.y_holdout, old_concept[DEFAULT_TARGET].to_numpy()[-1200:])


def test_retrain_without_a_champion_and_with_candidates(
    reference: pd.DataFrame, schema: InputSchema, new_concept: pd.DataFrame
) -> None:
    recipe = RetrainRecipe(
        max_reference_rows=500,
        model_kind="logistic_regression",
        n_candidates=3,
        gate=GatePolicy(min_metric={}, bootstrap_rounds=50),
    )
    outcome = retrain(reference, new_concept.head(1000), schema, None, recipe)
    assert outcome.champion_scores is None
    assert outcome.recency.reference_rows_kept == 500
    assert "no champion" in outcome.gate.reason
    assert outcome.config.kind == "logistic_regression"


def test_recipe_validation_and_serialisation() -> None:
    with pytest.raises(ValueError, match="model kind"):
        RetrainRecipe(model_kind="svm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="test_size"):
        RetrainRecipe(test_size=1.0)
    with pytest.raises(ValueError, match="n_candidates"):
        RetrainRecipe(n_candidates=0)
    data = RetrainRecipe(params={"max_depth": 3}).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["gate"]["min_metric"] == {"roc_auc": 0.7}


def test_a_regression_champion_whose_relation_flipped() -> None:
    rng = np.random.default_rng(0)

    def frame(n: int, slope: float) -> pd.DataFrame:
        x = rng.normal(size=n)
        return pd.DataFrame(
            {"x": x, "z": rng.normal(size=n), "y": slope * x + rng.normal(0, 0.3, n)}
        )

    old = frame(2000, 2.0)
    schema = infer_schema(old, "y")
    assert schema.task == "regression"
    champion = train_model(old, schema, ModelConfig("logistic_regression"))
    _, same = choose_reference_rows(old, frame(600, 2.0), schema, champion, max_reference_rows=900)
    _, flipped = choose_reference_rows(
        old, frame(600, -2.0), schema, champion, max_reference_rows=900
    )
    assert not same.concept_changed and same.reference_rows_kept == 600
    assert flipped.concept_changed and flipped.reference_rows_kept == 0
    assert "absolute error" in flipped.reason


def test_a_multiclass_champion_whose_labels_moved() -> None:
    rng = np.random.default_rng(1)

    def frame(n: int, labels: tuple[str, ...]) -> pd.DataFrame:
        x = rng.normal(size=(n, 2))
        band = np.digitize(x[:, 0] + 0.2 * rng.normal(size=n), [-0.5, 0.5])
        return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": np.asarray(labels)[band]})

    old = frame(2000, ("low", "mid", "high"))
    schema = infer_schema(old, "y")
    assert len(schema.classes) == 3
    champion = train_model(old, schema, ModelConfig("xgboost", FAST))
    recent_old = frame(800, ("low", "mid", "high"))
    recent_new = frame(800, ("high", "mid", "low"))
    _, same = choose_reference_rows(old, recent_old, schema, champion, max_reference_rows=900)
    _, moved = choose_reference_rows(old, recent_new, schema, champion, max_reference_rows=900)
    assert not same.concept_changed, same.reason
    assert moved.concept_changed, moved.reason
