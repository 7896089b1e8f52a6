"""Loading one registered model version for serving: fetch, verify, unpickle, probe.

The contract every process that loads a version to answer with it follows (the model
server, batch inference, the gate, retraining, the drift sidecar):
:meth:`closedloop.registry.Registry.fetch` checks every file's sha256 against the
manifest, then the schema is parsed, then the pipeline is unpickled
(:func:`fetch_version`, for callers that need the files), then a probe row is predicted
(:func:`load_version`, for the model server). A version that fails any step is refused
with :class:`ArtifactError` (or the registry's own errors); both name the model and the
version. :func:`read_version_schema` reads the schema alone (one digest-checked file).

This module must never import kfp (protobuf 5 here, 6 there).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.pipeline import Pipeline
from xgboost import XGBModel

from closedloop.errors import ClosedLoopError
from closedloop.ml.compiled import CompiledPipeline
from closedloop.ml.rowplan import CheckedRows, RowPlan
from closedloop.ml.schema import InputSchema
from closedloop.registry import LocalVersion, Registry
from closedloop.registry.layout import MODEL_FILE, SCHEMA_FILE
from closedloop.serving.messages import (
    MessageError,
    MessageRows,
    check_cells,
    check_names,
)

logger = logging.getLogger(__name__)


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
        plan: The schema's row checks (:class:`closedloop.ml.rowplan.RowPlan`).
        compiled: The pipeline as numpy functions, or ``None`` when it is not of the
            known shape (then the pipeline itself answers).
    """

    model_name: str
    version: str
    pipeline: Pipeline
    schema: InputSchema
    loaded_at: float
    plan: RowPlan = field(init=False, repr=False, compare=False)
    compiled: CompiledPipeline | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plan = RowPlan(self.schema)
        object.__setattr__(self, "plan", plan)
        try:
            compiled = CompiledPipeline.compile(
                self.pipeline, self.classification, plan.numeric_names
            )
        # An artifact the compiler cannot read is still served, by the pipeline itself
        # (check_servable decides whether it is servable at all).
        except Exception as exc:
            logger.warning("%s %s: not compiled (%s)", self.model_name, self.version, exc)
            compiled = None
        object.__setattr__(self, "compiled", compiled)

    @property
    def classification(self) -> bool:
        """Whether the model predicts classes."""
        return self.schema.task == "classification"

    @property
    def class_names(self) -> list[str]:
        """Class labels as strings, in the order of the probability columns."""
        return [str(c) for c in self.schema.classes or ()]

    def check_message(self, message: MessageRows) -> CheckedRows:
        """Check the rows of a prediction message; refuse it if a row is refused.

        Raises:
            SchemaError: Names, width, types or values do not fit the schema.
        """
        if message.records is not None:
            checked = self.plan.check_records(message.records)
        else:
            checked = self.plan.check_rows(message.rows or [], message.names)
        checked.raise_for_errors()
        return checked

    def check_array(self, rows: Any, names: Any, *, max_rows: int) -> CheckedRows:
        """Check rows handed over as an array (feedback's ``request.data``).

        Raises:
            MessageError: Too many rows or non-scalar cells.
            SchemaError: Names, width, types or values do not fit the schema.
        """
        array = np.asarray(rows)
        count = array.shape[0] if array.ndim == 2 else 1
        if count > max_rows:
            raise MessageError(f"too many rows: {count}, the limit is {max_rows} per request")
        check_cells(array)
        checked = self.plan.check_array(array, check_names(names))
        checked.raise_for_errors()
        return checked

    def predict_checked(self, checked: CheckedRows) -> np.ndarray:
        """Class probabilities ``(n, K)`` or values ``(n,)`` as float64."""
        if self.compiled is not None:
            return self.compiled.predict(checked)
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


def probe_row(schema: InputSchema) -> list[Any]:
    """One plausible input row (JSON values) built from the schema, to check a version."""
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
    return row


@dataclass(frozen=True)
class VersionFiles:
    """A version fetched to local disk, its digests checked, its schema and pipeline read.

    Attributes:
        local: The files (``local.path``) and the manifest they passed.
        schema: The input schema.
        pipeline: The fitted features + model pipeline; ``None`` when not asked for.
    """

    local: LocalVersion
    schema: InputSchema
    pipeline: Any = None

    @property
    def version(self) -> str:
        """The version id (never ``champion``)."""
        return self.local.version

    @property
    def path(self) -> Path:
        """The directory holding the version's files."""
        return self.local.path


def parse_schema(text: str | bytes, where: str) -> InputSchema:
    """Parse a version's input schema.

    Args:
        text: The content of its schema file.
        where: ``<model> <version>``, for the error message.

    Raises:
        ArtifactError: It is not a valid input schema.
    """
    try:
        return InputSchema.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{where}: {SCHEMA_FILE} is not a valid input schema: {exc}") from exc


def fetch_version(
    registry: Registry,
    model_name: str,
    version: str,
    workdir: str | Path,
    *,
    pipeline: bool = True,
) -> VersionFiles:
    """Fetch a version into *workdir* (every file's sha256 checked), read schema and pipeline.

    Args:
        registry: Where the version lives.
        model_name: Registered model name.
        version: A version id or ``champion``.
        workdir: Where the files go; the caller removes them.
        pipeline: Also unpickle the pipeline (a version holding only a detector can be
            read with ``False``).

    Returns:
        The files, the schema and (if asked) the pipeline.

    Raises:
        IntegrityError: A file is missing or its sha256 differs from the manifest.
        VersionNotFoundError: No such version (or no champion yet).
        StorageError: S3 could not be reached or refused access.
        ArtifactError: The schema or the pipeline cannot be read.
    """
    local = registry.fetch(model_name, version, workdir)
    where = f"{model_name} {local.version}"
    try:
        text = (local.path / SCHEMA_FILE).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{where}: {SCHEMA_FILE} cannot be read: {exc}") from exc
    schema = parse_schema(text, where)
    if not pipeline:
        return VersionFiles(local, schema)
    try:
        fitted = joblib.load(local.path / MODEL_FILE)
    # Unpickling runs arbitrary code paths (missing modules, version skew, truncated
    # streams); whatever it raises, the artifact is unusable.
    except Exception as exc:
        raise ArtifactError(
            f"{where}: {MODEL_FILE} could not be loaded ({type(exc).__name__}: {exc})"
        ) from exc
    return VersionFiles(local, schema, fitted)


def read_version_schema(
    registry: Registry, model_name: str, version: str
) -> tuple[str, InputSchema]:
    """Read only a version's input schema, checked against the manifest's digest.

    Args:
        registry: Where the version lives.
        model_name: Registered model name.
        version: A version id or ``champion``.

    Returns:
        The resolved version id and its schema.

    Raises:
        IntegrityError: The file is missing or its digest differs from the manifest.
        VersionNotFoundError: No such version (or no champion yet).
        StorageError: S3 could not be reached or refused access.
        ArtifactError: The file is not a valid input schema.
    """
    resolved = registry.resolve(model_name, version)
    text = registry.read_file(model_name, resolved, SCHEMA_FILE)
    return resolved, parse_schema(text, f"{model_name} {resolved}")


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
        files = fetch_version(registry, model_name, version, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    served = ServedVersion(model_name, files.version, files.pipeline, files.schema, time.time())
    try:
        check_servable(served)
    except ArtifactError as exc:
        raise ArtifactError(f"{model_name} {files.version}: {exc}") from exc
    return served


def check_servable(served: ServedVersion) -> None:
    """Predict a probe row and check the output's shape and values.

    The compiled pipeline must give the pipeline's own answer on the probe (to 1e-6);
    if it does not, the version is served by the pipeline itself and a warning logged.

    Raises:
        ArtifactError: If the pipeline cannot predict or answers nonsense.
    """
    pipeline, schema = served.pipeline, served.schema
    if not hasattr(pipeline, "predict"):
        raise ArtifactError(f"{MODEL_FILE} holds a {type(pipeline).__name__}, not a pipeline")
    try:
        checked = served.plan.check_rows([probe_row(schema)])
        checked.raise_for_errors()
        if served.classification:
            output = np.asarray(pipeline.predict_proba(checked.frame), dtype=np.float64)
            expected: tuple[int, ...] = (1, len(schema.classes or ()))
        else:
            output = np.asarray(pipeline.predict(checked.frame), dtype=np.float64)
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
    compiled = served.compiled
    if compiled is None:
        return
    try:
        fast = compiled.predict(checked)
        agrees = fast.shape == output.shape and bool(np.allclose(fast, output, rtol=0, atol=1e-6))
    # A compiled path that fails is not used; the pipeline itself still serves.
    except Exception as exc:
        logger.warning(
            "%s %s: compiled pipeline fails (%s)", served.model_name, served.version, exc
        )
        agrees = False
    if not agrees:
        logger.warning(
            "%s %s: the compiled pipeline disagrees with the pipeline on a probe row; "
            "serving with the pipeline itself",
            served.model_name,
            served.version,
        )
        object.__setattr__(served, "compiled", None)
