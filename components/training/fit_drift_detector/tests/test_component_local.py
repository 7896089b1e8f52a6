"""fit_drift_detector under kfp.local."""

from typing import NamedTuple

import pandas as pd
import pytest
from closedloop.components.conftest import Prepared, import_artifact, import_dataset, run_local
from closedloop.components.training.fit_drift_detector.component import fit_drift_detector
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.drift.detector import load_detector_dir
from closedloop.drift.policy import DriftPolicy
from closedloop.drift.verdict import window_verdict

POLICY = DriftPolicy()


def _scores(result):
    return {"p_values": result.p_values, "effect_sizes": result.effect_sizes}


pytestmark = pytest.mark.slow


class Fitted(NamedTuple):
    detector: dsl.Artifact
    reference: dsl.Dataset


@dsl.pipeline(name="fit-drift-detector-local")
def fit(train_uri: str, schema_uri: str) -> Fitted:
    task = fit_drift_detector(
        train=import_dataset(train_uri).output,
        schema=import_artifact(schema_uri).output,
        max_reference_rows=300,
    )
    return Fitted(task.outputs["detector"], task.outputs["reference"])


@pytest.fixture(scope="module")
def outputs(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_local(
        fit,
        tmp_path_factory.mktemp("detector-local"),
        train_uri=str(prepared.train),
        schema_uri=str(prepared.schema),
    )


def test_the_detector_loads_and_detects_drift(outputs: dict) -> None:
    detector = load_detector_dir(outputs["detector"].path)
    assert outputs["detector"].metadata["reference_rows"] == 300
    assert len(pd.read_parquet(outputs["reference"].path)) == 300
    assert not window_verdict(
        POLICY, **_scores(detector.score(generate_transactions(600, seed=40)))
    ).input_drift
    assert window_verdict(
        POLICY, **_scores(detector.score(generate_transactions(600, seed=40, covariate_shift=1.0)))
    ).input_drift
