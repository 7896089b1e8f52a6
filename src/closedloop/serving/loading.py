"""Loading one registered model version for serving: fetch, verify, unpickle, probe.

The contract every process that loads a version to answer with it follows (the model
server, batch inference, the drift sidecar): :meth:`closedloop.registry.Registry.fetch`
checks every file's sha256 against the manifest, then the schema is parsed, then the
pipeline is unpickled, then a probe row is predicted. A version that fails any step is
refused with :class:`ArtifactError` (or the registry's own errors).

This module must never import kfp (protobuf 5 here, 6 there).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from xgboost import XGBModel

from closedloop.errors import ClosedLoopError
from closedloop.ml.schema import FrameCheck, InputSchema, check_frame
from closedloop.registry import Registry
from closedloop.registry.layout import MODEL_FILE, SCHEMA_FILE
from closedloop.serving.messages import (
    MessageError,
    MessageRows,
    check_cells,
    check_names,
    records_frame,
)


class ArtifactError(ClosedLoopError):
    """A version's files passed their digests but are not a servable model."""


@dataclass(frozen=True)
class ServedVersion:
    """A model version loaded and checked, ready to answer requests.

    Attributes:
        model_name: Registered model name.
        version: Version id (``v<N>``).
        pipeline: The fitted features + model pipeline.
        schema: Its input schema.
        loaded_at: When it passed its checks (epoch seconds).
    """

    model_name: str
    version: str
    pipeline: Pipeline
    schema: InputSchema
    loaded_at: float

    @property
    def classification(self) -> bool:
        """Whether the model predicts classes."""
        return self.schema.task == "classification"

    @property
    def class_names(self) -> list[str]:
        """Class labels as strings, in the order of the probability columns."""
        return [str(c) for c in self.schema.classes or ()]

    def check_message(self, message: MessageRows) -> FrameCheck:
        """Check and coerce the rows of a prediction message against the schema.

        Raises:
            SchemaError: Names, width, types or values do not fit the schema.
            MessageError: ``jsonData`` records lack a column or have an extra one.
        """
        if message.records is not None:
            return check_frame(
                records_frame(message.records, self.schema.feature_names), self.schema
            )
        return check_frame(message.rows or [], self.schema, message.names)

    def check_array(self, rows: Any, names: Any, *, max_rows: int) -> FrameCheck:
        """Check rows handed over as an array (feedback's ``request.data``, gRPC).

        Raises:
            MessageError: Too many rows or non-scalar cells.
            SchemaError: Names, width, types or values do not fit the schema.
        """
        array = np.asarray(rows)
        count = array.shape[0] if array.ndim == 2 else 1
        if count > max_rows:
            raise MessageError(f"too many rows: {count}, the limit is {max_rows} per request")
        check_cells(array)
        return check_frame(array, self.schema, check_names(names))

    def predict_checked(self, checked: FrameCheck) -> np.ndarray:
        """Class probabilities ``(n, K)`` or values ``(n,)`` as float64."""
        if self.classification:
            return np.asarray(self.pipeline.predict_proba(checked.frame), dtype=np.float64)
        return np.asarray(self.pipeline.predict(checked.frame), dtype=np.float64)

    @property
    def explainable(self) -> bool:
        """Whether per-row contributions exist (XGBoost, binary or regression)."""
        model = getattr(self.pipeline, "named_steps", {}).get("model")
        return isinstance(model, XGBModel) and (
            not self.classification or len(self.schema.classes or ()) == 2
        )


@dataclass(frozen=True)
class LoadFailure:
    """Why the last attempt to load a version failed.

    Attributes:
        version: The version (or ``champion`` when the pointer could not be read).
        message: What went wrong.
        permanent: True when retrying cannot help (digest mismatch, unusable artifact,
            missing pinned version).
    """

    version: str
    message: str
    permanent: bool


def probe_frame(schema: InputSchema) -> pd.DataFrame:
    """Build one plausible input row from the schema, to check a version predicts.

    Returns:
        The coerced row, as :func:`check_frame` returns it.
    """
    row: list[Any] = []
    for spec in schema.columns:
        if spec.kind in ("numeric", "boolean"):
            low = 0.0 if spec.minimum is None else spec.minimum
            high = low if spec.maximum is None else spec.maximum
            row.append(0.0 if spec.kind == "boolean" else (low + high) / 2)
        elif spec.kind == "categorical":
            row.append(spec.allowed[0] if spec.allowed else "probe")
        else:
            row.append("2026-01-01T00:00:00")
    return check_frame([row], schema).frame


def load_version(registry: Registry, model_name: str, version: str) -> ServedVersion:
    """Fetch a version, verify its digests, load it and check it predicts.

    Args:
        registry: Where the version lives.
        model_name: Registered model name.
        version: A version id or ``champion``.

    Returns:
        The loaded version; its files are deleted once in memory.

    Raises:
        IntegrityError: A file is missing or its sha256 differs from the manifest.
        VersionNotFoundError: No such version (or no champion yet).
        StorageError: S3 could not be reached or refused access.
        ArtifactError: The files do not make a servable model.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"closedloop-{model_name}-"))
    try:
        local = registry.fetch(model_name, version, workdir)
        try:
            schema = InputSchema.from_json((local.path / SCHEMA_FILE).read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{SCHEMA_FILE} is not a valid input schema: {exc}") from exc
        try:
            pipeline = joblib.load(local.path / MODEL_FILE)
        # Unpickling runs arbitrary code paths (missing modules, version skew, truncated
        # streams); whatever it raises, the artifact is unusable.
        except Exception as exc:
            raise ArtifactError(
                f"{MODEL_FILE} could not be loaded ({type(exc).__name__}: {exc})"
            ) from exc
        served = ServedVersion(model_name, local.version, pipeline, schema, time.time())
        check_servable(served)
        return served
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def check_servable(served: ServedVersion) -> None:
    """Predict a probe row and check the output's shape and values.

    Raises:
        ArtifactError: If the pipeline cannot predict or answers nonsense.
    """
    pipeline, schema = served.pipeline, served.schema
    if not hasattr(pipeline, "predict"):
        raise ArtifactError(f"{MODEL_FILE} holds a {type(pipeline).__name__}, not a pipeline")
    try:
        frame = probe_frame(schema)
        if served.classification:
            output = np.asarray(pipeline.predict_proba(frame), dtype=np.float64)
            expected: tuple[int, ...] = (1, len(schema.classes or ()))
        else:
            output = np.asarray(pipeline.predict(frame), dtype=np.float64)
            expected = (1,)
    # The probe is the pipeline's first call in this process: anything it raises
    # (a feature step that does not match the schema, a missing method) disqualifies it.
    except Exception as exc:
        raise ArtifactError(
            f"the pipeline fails on a probe row ({type(exc).__name__}: {exc})"
        ) from exc
    if output.shape != expected:
        raise ArtifactError(
            f"the pipeline answers shape {output.shape} for one row, not {expected}"
        )
    if not np.all(np.isfinite(output)):
        raise ArtifactError("the pipeline answers non-finite values for a probe row")
