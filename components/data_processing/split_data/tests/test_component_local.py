"""split_data under kfp.local."""

from typing import NamedTuple

import pandas as pd
import pytest
from closedloop.components.conftest import TARGET, import_dataset, run_local, write_parquet
from closedloop.components.data_processing.split_data.component import split_data
from kfp import dsl

from closedloop.data import generate_transactions

pytestmark = pytest.mark.slow


class Split(NamedTuple):
    train: dsl.Dataset
    holdout: dsl.Dataset


@dsl.pipeline(name="split-data-local")
def split(uri: str) -> Split:
    raw = import_dataset(uri, source="s3://landing/clean.parquet", sha256="12" * 32)
    task = split_data(dataset=raw.output, target=TARGET, test_size=0.25, seed=3)
    return Split(task.outputs["train"], task.outputs["holdout"])


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_transactions(400, seed=36)


@pytest.fixture(scope="module")
def outputs(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("split-local")
    return run_local(split, root / "runs", uri=str(write_parquet(frame, root / "in.parquet")))


def test_disjoint_parts_cover_every_row(outputs: dict, frame: pd.DataFrame) -> None:
    train = pd.read_parquet(outputs["train"].path)
    holdout = pd.read_parquet(outputs["holdout"].path)
    assert (len(train), len(holdout)) == (300, 100)
    train_rows = set(train.itertuples(index=False, name=None))
    holdout_rows = set(holdout.itertuples(index=False, name=None))
    assert train_rows.isdisjoint(holdout_rows)
    assert train_rows | holdout_rows == set(frame.itertuples(index=False, name=None))
    assert holdout[TARGET].sum() > 0


def test_lineage_is_passed_on(outputs: dict) -> None:
    for part in ("train", "holdout"):
        assert outputs[part].metadata["source"] == "s3://landing/clean.parquet"
        assert outputs[part].metadata["sha256"] == "12" * 32
