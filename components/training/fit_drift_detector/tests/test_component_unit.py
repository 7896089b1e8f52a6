"""fit_drift_detector called directly: a detector that loads back and tells drift apart."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from closedloop.components.conftest import Prepared, artifact_in, artifact_out, dataset_in
from closedloop.components.training.fit_drift_detector.component import fit_drift_detector
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.drift.detector import FittedDetector, load_detector_dir
from closedloop.drift.policy import DriftPolicy
from closedloop.drift.verdict import window_verdict

POLICY = DriftPolicy()


def _scores(result):
    return {"p_values": result.p_values, "effect_sizes": result.effect_sizes}


@pytest.fixture(scope="module")
def fitted(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    out = tmp_path_factory.mktemp("detector")
    detector = artifact_out(dsl.Artifact, out, "detector")
    reference = artifact_out(dsl.Dataset, out, "reference")
    fit_drift_detector.python_func(
        train=dataset_in(prepared.train),
        schema=artifact_in(dsl.Artifact, prepared.schema),
        detector=detector,
        reference=reference,
        p_value=0.01,
        max_reference_rows=800,
        seed=0,
    )
    return detector, reference


def test_writes_a_loadable_detector_and_its_reference(fitted: tuple, prepared: Prepared) -> None:
    detector, reference = fitted
    loaded: FittedDetector = load_detector_dir(detector.path)
    assert loaded.p_val == 0.01
    schema = prepared.input_schema()
    # Every input but the timestamp (it always drifts) is tested.
    assert set(loaded.feature_names) == set(schema.feature_names) - set(schema.names_of("datetime"))
    sample = pd.read_parquet(reference.path)
    assert len(sample) == 800 == detector.metadata["reference_rows"]
    assert detector.metadata["p_value"] == 0.01
    assert reference.metadata["rows"] == 800
    assert list(sample.columns) == list(prepared.input_schema().feature_names)
    # The sample is drawn from the training rows, and only from them.
    train = prepared.frame("train")
    keys = ["amount", "transaction_time"]
    assert len(sample.merge(train[keys], on=keys)) == 800


def test_the_detector_tells_shifted_traffic_apart(fitted: tuple) -> None:
    loaded = load_detector_dir(fitted[0].path)
    same = loaded.score(generate_transactions(1000, seed=20))
    shifted = loaded.score(generate_transactions(1000, seed=20, covariate_shift=1.0))
    assert not window_verdict(POLICY, **_scores(same)).input_drift
    assert window_verdict(POLICY, **_scores(shifted)).input_drift
    assert "channel" in window_verdict(POLICY, **_scores(shifted)).drifted_features


def test_small_training_sets_keep_every_row(prepared: Prepared, tmp_path: Path) -> None:
    detector = artifact_out(dsl.Artifact, tmp_path, "detector")
    reference = artifact_out(dsl.Dataset, tmp_path, "reference")
    fit_drift_detector.python_func(
        train=dataset_in(prepared.train),
        schema=artifact_in(dsl.Artifact, prepared.schema),
        detector=detector,
        reference=reference,
    )
    assert detector.metadata["reference_rows"] == len(prepared.frame("train"))
