"""engineer_features called directly: the fitted transformer is what training and serving use."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from closedloop.components.conftest import Prepared, artifact_in, artifact_out, dataset_in
from closedloop.components.data_processing.engineer_features.component import engineer_features
from kfp import dsl

from closedloop.ml.train import feature_frame


def run(prepared: Prepared, tmp_path: Path, engineer: bool) -> dsl.Model:
    features = artifact_out(dsl.Model, tmp_path, "features")
    engineer_features.python_func(
        train=dataset_in(prepared.train),
        schema=artifact_in(dsl.Artifact, prepared.schema),
        features=features,
        engineer=engineer,
    )
    return features


def test_fits_a_transformer_on_the_training_rows(prepared: Prepared, tmp_path: Path) -> None:
    features = run(prepared, tmp_path / "eng", engineer=True)
    fitted = joblib.load(features.path)
    schema = prepared.input_schema()
    names = list(fitted.get_feature_names_out())
    assert features.metadata == {"engineer": True, "outputs": len(names)}
    matrix = fitted.transform(feature_frame(prepared.frame("holdout"), schema))
    assert matrix.shape == (len(prepared.frame("holdout")), len(names))
    assert np.isfinite(np.asarray(matrix, dtype=float)).all()
    # Refitting the same rows gives the same transform: nothing depends on the holdout.
    again = joblib.load(run(prepared, tmp_path / "again", engineer=True).path)
    holdout = feature_frame(prepared.frame("holdout"), schema)
    np.testing.assert_allclose(
        np.asarray(again.transform(holdout), dtype=float), np.asarray(matrix, dtype=float)
    )


def test_engineering_adds_columns(prepared: Prepared, tmp_path: Path) -> None:
    plain = run(prepared, tmp_path / "plain", engineer=False)
    engineered = run(prepared, tmp_path / "eng", engineer=True)
    assert plain.metadata["engineer"] is False
    assert engineered.metadata["outputs"] > plain.metadata["outputs"] > 0
    plain_names = set(joblib.load(plain.path).get_feature_names_out())
    engineered_names = set(joblib.load(engineered.path).get_feature_names_out())
    assert plain_names < engineered_names
