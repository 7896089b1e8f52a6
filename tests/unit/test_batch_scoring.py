"""Batch scoring refuses row by row what the server refuses and scores the rest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from closedloop.data.generate import generate_transactions
from closedloop.ml.batch import REFUSED_COLUMN, predictions_frame, score_batch
from closedloop.ml.clean import clean_dataset
from closedloop.ml.compiled import CompiledPipeline
from closedloop.ml.rowplan import REASON_MISSING, RowPlan
from closedloop.ml.schema import SchemaError, infer_schema
from closedloop.ml.train import ModelConfig, predict_scores, train_model

TARGET = "is_fraud"


@pytest.fixture(scope="module")
def model():
    raw = generate_transactions(3000, seed=21)
    schema = infer_schema(raw, TARGET)
    cleaned, _ = clean_dataset(raw, schema)
    config = ModelConfig(kind="xgboost", params={"n_estimators": 30, "max_depth": 3}, seed=0)
    return train_model(cleaned, schema, config), schema


def test_one_bad_row_does_not_sink_the_batch(model) -> None:
    pipeline, schema = model
    batch = generate_transactions(300, seed=8)[list(schema.feature_names)].copy()
    # A schema without a fitted fill and a non-nullable column refuses missing values.
    strict = schema.with_cleaning({}, {}) if schema.has_cleaning else schema
    column = next(s.name for s in strict.columns if s.kind == "numeric" and not s.nullable)
    batch[column] = batch[column].astype(object)
    batch.loc[[21, 42, 59], column] = None
    scored = score_batch(batch, pipeline, strict)
    assert [(e.row, e.column, e.reason) for e in scored.refused] == [
        (21, column, REASON_MISSING),
        (42, column, REASON_MISSING),
        (59, column, REASON_MISSING),
    ]
    assert len(scored.positions) == 297
    good = batch.drop(index=[21, 42, 59])
    expected = predict_scores(pipeline, good.astype({column: float}), strict)
    np.testing.assert_allclose(scored.scores, expected, rtol=0, atol=1e-12)
    out = predictions_frame(batch, scored, strict, "v1")
    assert out.loc[21, REFUSED_COLUMN].startswith("row 21: column")
    assert out.loc[21, "prediction"] is None and np.isnan(out.loc[21, "score"])
    assert (out.drop(index=[21, 42, 59])[REFUSED_COLUMN] == "").all()


def test_a_missing_column_stops_the_batch(model) -> None:
    pipeline, schema = model
    batch = generate_transactions(10, seed=8)[list(schema.feature_names)]
    with pytest.raises(SchemaError, match="missing columns"):
        score_batch(batch.drop(columns=[schema.feature_names[0]]), pipeline, schema)


def test_batch_and_online_scores_agree_on_300_clean_rows(model) -> None:
    pipeline, schema = model
    rows = generate_transactions(300, seed=13)[list(schema.feature_names)]
    batch = score_batch(rows, pipeline, schema).scores
    plan = RowPlan(schema)
    compiled = CompiledPipeline.compile(pipeline, True, plan.numeric_names)
    names = list(schema.feature_names)
    online = []
    for row in json.loads(rows.to_json(orient="values", date_format="iso")):
        # What the server does with one JSON row: the same plan and compiled pipeline.
        checked = plan.check_rows([row], names)
        checked.raise_for_errors()
        online.append(compiled.predict(checked)[0, 1])
    assert np.max(np.abs(np.asarray(online) - batch)) <= 5e-7


def test_score_batch_equals_the_fitted_pipeline_on_many_rows(model) -> None:
    pipeline, schema = model
    rows = generate_transactions(5000, seed=17, covariate_shift=1.0)[list(schema.feature_names)]
    rows = pd.concat([rows, rows.head(3)], ignore_index=True)
    scored = score_batch(rows, pipeline, schema)
    assert not scored.refused
    np.testing.assert_array_equal(scored.scores, predict_scores(pipeline, rows, schema))
