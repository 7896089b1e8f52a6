"""Helpers shared by the component tests: small real data as KFP artifacts, local runs, S3.

Unit tests call ``<component>.python_func`` with real ``kfp.dsl`` artifact objects whose
``uri`` is a local path (kfp 2.17 uses a local ``uri`` unchanged as ``.path``). Local
tests run a tiny pipeline under ``kfp.local.SubprocessRunner(use_venv=False)`` that
brings the input files in with ``dsl.importer``.

The session fixture :func:`prepared` builds every intermediate artifact once, with the
library functions the components wrap, so a test of one component does not depend on
another component being right.
"""

from __future__ import annotations

import io
import json
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kfp import dsl, local

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.local.s3 import LocalS3
from closedloop.ml.schema import InputSchema, infer_schema

TARGET = DEFAULT_TARGET

# One thread: XGBoost's OpenMP threads collapse when other processes share the cores.
FAST_CONFIG: dict[str, Any] = {
    "kind": "xgboost",
    "params": {"n_estimators": 40, "max_depth": 3, "n_jobs": 1},
    "seed": 0,
}


# -- data and artifacts ---------------------------------------------------------------
def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write *frame* as Parquet at *path* (parents created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Return *frame* as the bytes of a Parquet file."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def dataset_in(path: Path, frame: pd.DataFrame | None = None, **metadata: Any) -> dsl.Dataset:
    """An input ``Dataset`` at *path*, written from *frame* when given."""
    if frame is not None:
        write_parquet(frame, path)
    return dsl.Dataset(name=path.stem, uri=str(path), metadata=dict(metadata))


def artifact_in(cls: type[dsl.Artifact], path: Path, **metadata: Any) -> Any:
    """An input artifact of class *cls* whose file or directory is *path*."""
    return cls(name=path.stem, uri=str(path), metadata=dict(metadata))


def artifact_out(cls: type[dsl.Artifact], directory: Path, name: str) -> Any:
    """An output artifact of class *cls* to be written at ``directory / name``."""
    directory.mkdir(parents=True, exist_ok=True)
    return cls(name=name, uri=str(directory / name))


def schema_file(schema: InputSchema, path: Path) -> Path:
    """Write *schema* as JSON at *path* and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema.to_json())
    return path


@dataclass(frozen=True)
class Prepared:
    """Every intermediate artifact of a training run, as files.

    Attributes:
        root: The folder holding them.
        raw: The generated rows before the split (Parquet).
        train: Training rows (Parquet).
        holdout: Held-out rows (Parquet).
        schema: The input schema (JSON).
        features: The fitted feature step (joblib).
        model: The fitted pipeline, features + XGBoost (joblib).
        evaluation: The holdout evaluation (JSON).
        explanation: The global explanation (JSON).
        detector: The saved drift detector (directory).
        reference: The detector's reference sample (Parquet).
    """

    root: Path
    raw: Path
    train: Path
    holdout: Path
    schema: Path
    features: Path
    model: Path
    evaluation: Path
    explanation: Path
    detector: Path
    reference: Path

    def frame(self, name: str) -> pd.DataFrame:
        """Read one of the Parquet files (``raw``, ``train``, ``holdout``, ``reference``)."""
        return pd.read_parquet(getattr(self, name))

    def input_schema(self) -> InputSchema:
        """The schema as an object."""
        return InputSchema.from_json(self.schema.read_text())


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """2000 generated rows split 75/25, with a fitted XGBoost pipeline and its artifacts."""
    import joblib
    from closedloop.components._runtime import fit_on_features

    from closedloop.drift.detector import fit_detector, save_detector_dir
    from closedloop.ml.evaluate import evaluate_model
    from closedloop.ml.explain import explain_global
    from closedloop.ml.features import make_features
    from closedloop.ml.split import split_dataset
    from closedloop.ml.train import ModelConfig, feature_frame

    root = tmp_path_factory.mktemp("prepared")
    raw = generate_transactions(2000, seed=0)
    schema = infer_schema(raw, TARGET)
    train, holdout = split_dataset(raw, TARGET, test_size=0.25, seed=0)
    features = make_features(schema, engineer=True).fit(feature_frame(train, schema))
    model = fit_on_features(features, train, schema, ModelConfig.from_dict(FAST_CONFIG))
    joblib.dump(features, root / "features.joblib")
    joblib.dump(model, root / "model.joblib")
    evaluation = evaluate_model(model, holdout, schema)
    (root / "evaluation.json").write_text(json.dumps(evaluation.to_dict()))
    explanation = explain_global(model, holdout, schema, max_rows=300, seed=0)
    (root / "explanation.json").write_text(json.dumps(explanation.to_dict()))
    detector = fit_detector(train, schema, max_reference_rows=500, seed=0)
    save_detector_dir(detector, root / "detector")
    return Prepared(
        root=root,
        raw=write_parquet(raw, root / "raw.parquet"),
        train=write_parquet(train, root / "train.parquet"),
        holdout=write_parquet(holdout, root / "holdout.parquet"),
        schema=schema_file(schema, root / "schema.json"),
        features=root / "features.joblib",
        model=root / "model.joblib",
        evaluation=root / "evaluation.json",
        explanation=root / "explanation.json",
        detector=root / "detector",
        reference=write_parquet(detector.reference, root / "reference.parquet"),
    )


# -- kfp.local ------------------------------------------------------------------------
def run_local(pipeline: Callable[..., Any], root: Path, **arguments: Any) -> dict[str, Any]:
    """Run *pipeline* under ``kfp.local`` in this environment; return its outputs by name.

    ``raise_on_error=True``: a failing task raises here instead of being logged.
    """
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    with warnings.catch_warnings():
        # The component image holds this very environment; running its tasks here is the
        # local mode's design, not the mistake kfp warns about.
        warnings.filterwarnings("ignore", "You may be attemping to run a task that uses custom")
        return dict(pipeline(**arguments).outputs)


def import_dataset(uri: Any, **metadata: Any) -> Any:
    """A ``dsl.importer`` task bringing an existing file in as a ``Dataset``.

    *uri* is a pipeline parameter (a channel) or a constant path.
    """
    return dsl.importer(
        artifact_uri=_uri(uri), artifact_class=dsl.Dataset, reimport=False, metadata=metadata
    )


def import_artifact(uri: Any, cls: type[dsl.Artifact] = dsl.Artifact) -> Any:
    """A ``dsl.importer`` task bringing an existing file or directory in as *cls*."""
    return dsl.importer(artifact_uri=_uri(uri), artifact_class=cls, reimport=False)


def _uri(uri: Any) -> Any:
    # str() of a pipeline channel is its placeholder text, not its value.
    return str(uri) if isinstance(uri, Path) else uri


# -- S3 -------------------------------------------------------------------------------
# s3_server, s3_store and bucket come from the repository's root conftest.py.
@pytest.fixture()
def s3_env(s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point ``Store()`` (what the components construct) at the session's SeaweedFS."""
    env = s3_server.settings().to_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def fresh_bucket(server: LocalS3) -> str:
    """Create and return a new bucket on *server* (for module-scoped fixtures)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    server.store().ensure_bucket(name)
    return name


def publish_prepared(registry: Any, prepared: Prepared, model_name: str = "fraud") -> str:
    """Register the prepared model, schema and drift detector as a new version; return its id."""
    import shutil

    from closedloop.registry import Lineage
    from closedloop.registry.layout import DETECTOR_DIR, MODEL_FILE, REFERENCE_FILE, SCHEMA_FILE

    source = prepared.root / f"publish-{uuid.uuid4().hex[:8]}"
    source.mkdir()
    shutil.copyfile(prepared.model, source / MODEL_FILE)
    shutil.copyfile(prepared.schema, source / SCHEMA_FILE)
    shutil.copyfile(prepared.reference, source / REFERENCE_FILE)
    shutil.copytree(prepared.detector, source / DETECTOR_DIR)
    lineage = Lineage(dataset_uri=str(prepared.raw), dataset_sha256="0" * 64)
    return registry.register(model_name, source, lineage).version
