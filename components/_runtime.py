"""Artifact I/O shared by the component bodies (imported inside them, at run time).

Components stay thin: read inputs with these helpers, call a pure function from
``closedloop.ml``, write outputs. Datasets travel as Parquet files, models as joblib
files of the fitted sklearn pipeline, schemas as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from closedloop.ml.schema import InputSchema


def read_frame(path: str) -> pd.DataFrame:
    """Read a Parquet dataset artifact."""
    return pd.read_parquet(path)


def write_frame(frame: pd.DataFrame, artifact: Any) -> None:
    """Write *frame* as the Parquet file of *artifact* and record its shape in metadata."""
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(artifact.path, index=False)
    artifact.metadata["rows"] = len(frame)
    artifact.metadata["columns"] = [str(c) for c in frame.columns]


def read_schema(path: str) -> InputSchema:
    """Read a schema artifact."""
    return InputSchema.from_json(Path(path).read_text())


def write_schema(schema: InputSchema, artifact: Any) -> None:
    """Write a schema artifact."""
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(schema.to_json())
    artifact.metadata["target"] = schema.target
    artifact.metadata["task"] = schema.task
    artifact.metadata["features"] = list(schema.feature_names)


def save_joblib(obj: object, artifact: Any) -> None:
    """Pickle *obj* with joblib into *artifact*'s path."""
    import joblib

    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(obj, artifact.path)


def load_joblib(path: str) -> Any:
    """Load a joblib artifact."""
    import joblib

    return joblib.load(path)


def write_json(data: object, artifact: Any) -> None:
    """Write *data* as JSON into *artifact*'s path."""
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def read_json(path: str) -> Any:
    """Read a JSON artifact."""
    return json.loads(Path(path).read_text())


def write_text(text: str, artifact: Any) -> None:
    """Write an HTML or Markdown artifact."""
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(text)


def fit_on_features(features: Any, train: pd.DataFrame, schema: InputSchema, config: Any) -> Any:
    """Fit an estimator on rows transformed by an already fitted feature step.

    Returns the served pipeline ``Pipeline([("features", features), ("model", estimator)])``
    whose feature step is exactly the object fitted by ``engineer_features``.
    """
    from sklearn.pipeline import Pipeline

    from closedloop.ml.train import encode_target, feature_frame, make_estimator

    estimator = make_estimator(config, schema)
    estimator.fit(
        features.transform(feature_frame(train, schema)),
        encode_target(train[schema.target], schema),
    )
    return Pipeline([("features", features), ("model", estimator)])
