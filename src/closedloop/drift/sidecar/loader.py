"""Load the drift detector fitted with the served model version, digest-checked."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from closedloop.drift.detector import FittedDetector, load_detector_dir
from closedloop.drift.sidecar.errors import ModelLoadError
from closedloop.ml.schema import InputSchema
from closedloop.registry import Registry, RegistryError
from closedloop.registry.layout import DETECTOR_DIR, SCHEMA_FILE
from closedloop.storage import StorageError, Store


@dataclass(frozen=True)
class ServedDetector:
    """The detector of one model version and the schema its requests must match.

    Attributes:
        model_name: The model.
        version: The resolved version (never ``champion``).
        detector: The fitted detector.
        schema: The version's input schema.
    """

    model_name: str
    version: str
    detector: FittedDetector
    schema: InputSchema


def load_served_detector(
    store: Store, registry_uri: str, model_name: str, version: str
) -> ServedDetector:
    """Fetch a version from the registry (every file's sha256 checked) and load its detector.

    Args:
        store: The storage layer.
        registry_uri: The registry root.
        model_name: The model.
        version: ``v<N>`` or ``champion`` (resolved once, here).

    Returns:
        The loaded detector and schema.

    Raises:
        ModelLoadError: If the version is missing, a digest differs, or the detector
            directory is incomplete.
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
    return ServedDetector(model_name, local.version, detector, schema)
