"""batch_predict called directly against a registry on S3 (SeaweedFS)."""

from __future__ import annotations

import io
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from closedloop.components.conftest import (
    TARGET,
    Prepared,
    artifact_out,
    dataset_in,
    publish_prepared,
)
from closedloop.components.inference.batch_predict.component import batch_predict
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.ml.train import predict_scores
from closedloop.registry import IntegrityError, Registry
from closedloop.storage import Store


@pytest.fixture()
def registry(prepared: Prepared, s3_env: dict[str, str], bucket: str) -> Registry:
    registry = Registry(Store(), f"s3://{bucket}/registry")
    publish_prepared(registry, prepared)
    return registry


@pytest.fixture(scope="module")
def batch() -> pd.DataFrame:
    return generate_transactions(120, seed=60).drop(columns=[TARGET])


def run(registry: Registry, batch: pd.DataFrame, tmp_path: Path, output_uri: str = "") -> tuple:
    predictions = artifact_out(dsl.Dataset, tmp_path, "predictions")
    published = batch_predict.python_func(
        dataset=dataset_in(tmp_path / "batch.parquet", batch),
        registry_uri=registry.root,
        model_name="fraud",
        version="v1",
        predictions=predictions,
        output_uri=output_uri,
    )
    return published, predictions


def test_scores_every_row_with_the_version(
    registry: Registry, batch: pd.DataFrame, prepared: Prepared, tmp_path: Path
) -> None:
    published, predictions = run(registry, batch, tmp_path)
    assert published == ""
    out = pd.read_parquet(predictions.path)
    assert list(out.columns) == [*batch.columns, "score", "prediction", "model_version", "refused"]
    assert (out["refused"] == "").all()
    assert predictions.metadata["scored_rows"] == 120 and predictions.metadata["refused_rows"] == 0
    pd.testing.assert_frame_equal(out[list(batch.columns)], batch)
    expected = predict_scores(joblib.load(prepared.model), batch, prepared.input_schema())
    np.testing.assert_allclose(out["score"].to_numpy(), expected, rtol=1e-6)
    assert ((out["score"] >= 0.5) == (out["prediction"] == 1)).all()
    assert set(out["model_version"]) == {"v1"}
    assert predictions.metadata["model_version"] == "v1"


def test_publishes_under_the_output_prefix(
    registry: Registry, batch: pd.DataFrame, tmp_path: Path, s3_store: Store, bucket: str
) -> None:
    published, predictions = run(registry, batch, tmp_path, output_uri=f"s3://{bucket}/scored")
    assert published.startswith(f"s3://{bucket}/scored/model=fraud/version=v1/predictions-")
    assert published.endswith(".parquet")
    remote = pd.read_parquet(io.BytesIO(s3_store.read_bytes(published)))
    pd.testing.assert_frame_equal(remote, pd.read_parquet(predictions.path))


def test_a_tampered_model_is_refused(
    registry: Registry, batch: pd.DataFrame, tmp_path: Path, s3_store: Store
) -> None:
    s3_store.write_bytes(f"{registry.root}/models/fraud/versions/v1/model.joblib", b"evil")
    with pytest.raises(IntegrityError, match=r"model\.joblib has sha256"):
        run(registry, batch, tmp_path)
    assert not (tmp_path / "predictions").exists()


def test_one_bad_row_never_fails_the_batch(
    registry: Registry, batch: pd.DataFrame, prepared: Prepared, tmp_path: Path
) -> None:
    bad = batch.copy()
    bad["amount"] = bad["amount"].astype(str)  # a text column, as a CSV export leaves it
    bad.loc[[5, 17], "amount"] = "n/a"
    _, predictions = run(registry, bad, tmp_path)
    out = pd.read_parquet(predictions.path)
    assert len(out) == 120
    refused = out[out["refused"] != ""]
    assert refused.index.tolist() == [5, 17]
    assert (
        refused["refused"]
        .str.contains("column 'amount' (position 0) expects numbers", regex=False)
        .all()
    )
    assert refused["score"].isna().all() and refused["prediction"].isna().all()
    good = batch.drop(index=[5, 17])
    expected = predict_scores(joblib.load(prepared.model), good, prepared.input_schema())
    np.testing.assert_allclose(out.drop(index=[5, 17])["score"].to_numpy(), expected, rtol=1e-6)
    assert predictions.metadata["refused_rows"] == 2
