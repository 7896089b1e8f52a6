"""Load the drift detector fitted with the served model version, digest-checked."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from closedloop.drift.detector import FittedDetector, load_detector_dir
from closedloop.drift.sidecar.errors import ModelLoadError
from closedloop.ml.schema import InputSchema
from closedloop.quality import QUALITY_BASELINE_FILE, QualityBaseline, QualityError
from closedloop.registry import Registry, RegistryError
from closedloop.registry.layout import DETECTOR_DIR, SCHEMA_FILE
from closedloop.storage import StorageError, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedDetector:
    """The detector of one model version and the schema its requests must match.

    Attributes:
        model_name: The model.
        version: The resolved version (never ``champion``).
        detector: The fitted detector.
        schema: The version's input schema.
        quality_baseline: The version's holdout quality, which labelled live rows are
            tested against; ``None`` for versions registered without one.
    """

    model_name: str
    version: str
    detector: FittedDetector
    schema: InputSchema
    quality_baseline: QualityBaseline | None = None


def load_served_detector(
    store: Store, registry_uri: str, model_name: str, version: str
) -> ServedDetector:
    """Fetch a version (every file's sha256 checked) and load its detector and quality baseline.

    Args:
        store: The storage layer.
        registry_uri: The registry root.
        model_name: The model.
        version: ``v<N>`` or ``champion`` (resolved once, here).

    Returns:
        The loaded detector, schema and quality baseline (``None`` if the version has
        none: it was registered before baselines were written).

    Raises:
        ModelLoadError: If the version is missing, a digest differs, the detector
            directory is incomplete, or the quality baseline is malformed.
    """
    registry = Registry(store, registry_uri)
    with tempfile.TemporaryDirectory(prefix="closedloop-sidecar-") as tmp:
        try:
            local = registry.fetch(model_name, version, tmp)
        except (RegistryError, StorageError) as exc:
            raise ModelLoadError(
                f"cannot fetch {model_name} {version} from {registry_uri}: {exc}"
            ) from exc
        detector_dir = Path(local.path) / DETECTOR_DIR
        try:
            detector = load_detector_dir(detector_dir)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{model_name} {local.version} has no usable drift detector in {DETECTOR_DIR}/: {exc}"
            ) from exc
        schema_path = Path(local.path) / SCHEMA_FILE
        schema = (
            InputSchema.from_json(schema_path.read_text())
            if schema_path.exists()
            else detector.schema
        )
        baseline = _quality_baseline(Path(local.path), model_name, local.version)
    return ServedDetector(model_name, local.version, detector, schema, baseline)


def _quality_baseline(version_dir: Path, model_name: str, version: str) -> QualityBaseline | None:
    path = version_dir / QUALITY_BASELINE_FILE
    if not path.exists():
        log.warning(
            "%s %s has no %s: the sidecar watches input drift only, quality stays unknown",
            model_name,
            version,
            QUALITY_BASELINE_FILE,
        )
        return None
    try:
        return QualityBaseline.from_json(path.read_bytes())
    except QualityError as exc:
        raise ModelLoadError(f"{model_name} {version}: {QUALITY_BASELINE_FILE}: {exc}") from exc
