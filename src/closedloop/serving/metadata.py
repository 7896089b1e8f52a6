"""Seldon ``/metadata`` of a served model: inputs, outputs and the input schema.

The wrapper asks for ``init_metadata()`` once, before the workers start, so
``/metadata`` describes the version served at start-up; ``meta.tags`` of every
response name the version that answered it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from closedloop.errors import ClosedLoopError
from closedloop.ml.schema import InputSchema
from closedloop.registry import Registry
from closedloop.serving.loading import read_version_schema
from closedloop.storage import S3Settings, Store

logger = logging.getLogger(__name__)


def start_metadata(registry_uri: str, model_name: str, version: str) -> dict[str, Any]:
    """Describe inputs and outputs from the schema of the version served at start-up.

    If the version cannot be read yet, only the name is published (and a warning
    logged): metadata must not keep the server from starting.
    """
    base: dict[str, Any] = {"name": model_name, "versions": [version], "platform": "closedloop"}
    # Few attempts: the server's start waits for this call.
    store = Store(S3Settings.from_env().with_(max_attempts=2))
    try:
        resolved, schema = read_version_schema(Registry(store, registry_uri), model_name, version)
    except (ClosedLoopError, OSError, ValueError) as exc:
        logger.warning("no input/output metadata for %s: %s", model_name, exc)
        return base
    return {**base, "versions": [resolved], **schema_metadata(schema)}


def schema_metadata(schema: InputSchema) -> dict[str, Any]:
    """Seldon metadata (inputs, outputs, custom) describing a schema.

    Inputs: an ``ndarray`` with the feature names, and ``jsonData`` records described
    by a JSON Schema. Outputs: class probabilities (named by class) or one value per row.
    """
    properties: dict[str, Any] = {}
    for spec in schema.columns:
        if spec.kind == "numeric":
            prop: dict[str, Any] = {"type": "number"}
            if spec.minimum is not None:
                prop["minimum"] = spec.minimum
            if spec.maximum is not None:
                prop["maximum"] = spec.maximum
        elif spec.kind == "boolean":
            prop = {"type": ["boolean", "number"], "enum": [True, False, 0, 1]}
        elif spec.kind == "categorical":
            # Unknown categories are accepted, so known ones are examples, not an enum.
            prop = {"type": "string"}
            if spec.allowed:
                prop["examples"] = list(spec.allowed)
        else:
            prop = {"type": "string", "format": "date-time"}
        if spec.accepts_missing:
            prop["type"] = [*np.atleast_1d(prop["type"]).tolist(), "null"]
        properties[spec.name] = prop
    names = list(schema.feature_names)
    record_schema = {
        "type": "object",
        "properties": properties,
        "required": names,
        "additionalProperties": False,
    }
    if schema.task == "classification":
        classes = [str(c) for c in schema.classes or ()]
        outputs = [
            {"messagetype": "ndarray", "schema": {"names": classes, "shape": [len(classes)]}}
        ]
    else:
        outputs = [{"messagetype": "ndarray", "schema": {"shape": [1]}}]
    return {
        "inputs": [
            {"messagetype": "ndarray", "schema": {"names": names, "shape": [len(names)]}},
            {"messagetype": "jsonData", "schema": record_schema},
        ],
        "outputs": outputs,
        "custom": {
            "task": schema.task,
            "target": schema.target,
            "input_schema": json.dumps(schema.to_dict(), separators=(",", ":")),
        },
    }
