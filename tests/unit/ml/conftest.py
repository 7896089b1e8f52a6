"""Fixtures shared by the ML unit tests: small generated frames, a schema, a model."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.ml.schema import InputSchema, infer_schema
from closedloop.ml.train import ModelConfig, train_model

# One thread: XGBoost's OpenMP threads collapse when other processes share the cores.
FAST_XGBOOST = ModelConfig("xgboost", {"n_estimators": 60, "max_depth": 3, "n_jobs": 1}, seed=0)


@pytest.fixture(scope="session")
def schema() -> InputSchema:
    """The contract, inferred from clean data of another seed than the test data."""
    return infer_schema(generate_transactions(4000, seed=101), DEFAULT_TARGET)


@pytest.fixture(scope="session")
def train_frame() -> pd.DataFrame:
    return generate_transactions(4000, seed=0)


@pytest.fixture(scope="session")
def holdout_frame() -> pd.DataFrame:
    return generate_transactions(2000, seed=1)


@pytest.fixture(scope="session")
def xgb_pipeline(train_frame: pd.DataFrame, schema: InputSchema) -> Pipeline:
    return train_model(train_frame, schema, FAST_XGBOOST)
