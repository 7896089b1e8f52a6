"""The row plan and the compiled pipeline give the fitted pipeline's own numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from closedloop.data.generate import generate_transactions
from closedloop.ml.clean import clean_dataset
from closedloop.ml.compiled import CompiledPipeline
from closedloop.ml.rowplan import REASON_NOT_A_BOOLEAN, RowPlan
from closedloop.ml.schema import ColumnSpec, InputSchema, SchemaError, infer_schema
from closedloop.ml.train import ModelConfig, build_pipeline, feature_frame, train_model

TARGET = "is_fraud"


@pytest.fixture(scope="module")
def trained() -> tuple[object, InputSchema, pd.DataFrame]:
    raw = generate_transactions(3000, seed=3)
    schema = infer_schema(raw, TARGET)
    cleaned, _ = clean_dataset(raw, schema)
    config = ModelConfig(kind="xgboost", params={"n_estimators": 40, "max_depth": 4}, seed=0)
    pipeline = train_model(cleaned, schema, config)
    return pipeline, schema, raw


def _json_rows(frame: pd.DataFrame) -> list[list[object]]:
    """Rows as a JSON client sends them (through a real JSON round trip)."""
    text = frame.to_json(orient="values", date_format="iso")
    return json.loads(text)


def test_compiled_features_and_predictions_equal_the_pipeline(trained) -> None:
    pipeline, schema, _ = trained
    plan = RowPlan(schema)
    compiled = CompiledPipeline.compile(pipeline, True, plan.numeric_names)
    assert compiled is not None and compiled.booster is not None
    rows = generate_transactions(500, seed=11, covariate_shift=0.5)[list(schema.feature_names)]
    checked = plan.check_frame(rows)
    assert not checked.errors
    expected_features = pipeline.named_steps["features"].transform(checked.frame)
    np.testing.assert_array_equal(compiled.transform(checked), expected_features)
    np.testing.assert_array_equal(compiled.predict(checked), pipeline.predict_proba(checked.frame))


def test_one_row_json_path_equals_the_frame_path(trained) -> None:
    pipeline, schema, _ = trained
    plan = RowPlan(schema)
    compiled = CompiledPipeline.compile(pipeline, True, plan.numeric_names)
    rows = generate_transactions(60, seed=5)[list(schema.feature_names)]
    frame_rows = plan.check_frame(rows)
    by_frame = compiled.predict(frame_rows)
    # The one-row transform is the block transform, value for value (numpy's own log1p
    # may differ by one unit in the last place between a short and a long array).
    block = compiled.transform(frame_rows)
    for i, row in enumerate(_json_rows(rows)):
        one = compiled.transform(plan.check_rows([row], list(schema.feature_names)))
        np.testing.assert_array_max_ulp(one[0], block[i], maxulp=1)
    by_json = np.vstack(
        [
            compiled.predict(plan.check_rows([row], list(schema.feature_names)))
            for row in _json_rows(rows)
        ]
    )
    np.testing.assert_allclose(by_json, by_frame, rtol=0, atol=5e-7)


def test_unknown_and_missing_categories_encode_as_the_fitted_encoder(trained) -> None:
    pipeline, schema, _ = trained
    plan = RowPlan(schema)
    compiled = CompiledPipeline.compile(pipeline, True, plan.numeric_names)
    rows = generate_transactions(20, seed=9)[list(schema.feature_names)].copy()
    categorical = schema.names_of("categorical")
    rows.loc[rows.index[:5], categorical[0]] = "never-seen-before"
    checked = plan.check_frame(rows)
    assert checked.unknown_categories[categorical[0]] == 5
    np.testing.assert_array_equal(
        compiled.transform(checked), pipeline.named_steps["features"].transform(checked.frame)
    )


def test_bad_values_are_refused_row_by_row_and_extremes_clipped_to_the_schema() -> None:
    schema = InputSchema(
        columns=(
            ColumnSpec("amount", "numeric", minimum=0.0, maximum=100.0),
            ColumnSpec("online", "boolean"),
        ),
        target="y",
        task="regression",
    )
    plan = RowPlan(schema)
    checked = plan.check_rows([[5.0, 1], [-1e308, 0], [3.0, 1e308], [7.0, True], ["x", 1]])
    assert [(e.row, e.column, e.reason) for e in checked.errors] == [
        (2, "online", REASON_NOT_A_BOOLEAN),
        (4, "amount", "not_a_number"),
    ]
    accepted, positions = checked.accepted()
    assert positions.tolist() == [0, 1, 3]
    assert accepted.numeric.tolist() == [[5.0, 1.0], [0.0, 0.0], [7.0, 1.0]]
    with pytest.raises(
        SchemaError, match=r"row 2: column 'online' \(position 1\) expects booleans"
    ):
        checked.raise_for_errors()


def test_fitted_cleaning_fills_and_clips_as_training_did() -> None:
    schema = InputSchema(
        columns=(
            ColumnSpec(
                "amount",
                "numeric",
                minimum=0.0,
                maximum=1e6,
                fill=12.5,
                clip=(0.0, 500.0, 1.0, 400.0),
            ),
        ),
        target="y",
        task="regression",
    )
    checked = RowPlan(schema).check_rows([[None], [math.inf], ["nan"], [1e6], [-3.0], [20.0]])
    assert not checked.errors
    assert checked.numeric[:, 0].tolist() == [12.5, 12.5, 12.5, 400.0, 1.0, 20.0]


def test_big_and_small_inputs_take_the_same_decisions(trained) -> None:
    _, schema, _ = trained
    plan = RowPlan(schema)
    dirty = generate_transactions(300, seed=4, dirty=0.3)[list(schema.feature_names)]
    dirty = dirty.astype(object).where(dirty.notna(), None)
    values = dirty.to_numpy().tolist()
    big = plan.check_rows(values)
    small = [plan.check_rows([row]) for row in values]
    assert [e.reason for e in big.errors] == [s.errors[0].reason for s in small if s.errors]
    assert [e.row for e in big.errors] == [i for i, s in enumerate(small) if s.errors]
    accepted, positions = big.accepted()
    for k, i in enumerate(positions.tolist()):
        np.testing.assert_array_equal(accepted.numeric[k], small[i].numeric[0])


def test_pipelines_other_than_xgboost_use_their_own_tail(trained) -> None:
    _, schema, raw = trained
    cleaned, _ = clean_dataset(raw, schema)
    pipeline = build_pipeline(schema, ModelConfig(kind="logistic_regression", seed=0))
    from closedloop.ml.train import encode_target

    pipeline.fit(feature_frame(cleaned, schema), encode_target(cleaned[TARGET], schema))
    plan = RowPlan(schema)
    compiled = CompiledPipeline.compile(pipeline, True, plan.numeric_names)
    assert compiled is not None and compiled.booster is None
    checked = plan.check_frame(cleaned[list(schema.feature_names)].head(50))
    np.testing.assert_allclose(
        compiled.predict(checked), pipeline.predict_proba(checked.frame), rtol=0, atol=1e-12
    )
