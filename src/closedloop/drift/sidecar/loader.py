"""Load the drift detector fitted with the served model version, digest-checked.

The version is read as every other process reads one
(:func:`closedloop.serving.loading.fetch_version`: digests, then schema); its errors
become :class:`~closedloop.drift.sidecar.errors.ModelLoadError` here.
"""

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
from closedloop.registry.layout import DETECTOR_DIR
from closedloop.serving.loading import ArtifactError, fetch_version
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
        ModelLoadError: If the version is missing, a digest differs, the schema is
            not valid, the detector directory is incomplete, or the quality baseline
            is malformed.
    """
    registry = Registry(store, registry_uri)
    with tempfile.TemporaryDirectory(prefix="closedloop-sidecar-") as tmp:
        try:
            files = fetch_version(registry, model_name, version, tmp, pipeline=False)
        except (RegistryError, StorageError, ArtifactError) as exc:
            raise ModelLoadError(
                f"cannot load {model_name} {version} from {registry_uri}: {exc}"
            ) from exc
        try:
            detector = load_detector_dir(files.path / DETECTOR_DIR)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{model_name} {files.version} has no usable drift detector in {DETECTOR_DIR}/: {exc}"
            ) from exc
        baseline = _quality_baseline(files.path, model_name, files.version)
    return ServedDetector(model_name, files.version, detector, files.schema, baseline)


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
