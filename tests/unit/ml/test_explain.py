import json
import re

import numpy as np
import pandas as pd
import pytest

from closedloop.ml.explain import BASE_VALUE_KEY, Explanation, explain_global, explain_rows
from closedloop.ml.schema import ColumnSpec, InputSchema
from closedloop.ml.train import ModelConfig, train_model


@pytest.fixture(scope="module")
def signal_and_noise() -> tuple[pd.DataFrame, InputSchema]:
    """The label depends on ``signal`` and ``colour`` only; ``noise`` is irrelevant."""
    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame(
        {
            "noise": rng.normal(size=n),
            "signal": rng.lognormal(0, 1, n),
            "colour": rng.choice(["red", "blue", "green"], n),
        }
    )
    logit = 2.0 * np.log(df["signal"]) + 1.5 * (df["colour"] == "red")
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    schema = InputSchema(
        (
            ColumnSpec("noise", "numeric"),
            ColumnSpec("signal", "numeric"),
            ColumnSpec("colour", "categorical", allowed=("blue", "green", "red")),
        ),
        "y",
        "classification",
        (0, 1),
    )
    return df, schema


@pytest.mark.parametrize(
    ("kind", "method"),
    [("xgboost", "xgboost_shap"), ("random_forest", "permutation")],
)
def test_global_importance_ranks_signal_above_noise(signal_and_noise, kind, method):
    df, schema = signal_and_noise
    params = (
        {"n_estimators": 50, "max_depth": 3, "n_jobs": 1}
        if kind == "xgboost"
        else {"n_estimators": 50}
    )
    pipeline = train_model(df, schema, ModelConfig(kind, params))
    explanation = explain_global(pipeline, df, schema, max_rows=800, seed=1)
    assert explanation.method == method
    assert explanation.n_rows == 800
    # Importances are per INPUT column: engineered and one-hot columns are folded back.
    assert set(explanation.importances) == {"noise", "signal", "colour"}
    ranking = list(explanation.importances)
    assert ranking[0] == "signal"
    assert explanation.importances["colour"] > explanation.importances["noise"]
    assert list(explanation.importances.values()) == sorted(
        explanation.importances.values(), reverse=True
    )


def test_explain_rows_contributions_add_up_to_the_margin(signal_and_noise):
    df, schema = signal_and_noise
    pipeline = train_model(df, schema, ModelConfig("xgboost", {"n_estimators": 50, "n_jobs": 1}))
    rows = df.head(5)
    contributions = explain_rows(pipeline, rows, schema)
    assert len(contributions) == 5
    probabilities = pipeline.predict_proba(rows[list(schema.feature_names)])[:, 1]
    for row, probability in zip(contributions, probabilities, strict=True):
        assert set(row) == {"noise", "signal", "colour", BASE_VALUE_KEY}
        margin = sum(row.values())
        assert 1 / (1 + np.exp(-margin)) == pytest.approx(probability, abs=1e-5)


def test_explain_rows_needs_xgboost(signal_and_noise):
    df, schema = signal_and_noise
    pipeline = train_model(df, schema, ModelConfig("logistic_regression"))
    with pytest.raises(ValueError, match=r"XGBoost.*Pipeline"):
        explain_rows(pipeline, df.head(2), schema)


def test_explanation_outputs_and_round_trip(xgb_pipeline, holdout_frame, schema):
    explanation = explain_global(xgb_pipeline, holdout_frame, schema, max_rows=500)
    assert set(explanation.importances) == set(schema.feature_names)
    restored = Explanation.from_dict(json.loads(json.dumps(explanation.to_dict())))
    assert restored == explanation
    assert list(restored.importances) == list(explanation.importances)
    markdown = explanation.to_markdown()
    assert markdown.count("\n| ") == len(schema.feature_names) + 1
    assert f"| 1 | `{next(iter(explanation.importances))}`" in markdown
    page = explanation.to_html()
    assert len(re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", page)) == 1
    with pytest.raises(ValueError, match="empty"):
        explain_global(xgb_pipeline, holdout_frame.head(0), schema)
