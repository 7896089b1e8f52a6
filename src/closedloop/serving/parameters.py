"""The model server's predictive-unit parameters, declared once and typed as Seldon types them.

A SeldonDeployment's graph node carries ``parameters: [{name, value, type}]``; the
operator passes them to the model container as ``PREDICTIVE_UNIT_PARAMETERS`` and
Seldon's wrapper turns each ``value`` (always a string: the CRD says so) into the
Python type ``type`` names before calling the model class with them as keyword
arguments (``seldon_core.microservice.parse_parameters``): ``INT`` → ``int(value)``,
``FLOAT`` and ``DOUBLE`` → ``float(value)``, ``STRING`` → ``str(value)``, ``BOOL`` →
``strtobool(value)``, so only ``true/false``, ``yes/no``, ``on/off``, ``1/0`` spellings.

:data:`MODEL_PARAMETERS` declares what :class:`closedloop.serving.model.ClosedLoopModel`
takes; :func:`seldon_parameters` builds the list that the cluster deployer
(:mod:`closedloop.deploy.seldon`) and the local one (:mod:`closedloop.deploy.local`) both
send; :func:`parse_parameter` is how the model class reads a value, typed or (from a
deployment made before the types) a string.

Standard library only: the deployers (kfp's environment) and the model server
(seldon-core's) both import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ParameterType = Literal["STRING", "INT", "FLOAT", "DOUBLE", "BOOL"]
SELDON_TYPES: tuple[ParameterType, ...] = ("STRING", "INT", "FLOAT", "DOUBLE", "BOOL")
"""The types Seldon's wrapper converts (any other is refused when the server starts)."""

_TRUE = ("y", "yes", "t", "true", "on", "1")
_FALSE = ("n", "no", "f", "false", "off", "0")


@dataclass(frozen=True)
class ParameterSpec:
    """One constructor parameter of the model class.

    Attributes:
        name: The keyword argument.
        type: How Seldon converts its value.
        default: The model class's default; ``None`` when it has none to speak of.
        help: What it is, for people reading a deployment.
        minimum: Smallest accepted value of a number.
    """

    name: str
    type: ParameterType
    default: str | int | float | bool | None
    help: str
    minimum: float | None = None

    def parse(self, value: Any) -> str | int | float | bool:
        """Read a value as the model class takes it: typed, or a string to convert.

        Raises:
            ValueError: The value does not convert to the type, or is out of range.
        """
        if self.type == "STRING":
            return "" if value is None else str(value).strip()
        if self.type == "BOOL":
            return _boolean(self.name, value)
        text = str(value).strip() if value is not None else ""
        kind = "an integer" if self.type == "INT" else "a number"
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value) if isinstance(value, int | float) else float(text)
        except ValueError as exc:
            raise ValueError(f"parameter {self.name}={value!r} is not {kind}") from exc
        if (
            not math.isfinite(number)
            or (self.minimum is not None and number < self.minimum)
            or (self.type == "INT" and not number.is_integer())
        ):
            floor = "" if self.minimum is None else f" >= {self.minimum:g}"
            raise ValueError(f"parameter {self.name}={value!r} must be {kind}{floor}")
        return int(number) if self.type == "INT" else number

    def entry(self, value: Any) -> dict[str, str]:
        """The Seldon ``{name, value, type}`` entry, its value written so Seldon converts it.

        Raises:
            ValueError: The value does not fit the parameter.
        """
        parsed = self.parse(value)
        if self.type == "BOOL":
            text = "true" if parsed else "false"
        elif self.type in ("FLOAT", "DOUBLE"):
            text = repr(float(parsed))
        else:
            text = str(parsed)
        return {"name": self.name, "value": text, "type": self.type}


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"parameter {name}={value!r} must be true or false")


DEFAULT_POLL_SECONDS = 10.0
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024

MODEL_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("registry_uri", "STRING", None, "registry root, s3://bucket/prefix or a path"),
    ParameterSpec("model_name", "STRING", None, "registered model name"),
    ParameterSpec("version", "STRING", "champion", "champion (follow the pointer) or v<N>"),
    ParameterSpec(
        "poll_seconds",
        "DOUBLE",
        DEFAULT_POLL_SECONDS,
        "how often the champion pointer is read; 0 reads it once, at start-up",
        minimum=0.0,
    ),
    ParameterSpec("max_rows", "INT", DEFAULT_MAX_ROWS, "most rows per request", minimum=1),
    ParameterSpec(
        "max_request_bytes",
        "INT",
        DEFAULT_MAX_REQUEST_BYTES,
        "largest request body in bytes",
        minimum=1024,
    ),
    ParameterSpec(
        "request_logger_url",
        "STRING",
        "",
        "local mode only: where to post request-logger CloudEvents; empty for none",
    ),
    ParameterSpec("request_logger_mode", "STRING", "all", "request, response or all (logger.mode)"),
)
"""The constructor parameters of :class:`closedloop.serving.model.ClosedLoopModel`."""

PARAMETERS_BY_NAME: Mapping[str, ParameterSpec] = {spec.name: spec for spec in MODEL_PARAMETERS}


def parse_parameter(name: str, value: Any) -> str | int | float | bool:
    """Read the model class's parameter *name* (see :meth:`ParameterSpec.parse`).

    Raises:
        ValueError: An unknown name, or a value that does not fit.
    """
    return _spec(name).parse(value)


def seldon_parameters(values: Mapping[str, Any]) -> list[dict[str, str]]:
    """Build the typed Seldon parameter list of the model class.

    Args:
        values: Parameter name → value; ``None`` values are left out, so the model's
            defaults apply.

    Returns:
        ``[{"name", "value", "type"}, ...]`` in the order given, each value a string
        Seldon converts back to the declared type.

    Raises:
        ValueError: An unknown name, or a value that does not fit its type.
    """
    return [_spec(name).entry(value) for name, value in values.items() if value is not None]


def _spec(name: str) -> ParameterSpec:
    try:
        return PARAMETERS_BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"ClosedLoopModel takes no parameter {name!r}; it takes {list(PARAMETERS_BY_NAME)}"
        ) from None
