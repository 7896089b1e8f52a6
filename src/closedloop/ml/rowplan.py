"""The row contract: one check for incoming rows, shared by the server, batch inference and the sidecar.

A :class:`RowPlan` is compiled once per schema (once per loaded model version). It
takes rows as they arrive — JSON rows with optional names, JSON records, a 2-D array,
or a DataFrame — and returns :class:`CheckedRows`: the values every later step uses,
without building a DataFrame on the way (a one-row request costs microseconds).

What a value means is defined once, value by value, in :mod:`closedloop.ml.schema`
(numbers, categories and dates, training and serving alike). On top of that, each row
goes through the rule the fitted cleaning step applied at training (see
:mod:`closedloop.ml.cleaning_rules` and the schema's ``fill`` / ``clip``):

1. a missing value, or a non-finite number, becomes the column's fitted fill value;
   without one it is accepted as missing when the column is ``nullable`` and refused
   otherwise;
2. a numeric value outside the fitted IQR fences is clipped to the fitted targets,
   then one still outside the schema's ``[minimum, maximum]`` is clipped to it (ranges
   are inferred from the training data, so this changes nothing training saw; it
   keeps ``-1e308`` out of a column whose minimum is 0 without refusing drifted rows);
3. a row is **refused** when a value is not of its column's kind (a word in a numeric
   column, a boolean other than 0/1, a string that is not a date), or is missing where
   nothing fills it.

Refusals are per row: :meth:`CheckedRows.errors` names each refused row, its column and
the reason. The server answers a request with a refused row with a 400 that says so
(:meth:`CheckedRows.raise_for_errors`); batch inference scores the other rows and
reports the refused ones; the drift sidecar keeps refused rows out of its windows and
counts them by reason (:data:`REASONS`).

Unknown categories are accepted and counted (the fitted encoder maps them to all-zeros
or to its infrequent bucket).

This module is imported by the model server: numpy, pandas and the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from closedloop.ml.cleaning_rules import NumericRule, apply_fitted
from closedloop.ml.schema import (
    InputSchema,
    SchemaError,
    _datetime_ns,
    _is_null,
    _number,
    _raise_name_mismatch,
    category_text,
    coerce_numbers,
    parse_datetime_value,
)

REASON_MISSING = "missing"
REASON_NOT_A_NUMBER = "not_a_number"
REASON_NOT_A_BOOLEAN = "not_a_boolean"
REASON_NOT_A_DATE = "not_a_date"
REASON_INFINITE = "infinite"
REASONS: tuple[str, ...] = (
    REASON_MISSING,
    REASON_NOT_A_NUMBER,
    REASON_NOT_A_BOOLEAN,
    REASON_NOT_A_DATE,
    REASON_INFINITE,
)
_REASON_TEXT = {
    REASON_MISSING: "does not accept missing values (None/NaN)",
    REASON_NOT_A_NUMBER: "expects numbers",
    REASON_NOT_A_BOOLEAN: "expects booleans (0/1, true/false)",
    REASON_NOT_A_DATE: "expects dates (e.g. 2026-01-31T12:00:00)",
    REASON_INFINITE: "has an infinite value",
}
# Requests up to this many rows are coerced value by value (no numpy per column).
_PER_VALUE_ROWS = 64
_MAX_SHOWN = 3
_ROW_TYPES = frozenset({list, tuple, np.ndarray})
_NAT = np.iinfo(np.int64).min


@dataclass(frozen=True)
class RowError:
    """One refused row.

    Attributes:
        row: Position of the row in the input (0-based).
        column: The first column that refused it.
        reason: One of :data:`REASONS`.
        value: The value as it was sent (``repr``, shortened).
        position: The column's position in the schema.
    """

    row: int
    column: str
    reason: str
    value: str
    position: int = -1

    def describe(self) -> str:
        """One line: row, column (and its position), what was wrong."""
        where = f" (position {self.position})" if self.position >= 0 else ""
        return (
            f"row {self.row}: column {self.column!r}{where} {_REASON_TEXT[self.reason]}; "
            f"got {self.value}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {
            "row": self.row,
            "column": self.column,
            "position": self.position,
            "reason": self.reason,
            "value": self.value,
        }


@dataclass(frozen=True, eq=False)
class CheckedRows:
    """Rows after :class:`RowPlan`: coerced, cleaned as at training, refused rows named.

    Attributes:
        schema: The schema they were checked against.
        numeric: ``(n, k)`` float64 block of the numeric and boolean columns, in
            :attr:`RowPlan.numeric_names` order (NaN only where a nullable column
            without a fill had a missing value).
        categorical: Per categorical column, an object array of ``str`` or NaN.
        datetime: Per datetime column, ``datetime64[ns]`` values (NaT when missing).
        unknown_categories: Per categorical column with ``allowed``, how many values
            were not in it (columns with none are left out).
        errors: The refused rows, in row order (one error per row).
    """

    schema: InputSchema
    numeric_names: tuple[str, ...]
    numeric: np.ndarray
    categorical: Mapping[str, np.ndarray]
    datetime: Mapping[str, np.ndarray]
    unknown_categories: Mapping[str, int] = field(default_factory=dict)
    errors: tuple[RowError, ...] = ()

    @property
    def n_rows(self) -> int:
        """Number of rows (refused ones included until :meth:`accepted`)."""
        return int(self.numeric.shape[0])

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The rows as the served pipeline's frame (schema order, serving dtypes)."""
        position = {name: j for j, name in enumerate(self.numeric_names)}
        columns: dict[str, np.ndarray] = {}
        for spec in self.schema.columns:
            if spec.kind in ("numeric", "boolean"):
                columns[spec.name] = self.numeric[:, position[spec.name]]
            elif spec.kind == "categorical":
                columns[spec.name] = self.categorical[spec.name]
            else:
                columns[spec.name] = self.datetime[spec.name]
        return pd.DataFrame(columns)

    def slice(self, start: int, stop: int) -> CheckedRows:
        """Rows ``start:stop`` (their errors and unknown counts are not carried)."""
        return CheckedRows(
            self.schema,
            self.numeric_names,
            self.numeric[start:stop],
            {k: v[start:stop] for k, v in self.categorical.items()},
            {k: v[start:stop] for k, v in self.datetime.items()},
        )

    def raise_for_errors(self) -> None:
        """Refuse the whole input if a row was refused (what the server does).

        Raises:
            SchemaError: Naming up to three refused rows and how many more there are.
        """
        if not self.errors:
            return
        shown = "; ".join(e.describe() for e in self.errors[:_MAX_SHOWN])
        more = len(self.errors) - _MAX_SHOWN
        raise SchemaError(shown + (f"; and {more} more rows" if more > 0 else ""))

    def accepted(self) -> tuple[CheckedRows, np.ndarray]:
        """The rows that were not refused, and their positions in the input."""
        keep = np.ones(self.n_rows, dtype=bool)
        keep[[e.row for e in self.errors]] = False
        positions = np.flatnonzero(keep)
        if not self.errors:
            return self, positions
        checked = CheckedRows(
            self.schema,
            self.numeric_names,
            self.numeric[keep],
            {k: v[keep] for k, v in self.categorical.items()},
            {k: v[keep] for k, v in self.datetime.items()},
            _count_unknown(self.schema, {k: v[keep] for k, v in self.categorical.items()}),
            (),
        )
        return checked, positions

    def refusals_by_reason(self) -> dict[str, int]:
        """How many rows were refused, per reason."""
        counts: dict[str, int] = {}
        for error in self.errors:
            counts[error.reason] = counts.get(error.reason, 0) + 1
        return counts


def _shown(value: Any) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 40 else text[:37] + "..."


class RowPlan:
    """The checks of one schema, compiled once (see the module docstring).

    Args:
        schema: The model's input schema (with its fitted cleaning, when it has one).
    """

    def __init__(self, schema: InputSchema) -> None:
        self.schema = schema
        self.expected = list(schema.feature_names)
        specs = [*(c for c in schema.columns if c.kind == "numeric")]
        specs += [c for c in schema.columns if c.kind == "boolean"]
        self._numeric_specs = specs
        # The feature step's numeric block order (closedloop.ml.features.make_features).
        self.numeric_names = tuple(s.name for s in specs)
        self._position = {name: i for i, name in enumerate(self.expected)}
        self._numeric_positions = [self._position[s.name] for s in specs]
        self._boolean = np.array([s.kind == "boolean" for s in specs], dtype=bool)
        self._rule = NumericRule(specs)
        self._nullable = np.array([s.nullable for s in specs], dtype=bool)
        self._categorical = [c for c in schema.columns if c.kind == "categorical"]
        self._allowed = {
            c.name: frozenset(c.allowed) for c in self._categorical if c.allowed is not None
        }
        self._datetime = [c for c in schema.columns if c.kind == "datetime"]

    # -- entry points ---------------------------------------------------------------
    def check_rows(
        self, rows: Sequence[Sequence[Any]], names: Sequence[str] | None = None
    ) -> CheckedRows:
        """Check rows of JSON values (``data.ndarray`` / ``tensor``), named or positional.

        Raises:
            SchemaError: No rows, a wrong width, or names that are missing, extra,
                duplicated or out of order (value problems are :attr:`CheckedRows.errors`).
        """
        if not rows:
            raise SchemaError("empty input: no rows to predict")
        if not set(map(type, rows)) <= _ROW_TYPES:
            raise SchemaError("rows have different lengths: expected one array per row")
        width = len(rows[0])
        if any(isinstance(value, list | tuple | np.ndarray) for value in rows[0]):
            raise SchemaError("expected a 2-D array of rows, got 3 dimensions")
        if len(set(map(len, rows))) != 1:
            raise SchemaError("rows have different lengths")
        self._check_names(width, names)
        return self._check_columns([list(column) for column in zip(*rows, strict=True)])

    def check_records(self, records: Sequence[Mapping[str, Any]]) -> CheckedRows:
        """Check ``jsonData`` records (each must hold exactly the schema's columns).

        Raises:
            SchemaError: No records, or a record lacks a column or has an extra one.
        """
        if not records:
            raise SchemaError("empty input: no records to predict")
        known = set(self.expected)
        for i, record in enumerate(records):
            if len(record) != len(self.expected) or not known.issuperset(record):
                missing = [n for n in self.expected if n not in record]
                extra = [n for n in record if n not in known]
                problems = []
                if missing:
                    problems.append(f"missing columns {missing[:_MAX_SHOWN]}")
                if extra:
                    problems.append(f"unexpected columns {extra[:_MAX_SHOWN]}")
                raise SchemaError(
                    f"jsonData[{i}]: {' and '.join(problems)}; the model takes {self.expected}"
                )
        return self._check_columns([[r[name] for r in records] for name in self.expected])

    def check_array(self, array: np.ndarray, names: Sequence[str] | None = None) -> CheckedRows:
        """Check a 2-D array of rows (a 1-D array is one row).

        Raises:
            SchemaError: As :meth:`check_rows`.
        """
        array = (
            np.asarray(array) if isinstance(array, np.ndarray) else np.asarray(array, dtype=object)
        )
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.size == 0 or array.ndim != 2:
            raise SchemaError(
                "empty input: no rows to predict"
                if array.size == 0
                else f"expected a 2-D array of rows, got {array.ndim} dimensions"
            )
        self._check_names(array.shape[1], names)
        return self._check_columns([array[:, j] for j in range(array.shape[1])])

    def check_frame(self, frame: pd.DataFrame) -> CheckedRows:
        """Check a frame holding at least the schema's columns (others are ignored).

        Raises:
            SchemaError: A column is missing or appears twice, or there are no rows.
        """
        missing = [name for name in self.expected if name not in frame.columns]
        if missing:
            raise SchemaError(f"missing columns: {missing}; expected {self.expected}")
        if len(frame) == 0:
            raise SchemaError("empty input: no rows to predict")
        columns = []
        for name in self.expected:
            column = frame[name]
            if isinstance(column, pd.DataFrame):
                raise SchemaError(f"column {name!r} appears more than once")
            columns.append(column.to_numpy())
        return self._check_columns(columns)

    # -- the checks -----------------------------------------------------------------
    def _check_names(self, width: int, names: Sequence[str] | None) -> None:
        if names:
            given = [str(n) for n in names]
            if len(given) != width:
                raise SchemaError(f"{len(given)} names given for {width} columns; names: {given}")
            if given != self.expected:
                _raise_name_mismatch(given, self.expected)
        elif width != len(self.expected):
            raise SchemaError(
                f"wrong width: expected {len(self.expected)} columns {self.expected}, got {width}"
            )

    def _check_columns(self, columns: Sequence[Any]) -> CheckedRows:
        n = len(columns[0])
        small = n <= _PER_VALUE_ROWS
        bad_rows: dict[int, RowError] = {}

        def refuse(rows: Any, column: str, reason: str, raw: Any) -> None:
            for i in np.atleast_1d(rows).tolist():
                if i not in bad_rows:
                    position = self._position[column]
                    bad_rows[i] = RowError(i, column, reason, _shown(raw[i]), position)

        if n == 1:
            numeric = self._numeric_one(columns, refuse)
        else:
            numeric = self._numeric_block(columns, small, refuse)

        categorical: dict[str, np.ndarray] = {}
        for spec in self._categorical:
            raw = columns[self._position[spec.name]]
            values = _category_texts(raw, small)
            if small and all(type(v) is str for v in values.tolist()):
                pass  # nothing missing: a request's usual case, no array work
            elif spec.fill is not None:
                values = apply_fitted(spec, values)
            elif not spec.nullable:
                missing = np.fromiter((not isinstance(v, str) for v in values), bool, count=n)
                refuse(np.flatnonzero(missing), spec.name, REASON_MISSING, raw)
            categorical[spec.name] = values

        datetimes: dict[str, np.ndarray] = {}
        for spec in self._datetime:
            raw = columns[self._position[spec.name]]
            if isinstance(raw, np.ndarray) and raw.dtype.kind == "M":
                stamps = raw.astype("datetime64[ns]")
            elif small:
                ns = np.empty(n, dtype=np.int64)
                for i, value in enumerate(raw):
                    if _is_null(value):
                        ns[i] = _NAT
                        continue
                    parsed = parse_datetime_value(value)
                    if parsed is None:
                        ns[i] = _NAT
                        refuse(i, spec.name, REASON_NOT_A_DATE, raw)
                    else:
                        ns[i] = parsed[0]
                stamps = ns.view("datetime64[ns]")
            else:
                stamps, _, not_date = _datetime_ns(np.asarray(raw, dtype=object))
                stamps = np.array(stamps)
                refuse(np.flatnonzero(not_date), spec.name, REASON_NOT_A_DATE, raw)
            missing = np.isnat(stamps)
            if missing.any():
                if spec.fill is not None:
                    stamps = apply_fitted(spec, stamps)
                elif not spec.nullable:
                    not_dates = {e.row for e in bad_rows.values() if e.column == spec.name}
                    refuse(
                        [i for i in np.flatnonzero(missing).tolist() if i not in not_dates],
                        spec.name,
                        REASON_MISSING,
                        raw,
                    )
            datetimes[spec.name] = stamps

        errors = tuple(bad_rows[i] for i in sorted(bad_rows))
        return CheckedRows(
            self.schema,
            self.numeric_names,
            numeric,
            categorical,
            datetimes,
            _count_unknown(self.schema, categorical, self._allowed),
            errors,
        )

    def _numeric_block(self, columns: Sequence[Any], small: bool, refuse: Any) -> np.ndarray:
        n = len(columns[0])
        numeric = np.empty((n, len(self._numeric_specs)), dtype=np.float64)
        not_number = np.zeros((n, len(self._numeric_specs)), dtype=bool)
        for j, (spec, position) in enumerate(
            zip(self._numeric_specs, self._numeric_positions, strict=True)
        ):
            raw = columns[position]
            boolean = spec.kind == "boolean"
            if small:
                for i, value in enumerate(raw):
                    number = _number(value, boolean)
                    if number is None:
                        not_number[i, j] = True
                        numeric[i, j] = np.nan
                    else:
                        numeric[i, j] = number
            else:
                numeric[:, j], not_number[:, j] = coerce_numbers(np.asarray(raw), boolean)
        numeric, reasons = self._clean_numeric(numeric, not_number)
        if reasons is not None:
            for j, spec in enumerate(self._numeric_specs):
                column_reasons = reasons[:, j]
                for i in np.flatnonzero(column_reasons).tolist():
                    refuse(
                        i,
                        spec.name,
                        REASONS[column_reasons[i] - 1],
                        columns[self._numeric_positions[j]],
                    )
        return numeric

    def _numeric_one(self, columns: Sequence[Any], refuse: Any) -> np.ndarray:
        """:meth:`_numeric_block` for a single row, in plain Python (same decisions)."""
        raws = [columns[position][0] for position in self._numeric_positions]
        numbers = [
            _number(raw, spec.kind == "boolean")
            for raw, spec in zip(raws, self._numeric_specs, strict=True)
        ]
        row = [math.nan if number is None else number for number in numbers]
        cleaned = self._rule.apply_one(row)
        for j, (spec, number, value) in enumerate(
            zip(self._numeric_specs, numbers, cleaned, strict=True)
        ):
            if number is None:
                reason = REASON_NOT_A_NUMBER
            elif not math.isfinite(number) and spec.fill is None:
                if math.isnan(number):
                    if spec.nullable:
                        continue
                    reason = REASON_MISSING
                else:
                    reason = REASON_INFINITE
            elif spec.kind == "boolean" and value not in (0.0, 1.0) and value == value:
                reason = REASON_NOT_A_BOOLEAN
            else:
                continue
            cleaned[j] = math.nan
            refuse(0, spec.name, reason, [raws[j]])
        return np.array([cleaned], dtype=np.float64).reshape(1, len(self._numeric_specs))

    def _clean_numeric(
        self, numeric: np.ndarray, not_number: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Apply fill, clips and the kind checks to the numeric block at once.

        Returns:
            The cleaned block and, when something was refused, a matrix of reason
            codes (index into :data:`REASONS` plus one; 0 for none).
        """
        infinite = np.isinf(numeric)
        missing = np.isnan(numeric) & ~not_number
        numeric = self._rule.apply(numeric)
        absent = (missing | infinite) & ~self._rule.has_fill
        codes = np.zeros(numeric.shape, dtype=np.int8)
        problem = not_number.any()
        # Still missing or infinite without a fill: kept as missing where the column
        # is nullable (no fill: an old schema), refused otherwise.
        if absent.any():
            refused_missing = missing & absent & ~self._nullable
            refused_infinite = infinite & absent
            codes[refused_missing] = REASONS.index(REASON_MISSING) + 1
            codes[refused_infinite] = REASONS.index(REASON_INFINITE) + 1
            numeric = np.where(infinite & absent, np.nan, numeric)
            problem = problem or bool(refused_missing.any() or refused_infinite.any())
        not_boolean = self._boolean & (numeric != 0.0) & (numeric != 1.0) & ~np.isnan(numeric)
        if not_boolean.any():
            codes[not_boolean] = REASONS.index(REASON_NOT_A_BOOLEAN) + 1
            problem = True
        codes[not_number] = REASONS.index(REASON_NOT_A_NUMBER) + 1
        if not problem:
            return numeric, None
        numeric = np.where(codes > 0, np.nan, numeric)
        return numeric, codes


def _category_texts(raw: Any, small: bool) -> np.ndarray:
    """:func:`closedloop.ml.schema.category_text` of every value (NaN when missing).

    A long column of strings is converted once per distinct value; any other column
    value by value (``1``, ``1.0`` and ``True`` compare equal but are not one text).
    """
    values = np.asarray(raw, dtype=object)
    if not small and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        texts = np.empty(len(uniques), dtype=object)
        texts[:] = [category_text(u) for u in uniques]
        return texts[codes]
    out = np.empty(len(values), dtype=object)
    out[:] = [category_text(v) for v in values]
    return out


def _count_unknown(
    schema: InputSchema,
    categorical: Mapping[str, np.ndarray],
    allowed_sets: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for spec in schema.columns:
        if spec.kind != "categorical" or spec.allowed is None:
            continue
        values = categorical[spec.name]
        allowed = (allowed_sets or {}).get(spec.name) or frozenset(spec.allowed)
        if len(values) > _PER_VALUE_ROWS:
            codes, uniques = pd.factorize(values)
            unknown_code = np.array(
                [isinstance(u, str) and u not in allowed for u in uniques], dtype=bool
            )
            unknown = int(unknown_code[codes[codes >= 0]].sum())
        else:
            unknown = sum(1 for v in values if isinstance(v, str) and v not in allowed)
        if unknown:
            counts[spec.name] = unknown
    return counts
