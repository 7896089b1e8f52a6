"""Typed pipeline arguments from ``key=value`` strings (CLI ``--param``, trigger ``--pipeline-arg``).

KFP refuses a string for an integer parameter, locally and on a cluster, so text from a
command line is converted by the type the pipeline declares before a run is started.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from closedloop.errors import ClosedLoopError

# SDK names (component_spec.inputs) and IR names (compiled YAML parameterType).
_INTEGER = {"Integer", "NUMBER_INTEGER"}
_FLOAT = {"Float", "NUMBER_DOUBLE"}
_BOOLEAN = {"Boolean", "BOOLEAN"}
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class ParameterError(ClosedLoopError, ValueError):
    """An argument the pipeline does not take, or that is not of its type."""


def types_of_function(pipeline: Any) -> dict[str, str]:
    """Return ``name -> type`` of a ``@dsl.pipeline`` function's parameters."""
    return {name: spec.type for name, spec in (pipeline.component_spec.inputs or {}).items()}


def types_of_package(path: str | Path) -> dict[str, str]:
    """Return ``name -> parameterType`` of a compiled pipeline YAML's root parameters."""
    import yaml

    docs = list(yaml.safe_load_all(Path(path).read_text()))
    parameters = (docs[0] or {}).get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: str(spec.get("parameterType", "STRING")) for name, spec in parameters.items()}


def coerce(
    arguments: Mapping[str, Any], types: Mapping[str, str], pipeline: str = "the pipeline"
) -> dict[str, Any]:
    """Convert string values to the declared types; leave typed values as they are.

    Raises:
        ParameterError: An unknown name, or a string that is not of the declared type.
    """
    out: dict[str, Any] = {}
    for name, value in arguments.items():
        if name not in types:
            raise ParameterError(
                f"{pipeline} has no parameter {name!r}; it takes: {', '.join(sorted(types))}"
            )
        kind = types[name]
        if not isinstance(value, str):
            out[name] = (
                float(value)
                if kind in _FLOAT and isinstance(value, int) and not isinstance(value, bool)
                else value
            )
            continue
        try:
            if kind in _INTEGER:
                out[name] = int(value)
            elif kind in _FLOAT:
                out[name] = float(value)
            elif kind in _BOOLEAN:
                if value.lower() not in _TRUE | _FALSE:
                    raise ValueError(value)
                out[name] = value.lower() in _TRUE
            else:
                out[name] = value
        except ValueError as exc:
            wanted = (
                "integer" if kind in _INTEGER else "number" if kind in _FLOAT else "true or false"
            )
            raise ParameterError(f"{name}={value!r}: {pipeline} expects {wanted}") from exc
    return out
