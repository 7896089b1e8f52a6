"""The input contract of a model: column kinds, ranges, categories, and row checks.

This module is imported by the model server, so it depends only on the standard
library, numpy and pandas.

Serving-time rules, enforced by :func:`check_frame` / :func:`coerce_frame`:

* names, when given, must equal ``schema.feature_names`` in order; without names the
  width must match and columns are taken positionally;
* numeric and boolean columns accept numbers and numeric strings (a JSON ``ndarray``
  that mixes strings and numbers reaches the server as an array of strings); any other
  string is an error, and so is ``inf`` anywhere;
* the tokens ``None``, ``""``, ``"null"``, ``"None"``, ``"nan"`` and ``"NaN"`` mean
  missing; a missing value is an error in a column whose spec is not ``nullable``;
* unknown categories are **accepted** and counted in :attr:`FrameCheck.unknown_categories`
  (the fitted one-hot encoder maps them to all-zeros or to its infrequent bucket), so a
  new merchant type does not take the service down; the drift detector sees them;
* datetimes must be strings in one of :data:`DATETIME_FORMATS` (or ISO 8601) or
  datetime objects; they are returned as naive ``datetime64[ns]`` (UTC if an offset
  was given).

The coerced frame holds the schema's feature columns in order with these dtypes:
numeric and boolean → ``float64`` (booleans as 0.0/1.0), categorical → ``object``
(``str`` or ``NaN``), datetime → ``datetime64[ns]``. That is what the served
pipeline expects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

ColumnKind = Literal["numeric", "categorical", "datetime", "boolean"]
Task = Literal["classification", "regression"]

SCHEMA_VERSION = 1
COLUMN_KINDS: tuple[str, ...] = ("numeric", "categorical", "datetime", "boolean")
TASKS: tuple[str, ...] = ("classification", "regression")

# Tried in order; the first that parses a value wins. ISO 8601 is the last resort.
DATETIME_FORMATS: tuple[str, ...] = (
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%b %d %Y %H:%M:%S",
    "%d %b %Y %H:%M:%S",
)
ISO8601 = "ISO8601"
NULL_TOKENS: frozenset[str] = frozenset({"", "null", "None", "none", "nan", "NaN", "NULL"})
_TRUE_TOKENS = frozenset({"true", "True", "TRUE", "1", "1.0"})
_FALSE_TOKENS = frozenset({"false", "False", "FALSE", "0", "0.0"})
_MAX_REPORTED_ROWS = 3
_MAX_TASK_CLASSES = 20
_DATETIME_DETECTION_SHARE = 0.95
_DATETIME_DETECTION_SAMPLE = 1000


class SchemaError(ValueError):
    """Rows do not match an :class:`InputSchema`; the message says where and why."""


@dataclass(frozen=True)
class ColumnSpec:
    """One input column of a model.

    Attributes:
        name: Column name.
        kind: ``numeric``, ``categorical``, ``datetime`` or ``boolean``.
        nullable: Whether missing values are accepted.
        minimum: Lowest accepted value (numeric only), or ``None`` for no bound.
        maximum: Highest accepted value (numeric only), or ``None`` for no bound.
        allowed: Known categories (categorical only), or ``None`` for any string.
    """

    name: str
    kind: ColumnKind
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in COLUMN_KINDS:
            raise ValueError(f"column {self.name!r}: unknown kind {self.kind!r}")
        if self.allowed is not None:
            object.__setattr__(self, "allowed", tuple(str(v) for v in self.allowed))
        if (
            self.minimum is not None
            and self.maximum is not None
            and float(self.minimum) > float(self.maximum)
        ):
            raise ValueError(f"column {self.name!r}: minimum > maximum")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {
            "name": self.name,
            "kind": self.kind,
            "nullable": self.nullable,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "allowed": list(self.allowed) if self.allowed is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        """Build a spec from :meth:`to_dict` output."""
        allowed = data.get("allowed")
        return cls(
            name=str(data["name"]),
            kind=data["kind"],
            nullable=bool(data.get("nullable", False)),
            minimum=None if data.get("minimum") is None else float(data["minimum"]),
            maximum=None if data.get("maximum") is None else float(data["maximum"]),
            allowed=None if allowed is None else tuple(str(v) for v in allowed),
        )


@dataclass(frozen=True)
class InputSchema:
    """The columns a model takes, its target and its task.

    Attributes:
        columns: Feature columns, in the order the model expects them.
        target: Name of the label column (absent at serving time).
        task: ``classification`` or ``regression``.
        classes: Class labels in the order of the model's class indices
            (classification only); predicted index ``i`` means ``classes[i]``.
    """

    columns: tuple[ColumnSpec, ...]
    target: str
    task: Task
    classes: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names in schema: {names}")
        if self.target in names:
            raise ValueError(f"target {self.target!r} is also listed as a feature")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(_plain(c) for c in self.classes))
        if self.task == "classification" and (self.classes is None or len(self.classes) < 2):
            raise ValueError("a classification schema needs at least two classes")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the feature columns, in order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnSpec:
        """Return the spec of column ``name``.

        Raises:
            KeyError: If the schema has no such column.
        """
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def names_of(self, kind: ColumnKind) -> tuple[str, ...]:
        """Names of the feature columns of one kind, in schema order."""
        return tuple(c.name for c in self.columns if c.kind == kind)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict (with a format ``version``)."""
        return {
            "version": SCHEMA_VERSION,
            "columns": [c.to_dict() for c in self.columns],
            "target": self.target,
            "task": self.task,
            "classes": list(self.classes) if self.classes is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSchema:
        """Build a schema from :meth:`to_dict` output.

        Raises:
            ValueError: If the format version is not supported.
        """
        version = data.get("version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema version {version!r}")
        classes = data.get("classes")
        return cls(
            columns=tuple(ColumnSpec.from_dict(c) for c in data["columns"]),
            target=str(data["target"]),
            task=data["task"],
            classes=None if classes is None else tuple(classes),
        )

    def to_json(self) -> str:
        """Serialize to indented JSON."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> InputSchema:
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))


# eq=False: a DataFrame has no single truth value to compare with.
@dataclass(frozen=True, eq=False)
class FrameCheck:
    """Rows accepted by :func:`check_frame`.

    Attributes:
        frame: The coerced rows (see the module docstring for dtypes).
        unknown_categories: Per categorical column, how many values were not in
            ``allowed`` (columns without unknown values are left out).
    """

    frame: pd.DataFrame
    unknown_categories: Mapping[str, int] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """Turn numpy scalars into Python ones so labels survive JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def is_null_like(values: pd.Series) -> pd.Series:
    """Return a mask of missing values, counting :data:`NULL_TOKENS` strings as missing."""
    mask = values.isna()
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        mask |= values.map(lambda v: isinstance(v, str) and v.strip() in NULL_TOKENS).astype(bool)
    return mask


def parse_datetimes(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse strings written in any of :data:`DATETIME_FORMATS` (or ISO 8601).

    Args:
        values: Strings, datetime objects or ``datetime64`` values.

    Returns:
        ``(parsed, formats)``: naive ``datetime64[ns]`` values (``NaT`` where missing or
        unparseable) and, per row, the format that parsed it (``None`` if none did;
        ``"datetime64"`` for values that were already datetimes).
    """
    index = values.index
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = _naive(pd.Series(values, index=index))
        formats = pd.Series(np.where(parsed.notna(), "datetime64", None), index=index, dtype=object)
        return parsed, formats
    parsed = pd.Series(pd.NaT, index=index, dtype="datetime64[ns]")
    formats = pd.Series(None, index=index, dtype=object)
    # datetime (and so pd.Timestamp) is a subclass of date.
    is_datetime = values.map(lambda v: isinstance(v, date | np.datetime64)).astype(bool)
    if is_datetime.any():
        parsed[is_datetime] = _naive(pd.to_datetime(values[is_datetime], utc=True, errors="coerce"))
        formats[is_datetime] = "datetime64"
    text = values.where(values.map(lambda v: isinstance(v, str)).astype(bool))
    text = text.str.strip()
    todo = text.notna() & ~is_null_like(text)
    for fmt in (*DATETIME_FORMATS, ISO8601):
        if not todo.any():
            break
        attempt = pd.to_datetime(text[todo], format=fmt, errors="coerce", utc=fmt == ISO8601)
        attempt = _naive(attempt)
        ok = attempt.notna()
        if ok.any():
            hit = attempt.index[ok]
            parsed[hit] = attempt[ok]
            formats[hit] = fmt
            todo[hit] = False
    return parsed.astype("datetime64[ns]"), formats.where(formats.notna(), None)


def _naive(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.astype("datetime64[ns]")


def _looks_like_datetimes(values: pd.Series) -> bool:
    sample = values.dropna()
    if sample.empty or not sample.map(lambda v: isinstance(v, str)).all():
        return False
    sample = sample.iloc[:_DATETIME_DETECTION_SAMPLE]
    parsed, _ = parse_datetimes(sample)
    return bool(parsed.notna().mean() >= _DATETIME_DETECTION_SHARE)


def _infer_task(target: pd.Series) -> Task:
    values = target.dropna()
    if values.dtype == bool or not pd.api.types.is_numeric_dtype(values.dtype):
        return "classification"
    integral = bool(np.all(np.mod(values.to_numpy(dtype=float), 1.0) == 0.0))
    return "classification" if integral and values.nunique() <= _MAX_TASK_CLASSES else "regression"


def infer_schema(
    df: pd.DataFrame,
    target: str,
    task: Task | None = None,
    max_categories: int = 50,
    *,
    range_slack: float = 0.5,
) -> InputSchema:
    """Infer an :class:`InputSchema` from a training frame.

    Kinds: ``bool`` dtype → boolean; numeric dtypes → numeric; ``datetime64`` dtype, or
    strings of which at least 95% parse with :func:`parse_datetimes` → datetime;
    anything else → categorical. A categorical column with at most ``max_categories``
    distinct values gets them as ``allowed``; one with more gets ``allowed=None``.

    Ranges are the observed range widened by ``range_slack`` times its span on each
    side, so a later batch that drifted somewhat still fits; a column never negative in
    the data keeps ``minimum=0``. ``nullable`` is true when the column has a missing
    value in ``df``.

    Args:
        df: Training data including the target column.
        target: Name of the target column.
        task: ``classification`` or ``regression``; inferred when ``None`` (bool,
            string, or integral numbers with at most 20 distinct values →
            classification).
        max_categories: Largest number of categories listed in ``allowed``.
        range_slack: Widening of numeric ranges, as a fraction of the observed span.

    Returns:
        The schema; features keep the frame's column order.

    Raises:
        ValueError: If the target is missing or holds no values, or a classification
            target has fewer than two classes.
    """
    if target not in df.columns:
        raise ValueError(f"target column {target!r} not in frame (columns: {list(df.columns)})")
    target_values = df[target].dropna()
    if target_values.empty:
        raise ValueError(f"target column {target!r} has no values")
    resolved_task = task or _infer_task(df[target])
    classes = None
    if resolved_task == "classification":
        classes = tuple(sorted({_plain(v) for v in target_values.unique()}, key=_class_sort_key))
    specs = [
        _infer_column(str(name), df[name], max_categories, range_slack)
        for name in df.columns
        if name != target
    ]
    return InputSchema(columns=tuple(specs), target=target, task=resolved_task, classes=classes)


def _class_sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def _infer_column(name: str, values: pd.Series, max_categories: int, slack: float) -> ColumnSpec:
    nullable = bool(values.isna().any())
    if values.dtype == bool:
        return ColumnSpec(name, "boolean", nullable)
    if pd.api.types.is_numeric_dtype(values.dtype):
        finite = values.to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            return ColumnSpec(name, "numeric", nullable)
        low, high = float(finite.min()), float(finite.max())
        span = high - low
        minimum = low - slack * span
        if low >= 0:
            minimum = max(minimum, 0.0)
        return ColumnSpec(name, "numeric", nullable, minimum, high + slack * span)
    if pd.api.types.is_datetime64_any_dtype(values.dtype) or _looks_like_datetimes(values):
        return ColumnSpec(name, "datetime", nullable)
    present = values.dropna()
    distinct = sorted({str(v) for v in present.unique()})
    allowed = tuple(distinct) if len(distinct) <= max_categories else None
    return ColumnSpec(name, "categorical", nullable, allowed=allowed)


def _describe_rows(positions: Sequence[int], values: np.ndarray) -> str:
    shown = [f"row {p} ({values[p]!r})" for p in positions[:_MAX_REPORTED_ROWS]]
    more = len(positions) - _MAX_REPORTED_ROWS
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    if isinstance(value, str):
        return value.strip() in NULL_TOKENS
    return isinstance(value, float | np.floating) and math.isnan(value)


# Serving sends a handful of rows per request; plain loops over the values cost
# microseconds there, where per-column pandas operations cost milliseconds.
def _coerce_numeric(spec: ColumnSpec, position: int, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "biuf":
        numbers = values.astype(np.float64)
    else:
        numbers = np.empty(len(values), dtype=np.float64)
        bad: list[int] = []
        for i, value in enumerate(values):
            if _is_null(value):
                numbers[i] = np.nan
            elif isinstance(value, str):
                token = value.strip()
                if spec.kind == "boolean" and token in _TRUE_TOKENS:
                    numbers[i] = 1.0
                elif spec.kind == "boolean" and token in _FALSE_TOKENS:
                    numbers[i] = 0.0
                else:
                    try:
                        numbers[i] = float(token)
                    except ValueError:
                        bad.append(i)
            elif isinstance(value, int | float | np.number | np.bool_):
                numbers[i] = float(value)
            else:
                bad.append(i)
        if bad:
            raise SchemaError(
                f"column {spec.name!r} (position {position}) expects numbers; not a number at "
                f"{_describe_rows(bad, values)}"
            )
    if spec.kind == "boolean":
        not_bool = np.flatnonzero(~np.isnan(numbers) & (numbers != 0.0) & (numbers != 1.0))
        if not_bool.size:
            raise SchemaError(
                f"column {spec.name!r} (position {position}) expects booleans (0/1, true/false); "
                f"got {_describe_rows(not_bool.tolist(), values)}"
            )
    infinite = np.flatnonzero(np.isinf(numbers))
    if infinite.size:
        raise SchemaError(
            f"column {spec.name!r} (position {position}) has infinite values at "
            f"{_describe_rows(infinite.tolist(), values)}"
        )
    return numbers


def _coerce_categorical(values: np.ndarray) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        if _is_null(value):
            out[i] = np.nan
        else:
            value = _plain(value)
            out[i] = value if isinstance(value, str) else str(value)
    return out


def _parse_one_datetime(value: Any) -> np.datetime64 | None:
    if isinstance(value, date | np.datetime64):
        stamp = pd.Timestamp(value)
    elif isinstance(value, str):
        text = value.strip()
        stamp = None
        for fmt in DATETIME_FORMATS:
            try:
                stamp = pd.Timestamp(datetime.strptime(text, fmt))
                break
            except ValueError:
                continue
        if stamp is None:
            try:
                stamp = pd.Timestamp(datetime.fromisoformat(text))
            except ValueError:
                return None
    else:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_datetime64()


def _coerce_datetime(spec: ColumnSpec, position: int, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "M":
        return values.astype("datetime64[ns]")
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    bad: list[int] = []
    for i, value in enumerate(values):
        if _is_null(value):
            continue
        parsed = _parse_one_datetime(value)
        if parsed is None:
            bad.append(i)
        else:
            out[i] = parsed
    if bad:
        raise SchemaError(
            f"column {spec.name!r} (position {position}) expects dates "
            f"(e.g. 2026-01-31T12:00:00); cannot parse {_describe_rows(bad, values)}"
        )
    return out


def coerce_frame(rows: pd.DataFrame, schema: InputSchema) -> pd.DataFrame:
    """Select the schema's feature columns by name and coerce them to serving dtypes.

    Columns not in the schema (such as the target) are ignored. Unknown categories are
    kept as they are. Built for request-sized inputs (it loops over values in Python).

    Args:
        rows: A frame holding at least the schema's feature columns.
        schema: The model's input schema.

    Returns:
        A new frame with the feature columns in schema order, on the same index.

    Raises:
        SchemaError: If a column is missing, a value cannot be coerced, a value is
            infinite, or a non-nullable column has a missing value.
    """
    missing = [name for name in schema.feature_names if name not in rows.columns]
    if missing:
        raise SchemaError(f"missing columns: {missing}; expected {list(schema.feature_names)}")
    out: dict[str, np.ndarray] = {}
    for position, spec in enumerate(schema.columns):
        column = rows[spec.name]
        if isinstance(column, pd.DataFrame):
            raise SchemaError(f"column {spec.name!r} appears more than once")
        values = column.to_numpy()
        if spec.kind in ("numeric", "boolean"):
            coerced = _coerce_numeric(spec, position, values)
        elif spec.kind == "categorical":
            coerced = _coerce_categorical(values)
        else:
            coerced = _coerce_datetime(spec, position, values)
        if not spec.nullable:
            null = np.flatnonzero(pd.isna(coerced))
            if null.size:
                raise SchemaError(
                    f"column {spec.name!r} (position {position}) does not accept missing values "
                    f"(None/NaN); got {_describe_rows(null.tolist(), values)}"
                )
        out[spec.name] = coerced
    return pd.DataFrame(out, index=rows.index)


def count_unknown_categories(frame: pd.DataFrame, schema: InputSchema) -> dict[str, int]:
    """Count, per categorical column with ``allowed``, the values not in ``allowed``."""
    counts: dict[str, int] = {}
    for spec in schema.columns:
        if spec.kind != "categorical" or spec.allowed is None or spec.name not in frame:
            continue
        allowed = frozenset(spec.allowed)
        unknown = sum(
            1 for v in frame[spec.name].to_numpy() if isinstance(v, str) and v not in allowed
        )
        if unknown:
            counts[spec.name] = unknown
    return counts


def check_frame(
    rows: pd.DataFrame | np.ndarray | Sequence[Sequence[Any]],
    schema: InputSchema,
    names: Sequence[str] | None = None,
) -> FrameCheck:
    """Check incoming rows against the schema and coerce them for the served pipeline.

    Args:
        rows: A frame (its columns are the names), or a 2-D array / list of rows; a
            1-D array is read as one row.
        schema: The model's input schema.
        names: Column names sent with an array (Seldon's ``names``); ``None`` or empty
            means positional. Ignored when ``rows`` is a frame.

    Returns:
        The coerced rows and the unknown-category counts.

    Raises:
        SchemaError: If there are no rows, the width is wrong, names are missing, extra,
            duplicated or out of order, or :func:`coerce_frame` rejects a value.
    """
    expected = list(schema.feature_names)
    if isinstance(rows, pd.DataFrame):
        frame = rows
        given = [str(c) for c in rows.columns]
    else:
        array = np.asarray(rows, dtype=object)
        if array.ndim == 1 and any(isinstance(v, list | tuple | np.ndarray) for v in array):
            raise SchemaError("rows have different lengths")
        if array.ndim == 1 and array.size:
            array = array.reshape(1, -1)
        if array.size == 0:
            raise SchemaError("empty input: no rows to predict")
        if array.ndim != 2:
            raise SchemaError(f"expected a 2-D array of rows, got {array.ndim} dimensions")
        if names:
            given = [str(n) for n in names]
            if len(given) != array.shape[1]:
                raise SchemaError(
                    f"{len(given)} names given for {array.shape[1]} columns; names: {given}"
                )
        else:
            if array.shape[1] != len(expected):
                raise SchemaError(
                    f"wrong width: expected {len(expected)} columns {expected}, "
                    f"got {array.shape[1]}"
                )
            given = expected
        frame = pd.DataFrame(array, columns=given)
    if len(frame) == 0:
        raise SchemaError("empty input: no rows to predict")
    if given != expected:
        _raise_name_mismatch(given, expected)
    coerced = coerce_frame(frame, schema)
    return FrameCheck(frame=coerced, unknown_categories=count_unknown_categories(coerced, schema))


def _raise_name_mismatch(given: list[str], expected: list[str]) -> None:
    duplicated = sorted({n for n in given if given.count(n) > 1})
    missing = [n for n in expected if n not in given]
    extra = [n for n in given if n not in expected]
    problems = []
    if duplicated:
        problems.append(f"duplicated columns: {duplicated}")
    if missing:
        problems.append(f"missing columns: {missing}")
    if extra:
        problems.append(f"unexpected columns: {extra}")
    if not problems:
        first = next(i for i, (g, e) in enumerate(zip(given, expected, strict=True)) if g != e)
        problems.append(
            f"columns out of order: position {first} is {given[first]!r}, "
            f"expected {expected[first]!r}"
        )
    raise SchemaError("; ".join(problems) + f" (expected, in order: {expected})")
