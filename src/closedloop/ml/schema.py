"""The input contract of a model: column kinds, ranges, categories, and row checks.

This module is imported by the model server, so it depends only on the standard
library, numpy and pandas.

Serving-time rules, enforced by :func:`check_frame` / :func:`coerce_frame` (batch
inference calls the same functions):

* names, when given, must equal ``schema.feature_names`` in order; without names the
  width must match and columns are taken positionally;
* numeric and boolean columns accept numbers and numeric strings (a JSON ``ndarray``
  that mixes strings and numbers reaches the server as an array of strings), boolean
  ones also ``true``/``false``; any other string is an error;
* the tokens of :data:`NULL_TOKENS`, ``None`` and ``NaN`` mean missing;
* **serving treats a value exactly as the fitted cleaning step treated it at
  training** when the schema carries that cleaning (:attr:`ColumnSpec.fill` /
  :attr:`ColumnSpec.clip`, written by :func:`closedloop.ml.clean.fitted_schema`): a
  missing value, and a non-finite number (training's coercion turns ``±inf`` into
  missing), becomes the fill value fitted at training (numeric: median or mean;
  boolean and categorical: most frequent value or the missing token; datetime: median
  timestamp); then a numeric value outside the fitted IQR fences is clipped to the
  fitted clip targets. The shared rule is
  :func:`closedloop.ml.cleaning_rules.apply_fitted`;
* without a fitted cleaning (schemas written before it existed) ``inf`` is an error,
  and so is a missing value in a column whose spec is not ``nullable``;
* unknown categories are **accepted** and counted in :attr:`FrameCheck.unknown_categories`
  (the fitted one-hot encoder maps them to all-zeros or to its infrequent bucket), so a
  new merchant type does not take the service down; the drift detector sees them;
* datetimes must be strings that :func:`parse_datetime_value` reads (one of
  :data:`DATETIME_FORMATS`, or ISO 8601) or datetime objects; they are returned as
  naive ``datetime64[ns]``: a value with an offset in UTC, one without as it is.
  Training parses with :func:`parse_datetimes`, the same definition vectorized.

The coerced frame holds the schema's feature columns in order with these dtypes:
numeric and boolean → ``float64`` (booleans as 0.0/1.0), categorical → ``object``
(``str`` or ``NaN``), datetime → ``datetime64[ns]``. That is what the served
pipeline expects.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd

from closedloop.errors import ClosedLoopError

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
_MAX_REPORTED_ROWS = 3
_MAX_TASK_CLASSES = 20
_DATETIME_DETECTION_SHARE = 0.95
_DATETIME_DETECTION_SAMPLE = 1000


class SchemaError(ClosedLoopError, ValueError):
    """Rows do not match an :class:`InputSchema`; the message says where and why."""


@dataclass(frozen=True)
class ColumnSpec:
    """One input column of a model.

    Attributes:
        name: Column name.
        kind: ``numeric``, ``categorical``, ``datetime`` or ``boolean``.
        nullable: Whether the training data had missing values in this column.
        minimum: Lowest accepted value (numeric only), or ``None`` for no bound.
        maximum: Highest accepted value (numeric only), or ``None`` for no bound.
        allowed: Known categories (categorical only), or ``None`` for any string.
        fill: The value the fitted cleaning step puts in place of a missing value
            (see :mod:`closedloop.ml.cleaning_rules`): a ``float`` for numeric and
            boolean (0.0/1.0) columns, a ``str`` for categorical ones, an ISO string
            ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` for datetime ones; ``None`` when the
            schema carries no fitted cleaning (schemas written before it existed).
        clip: ``(low_fence, high_fence, low_to, high_to)`` fitted by the cleaning
            step (numeric only): a present value below ``low_fence`` becomes
            ``low_to``, one above ``high_fence`` becomes ``high_to``; ``None`` for no
            clipping.
    """

    name: str
    kind: ColumnKind
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] | None = None
    fill: float | str | None = None
    clip: tuple[float, float, float, float] | None = None

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
        if self.fill is not None:
            object.__setattr__(self, "fill", self._normalized_fill(self.fill))
        if self.clip is not None:
            object.__setattr__(self, "clip", self._checked_clip(self.clip))

    def _normalized_fill(self, fill: Any) -> float | str:
        if self.kind in ("numeric", "boolean"):
            number = float(fill)
            if not math.isfinite(number):
                raise ValueError(f"column {self.name!r}: fill {fill!r} is not finite")
            return number
        if self.kind == "categorical":
            return str(fill)
        parsed = parse_datetime_value(fill)
        if parsed is None:
            raise ValueError(f"column {self.name!r}: fill {fill!r} is not a date")
        return datetime_text(np.datetime64(parsed[0], "ns"))

    def _checked_clip(self, clip: Sequence[float]) -> tuple[float, float, float, float]:
        if self.kind != "numeric":
            raise ValueError(f"column {self.name!r}: only numeric columns are clipped")
        values = tuple(float(v) for v in clip)
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"column {self.name!r}: clip must be 4 finite numbers "
                f"(low_fence, high_fence, low_to, high_to), got {clip!r}"
            )
        low, high, low_to, high_to = values
        if low > high or low_to > high_to:
            raise ValueError(f"column {self.name!r}: clip {values} is not ordered")
        return low, high, low_to, high_to

    @property
    def accepts_missing(self) -> bool:
        """Whether serving accepts a missing value: it is imputed, or the column is nullable."""
        return self.nullable or self.fill is not None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict (``fill``/``clip`` only when fitted)."""
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "nullable": self.nullable,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "allowed": list(self.allowed) if self.allowed is not None else None,
        }
        if self.fill is not None:
            data["fill"] = self.fill
        if self.clip is not None:
            data["clip"] = list(self.clip)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        """Build a spec from :meth:`to_dict` output (files without ``fill``/``clip`` too)."""
        allowed = data.get("allowed")
        clip = data.get("clip")
        return cls(
            name=str(data["name"]),
            kind=data["kind"],
            nullable=bool(data.get("nullable", False)),
            minimum=None if data.get("minimum") is None else float(data["minimum"]),
            maximum=None if data.get("maximum") is None else float(data["maximum"]),
            allowed=None if allowed is None else tuple(str(v) for v in allowed),
            fill=data.get("fill"),
            clip=None if clip is None else tuple(clip),  # type: ignore[arg-type]
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

    @property
    def has_cleaning(self) -> bool:
        """Whether any column carries a fitted fill or clip."""
        return any(c.fill is not None or c.clip is not None for c in self.columns)

    def with_cleaning(
        self,
        fills: Mapping[str, float | str | None],
        clips: Mapping[str, tuple[float, float, float, float] | None],
    ) -> InputSchema:
        """Return this schema carrying a fitted cleaning, which replaces any it had.

        Args:
            fills: Fill value per column name (see :attr:`ColumnSpec.fill`); a column
                left out gets none.
            clips: ``(low_fence, high_fence, low_to, high_to)`` per numeric column; a
                column left out gets none.

        Returns:
            A new schema; everything else is unchanged.

        Raises:
            KeyError: If a name is not a feature column.
            ValueError: If a value does not suit its column's kind.
        """
        unknown = sorted((set(fills) | set(clips)) - set(self.feature_names))
        if unknown:
            raise KeyError(f"not feature columns of the schema: {unknown}")
        columns = tuple(
            replace(spec, fill=fills.get(spec.name), clip=clips.get(spec.name))
            for spec in self.columns
        )
        return replace(self, columns=columns)

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

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return len(self.frame)


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


# What a value means, defined once per value and used by training (clean, features,
# validate) and by serving (coerce_frame) alike. The vectorized entry points convert
# each distinct value of a long array once and map the results back, so they return
# exactly what the per-value functions return.

_PER_VALUE_LIMIT = 64
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_NS_PER_SECOND = 1_000_000_000
# datetime64[ns] counts int64 nanoseconds; the smallest int64 is NaT.
_MIN_NS = -(2**63) + 1
_MAX_NS = 2**63 - 1
_NAT_NS = np.iinfo(np.int64).min
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_DIRECTIVES = {
    "Y": r"(?P<year>\d{4})",
    "m": r"(?P<month>\d{1,2})",
    "d": r"(?P<day>\d{1,2})",
    "H": r"(?P<hour>\d{1,2})",
    "M": r"(?P<minute>\d{1,2})",
    "S": r"(?P<second>\d{1,2})",
    "f": r"(?P<fraction>\d{1,9})",
    "b": r"(?P<month_name>[a-z]{3})",
}
_ISO_PATTERN = re.compile(
    r"(?P<year>\d{4})"
    r"(?:-(?P<month>\d{2})-(?P<day>\d{2})"
    r"|(?P<basic_month>\d{2})(?P<basic_day>\d{2})"
    r"|-?W(?P<week>\d{2})(?:-?(?P<weekday>[1-7]))?)"
    r"(?:[T ](?P<hour>\d{2})(?::?(?P<minute>\d{2})(?::?(?P<second>\d{2})"
    r"(?:[.,](?P<fraction>\d{1,9}))?)?)?"
    r"(?P<offset>Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)


def _format_pattern(fmt: str) -> re.Pattern[str]:
    parts = []
    position = 0
    while position < len(fmt):
        char = fmt[position]
        if char == "%":
            parts.append(_DIRECTIVES[fmt[position + 1]])
            position += 2
            continue
        parts.append(r"\s+" if char.isspace() else re.escape(char))
        position += 1
    return re.compile("".join(parts), re.ASCII | re.IGNORECASE)


_FORMAT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (fmt, _format_pattern(fmt)) for fmt in DATETIME_FORMATS
)


def _stamp_ns(
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int,
    second: int,
    fraction: str | None,
    offset_minutes: int,
) -> int | None:
    if hour > 23 or minute > 59 or second > 59:
        return None
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    seconds = ((days * 24 + hour) * 60 + minute - offset_minutes) * 60 + second
    ns = seconds * _NS_PER_SECOND + (int(fraction.ljust(9, "0")) if fraction else 0)
    return ns if _MIN_NS <= ns <= _MAX_NS else None


def _from_format(match: re.Match[str]) -> int | None:
    groups = match.groupdict()
    if "month_name" in groups:
        month = _MONTHS.get(groups["month_name"].lower())
        if month is None:
            return None
    else:
        month = int(groups["month"])
    return _stamp_ns(
        int(groups["year"]),
        month,
        int(groups["day"]),
        int(groups.get("hour") or 0),
        int(groups.get("minute") or 0),
        int(groups.get("second") or 0),
        groups.get("fraction"),
        0,
    )


def _from_iso(match: re.Match[str]) -> int | None:
    groups = match.groupdict()
    year = int(groups["year"])
    if groups["week"] is not None:
        try:
            day = date.fromisocalendar(year, int(groups["week"]), int(groups["weekday"] or 1))
        except ValueError:
            return None
        year, month, day_of_month = day.year, day.month, day.day
    else:
        month = int(groups["month"] or groups["basic_month"])
        day_of_month = int(groups["day"] or groups["basic_day"])
    offset = 0
    text = groups["offset"]
    if text and text != "Z":
        digits = text[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 23 or minutes > 59:
            return None
        offset = (hours * 60 + minutes) * (1 if text[0] == "+" else -1)
    return _stamp_ns(
        year,
        month,
        day_of_month,
        int(groups["hour"] or 0),
        int(groups["minute"] or 0),
        int(groups["second"] or 0),
        groups["fraction"],
        offset,
    )


def parse_datetime_value(value: Any) -> tuple[int, str] | None:
    """What one value of a datetime column means: the one definition of a date.

    * A string (stripped) is tried against each of :data:`DATETIME_FORMATS` in order,
      as :func:`datetime.strptime` reads them except that ``%f`` keeps up to nine
      digits (nanoseconds) and ``%b`` is an English month abbreviation; then against
      ISO 8601: a calendar date ``YYYY-MM-DD`` or ``YYYYMMDD``, or a week date
      ``YYYY-Www[-D]`` / ``YYYYWww[D]`` (day 1, Monday, when left out), optionally
      followed by ``T`` or a space and ``HH[:MM[:SS[.fffffffff]]]`` (colons optional)
      and an offset ``Z``, ``±HH``, ``±HHMM`` or ``±HH:MM``. Reduced dates
      (``2026-01``), ordinal dates and hour 24 are not dates.
    * A value with an offset (a string or a timezone-aware datetime) is converted to
      UTC and made naive; a value without one is taken as it is, whatever its
      neighbours in the column carry.
    * ``datetime``, ``date`` (midnight) and ``numpy.datetime64`` values are dates.
    * Nanoseconds are kept. A date outside what ``datetime64[ns]`` holds (years
      1677-2262) is not a date.

    Missing values (:data:`NULL_TOKENS`, ``None``, ``NaN``, ``NaT``) are the caller's
    to detect first; anything else (numbers included) is not a date.

    Args:
        value: One raw value.

    Returns:
        ``(nanoseconds since 1970-01-01, format)`` where format is the matching
        entry of :data:`DATETIME_FORMATS`, :data:`ISO8601` or ``"datetime64"``; or
        ``None`` when the value is not a date.
    """
    if isinstance(value, str):
        text = value.strip()
        for fmt, pattern in _FORMAT_PATTERNS:
            match = pattern.fullmatch(text)
            if match is not None:
                ns = _from_format(match)
                if ns is not None:
                    return ns, fmt
        match = _ISO_PATTERN.fullmatch(text)
        if match is not None:
            ns = _from_iso(match)
            if ns is not None:
                return ns, ISO8601
        return None
    if isinstance(value, date | np.datetime64):
        try:
            stamp = pd.Timestamp(value)
            if stamp is pd.NaT:
                return None
            if stamp.tzinfo is not None:
                stamp = stamp.tz_convert("UTC").tz_localize(None)
            return int(stamp.as_unit("ns").value), "datetime64"
        except (ValueError, OverflowError):
            return None
    return None


def datetime_text(stamp: np.datetime64) -> str:
    """Write a naive timestamp as ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` (to the microsecond)."""
    text = np.datetime_as_string(np.datetime64(stamp, "ns").astype("datetime64[us]"), unit="us")
    return text.removesuffix(".000000")


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    if isinstance(value, str):
        return value.strip() in NULL_TOKENS
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return isinstance(value, np.datetime64) and bool(np.isnat(value))


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The distinct values and the codes mapping them back, or ``(values, None)``.

    Short arrays (a request) are converted value by value; long ones once per distinct
    value. Values that compare equal (``1``, ``1.0``, ``True``) share a code, so this is
    only for conversions that give them equal results.
    """
    if len(values) <= _PER_VALUE_LIMIT:
        return values, None
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
    except TypeError:  # an unhashable value (a list in a cell): no shortcut
        return values, None
    return np.asarray(uniques, dtype=object), codes


# "YYYY-MM-DDTHH:MM:SS" / "YYYY-MM-DD HH:MM:SS": character positions of the digits.
_PLAIN_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]


def _plain_seconds(values: np.ndarray, ns: np.ndarray, formats: np.ndarray) -> np.ndarray:
    """Parse the values written exactly ``YYYY-MM-DD[T ]HH:MM:SS[.fffffffff]`` in C.

    The four most common formats of :data:`DATETIME_FORMATS`, read as
    :func:`parse_datetime_value` reads them (same fields, same range checks, the same
    format reported) but a whole column at once; everything else is left for the
    value-by-value parser. Returns the mask of the values parsed here.
    """
    done = np.zeros(len(values), dtype=bool)
    is_text = np.fromiter((type(v) is str for v in values), dtype=bool, count=len(values))
    lengths = np.zeros(len(values), dtype=np.int64)
    lengths[is_text] = np.fromiter(map(len, values[is_text]), dtype=np.int64)
    for length in (19, *range(21, 30)):
        candidates = np.flatnonzero(lengths == length)
        if candidates.size:
            _plain_of_length(values[candidates], length, candidates, ns, formats, done)
    return done


def _plain_of_length(
    texts: np.ndarray,
    length: int,
    where: np.ndarray,
    ns: np.ndarray,
    formats: np.ndarray,
    done: np.ndarray,
) -> None:
    chars = np.asarray(texts.astype(f"U{length}")).view(np.uint32).reshape(-1, length)
    separator = chars[:, 10]
    ok = (
        (chars[:, 4] == ord("-"))
        & (chars[:, 7] == ord("-"))
        & ((separator == ord("T")) | (separator == ord(" ")))
        & (chars[:, 13] == ord(":"))
        & (chars[:, 16] == ord(":"))
    )
    fraction = np.zeros(len(texts), dtype=np.int64)
    if length > 19:
        ok &= chars[:, 19] == ord(".")
        tail = chars[:, 20:].astype(np.int64) - ord("0")
        ok &= ((tail >= 0) & (tail <= 9)).all(axis=1)
        scale = 10 ** np.arange(8, 8 - tail.shape[1], -1, dtype=np.int64)
        fraction = (np.clip(tail, 0, 9) * scale).sum(axis=1)
    digits = chars[:, _PLAIN_DIGITS].astype(np.int64) - ord("0")
    ok &= ((digits >= 0) & (digits <= 9)).all(axis=1)
    digits = np.clip(digits, 0, 9)
    year = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    month = digits[:, 4] * 10 + digits[:, 5]
    day = digits[:, 6] * 10 + digits[:, 7]
    hour = digits[:, 8] * 10 + digits[:, 9]
    minute = digits[:, 10] * 10 + digits[:, 11]
    second = digits[:, 12] * 10 + digits[:, 13]
    # Years inside what datetime64[ns] holds whole; the edges go value by value.
    ok &= (year >= 1678) & (year <= 2261) & (month >= 1) & (month <= 12)
    month_start = ((np.clip(year, 1678, 2261) - 1970) * 12 + np.clip(month, 1, 12) - 1).astype(
        "datetime64[M]"
    )
    first_day = month_start.astype("datetime64[D]")
    days_in_month = ((month_start + 1).astype("datetime64[D]") - first_day).astype(np.int64)
    ok &= (day >= 1) & (day <= days_in_month) & (hour <= 23) & (minute <= 59) & (second <= 59)
    days = first_day.astype(np.int64) + day - 1
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second
    parsed = where[ok]
    ns[parsed] = seconds[ok] * _NS_PER_SECOND + fraction[ok]
    plain, fractional = (
        (DATETIME_FORMATS[0], DATETIME_FORMATS[1])
        if length == 19
        else (DATETIME_FORMATS[2], DATETIME_FORMATS[3])
    )
    formats[parsed] = np.where(separator[ok] == ord("T"), plain, fractional)
    done[parsed] = True


def _datetime_ns(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse with :func:`parse_datetime_value`: ``(ns with NaT, formats, not-a-date mask)``."""
    distinct, codes = _distinct(values)
    ns = np.full(len(distinct), _NAT_NS, dtype=np.int64)
    formats = np.full(len(distinct), None, dtype=object)
    bad = np.zeros(len(distinct), dtype=bool)
    done = np.zeros(len(distinct), dtype=bool)
    if len(distinct) > _PER_VALUE_LIMIT:
        done = _plain_seconds(distinct, ns, formats)
    for i, value in enumerate(distinct):
        if done[i] or _is_null(value):
            continue
        parsed = parse_datetime_value(value)
        if parsed is None:
            bad[i] = True
        else:
            ns[i], formats[i] = parsed
    if codes is not None:
        ns, formats, bad = ns[codes], formats[codes], bad[codes]
    return ns.view("datetime64[ns]"), formats, bad


def parse_datetimes(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse a column value by value with :func:`parse_datetime_value`.

    The vectorized form of the one definition of a date: training (cleaning, the
    feature step, validation) calls this, serving calls the per-value function, and
    both give the same timestamp for the same value.

    Args:
        values: Strings, datetime objects or ``datetime64`` values.

    Returns:
        ``(parsed, formats)``: naive ``datetime64[ns]`` values (``NaT`` where missing or
        not a date) and, per row, the format that parsed it (``None`` if none did;
        ``"datetime64"`` for values that were already datetimes).
    """
    index = values.index
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = _naive(pd.Series(values, index=index))
        formats = pd.Series(np.where(parsed.notna(), "datetime64", None), index=index, dtype=object)
        return parsed, formats
    ns, formats, _ = _datetime_ns(values.to_numpy(dtype=object))
    return pd.Series(ns, index=index), pd.Series(formats, index=index, dtype=object)


def _naive(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.astype("datetime64[ns]")


def _number(value: Any, boolean: bool) -> float | None:
    """What one value of a numeric or boolean column means: a float, NaN, or ``None``.

    Numbers and numeric strings are floats (an integer too large for a float is
    infinite); in a boolean column ``true``/``false`` in any case are 1.0/0.0;
    missing values are NaN; anything else is ``None`` (not a number).
    """
    if isinstance(value, str):
        token = value.strip()
        if token in NULL_TOKENS:
            return math.nan
        if boolean:
            word = token.lower()
            if word == "true":
                return 1.0
            if word == "false":
                return 0.0
        if "_" in token:  # float() reads "1_000"; a data file does not mean that
            return None
        try:
            return float(token)
        except ValueError:
            return None
    if isinstance(value, bool | np.bool_ | float | np.floating):
        return float(value)
    if isinstance(value, int | np.integer):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if value is None or value is pd.NA or value is pd.NaT:
        return math.nan
    return None


def coerce_numbers(values: np.ndarray, boolean: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Coerce a numeric or boolean column value by value (see :func:`_number`).

    Args:
        values: Raw values of one column.
        boolean: Whether the column is boolean (``true``/``false`` words accepted).

    Returns:
        ``(numbers, not_a_number)``: ``float64`` values (NaN where missing or not a
        number, ``±inf`` kept) and the mask of values that are not numbers.
    """
    if values.dtype.kind in "biuf":
        return values.astype(np.float64), np.zeros(len(values), dtype=bool)
    distinct, codes = _distinct(np.asarray(values, dtype=object))
    results = [_number(value, boolean) for value in distinct]
    bad = np.fromiter((r is None for r in results), dtype=bool, count=len(results))
    numbers = np.fromiter(
        (math.nan if r is None else r for r in results), dtype=np.float64, count=len(results)
    )
    if codes is not None:
        numbers, bad = numbers[codes], bad[codes]
    return numbers, bad


def category_text(value: Any) -> Any:
    """What one value of a categorical column means: its text, or NaN when missing."""
    if _is_null(value):
        return np.nan
    value = _plain(value)
    return value if isinstance(value, str) else str(value)


def coerce_categories(values: np.ndarray) -> np.ndarray:
    """Coerce a categorical column value by value with :func:`category_text`."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = category_text(value)
    return out


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
    texts = {category_text(v) for v in values.dropna().unique()}
    distinct = sorted(t for t in texts if isinstance(t, str))
    allowed = tuple(distinct) if len(distinct) <= max_categories else None
    return ColumnSpec(name, "categorical", nullable, allowed=allowed)


def _describe_rows(positions: Sequence[int], values: np.ndarray) -> str:
    shown = [f"row {p} ({values[p]!r})" for p in positions[:_MAX_REPORTED_ROWS]]
    more = len(positions) - _MAX_REPORTED_ROWS
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def coerce_frame(rows: pd.DataFrame, schema: InputSchema) -> pd.DataFrame:
    """Select the schema's feature columns by name, check them and apply the fitted cleaning.

    Columns not in the schema (such as the target) are ignored. The checks are the model
    server's (:class:`closedloop.ml.rowplan.RowPlan`), refusing the whole frame when a
    row is refused.

    Returns:
        A new frame with the feature columns in schema order, on the same index.

    Raises:
        SchemaError: If a column is missing or a row is refused (the message names up
            to three rows and why).
    """
    from closedloop.ml.rowplan import RowPlan  # it builds on this module

    checked = RowPlan(schema).check_frame(rows)
    checked.raise_for_errors()
    frame = checked.frame
    frame.index = rows.index
    return frame


def check_frame(
    rows: pd.DataFrame | np.ndarray | Sequence[Sequence[Any]],
    schema: InputSchema,
    names: Sequence[str] | None = None,
) -> FrameCheck:
    """Check incoming rows against the schema and coerce them for the served pipeline.

    The model server's own check (:class:`closedloop.ml.rowplan.RowPlan`), refusing the
    whole input when a row is refused; batch inference uses the plan directly to keep
    the other rows.

    Args:
        rows: A frame (its columns are the names), or a 2-D array / list of rows; a
            1-D array or list is read as one row.
        schema: The model's input schema.
        names: Column names sent with an array (Seldon's ``names``); ``None`` or empty
            means positional. Ignored when ``rows`` is a frame.

    Returns:
        The coerced rows and the unknown-category counts.

    Raises:
        SchemaError: If there are no rows, the width is wrong, names are missing, extra,
            duplicated or out of order, or a row is refused.
    """
    from closedloop.ml.rowplan import RowPlan  # it builds on this module

    plan = RowPlan(schema)
    if isinstance(rows, pd.DataFrame):
        given = [str(c) for c in rows.columns]
        if given != plan.expected:
            _raise_name_mismatch(given, plan.expected)
        checked = plan.check_frame(rows)
    elif isinstance(rows, np.ndarray):
        checked = plan.check_array(rows, names)
    else:
        listed = list(rows)
        if listed and not isinstance(listed[0], list | tuple | np.ndarray):
            listed = [listed]
        checked = plan.check_rows(listed, names)
    checked.raise_for_errors()
    frame = checked.frame
    if isinstance(rows, pd.DataFrame):
        frame.index = rows.index
    return FrameCheck(frame=frame, unknown_categories=dict(checked.unknown_categories))


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
