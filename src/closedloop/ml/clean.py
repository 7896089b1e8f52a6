"""Fix what validation flags: types, dates, missing target, duplicates, outliers, gaps.

Steps, in this order (each recorded with its counts in a :class:`CleaningRecord`):

1. coerce types per schema: numbers that do not parse become missing, booleans
   become 0/1, categories become strings, dates in any of
   :data:`closedloop.ml.schema.DATETIME_FORMATS` become ``datetime64``;
2. drop rows whose target is missing;
3. drop exact duplicate rows (after coercion, so one timestamp written in two formats
   counts as a duplicate);
4. impute: numeric → median, boolean and categorical → most frequent value (or the
   ``missing_token`` category), datetime → median timestamp;
5. clip outliers of numeric columns: values outside the IQR fences of
   :func:`closedloop.ml.validate.outlier_bounds` (the definition validation uses)
   are moved to the ``q_low`` / ``q_high`` quantile of the values inside the fences;
   only outliers change. This runs after imputation because many imputed medians
   narrow the IQR: fences computed before would not be the ones validation sees,
   while clipping to values inside the fences leaves the quartiles, and so the
   fences, unchanged;
6. give a classification target with integral float labels an integer dtype.

The result has a fresh ``RangeIndex``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from closedloop.ml.schema import ColumnKind, InputSchema, is_null_like, parse_datetimes
from closedloop.ml.validate import outlier_bounds


@dataclass(frozen=True)
class CleanOptions:
    """What :func:`clean_dataset` does.

    Attributes:
        coerce_types: Coerce columns to their schema kinds.
        parse_dates: Parse mixed-format date strings (part of coercion).
        drop_missing_target: Drop rows without a label.
        drop_duplicates: Drop exact duplicate rows, keeping the first.
        clip_outliers: Clip IQR outliers of numeric columns.
        outlier_iqr_k: Fence multiplier, as in validation.
        q_low: Quantile of the inliers that low outliers are clipped to.
        q_high: Quantile of the inliers that high outliers are clipped to.
        impute_numeric: ``median`` or ``mean``.
        impute_categorical: ``most_frequent`` or ``missing`` (a new category).
        missing_token: The category used by ``impute_categorical="missing"``.
    """

    coerce_types: bool = True
    parse_dates: bool = True
    drop_missing_target: bool = True
    drop_duplicates: bool = True
    clip_outliers: bool = True
    outlier_iqr_k: float = 3.0
    q_low: float = 0.01
    q_high: float = 0.99
    impute_numeric: Literal["median", "mean"] = "median"
    impute_categorical: Literal["most_frequent", "missing"] = "most_frequent"
    missing_token: str = "missing"

    def __post_init__(self) -> None:
        if not 0.0 <= self.q_low < self.q_high <= 1.0:
            raise ValueError(f"need 0 <= q_low < q_high <= 1, got {self.q_low}, {self.q_high}")


@dataclass(frozen=True)
class CleaningStep:
    """One decision taken while cleaning.

    Attributes:
        action: What was done (``coerce_numeric``, ``parse_dates``, ``drop_missing_target``,
            ``drop_duplicates``, ``clip_outliers``, ``impute``, ``cast_target``).
        column: The column concerned, or ``None`` for row-wide actions.
        count: How many values or rows were affected.
        detail: The choices made (strategy, fill value, bounds, formats...).
    """

    action: str
    column: str | None
    count: int
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {
            "action": self.action,
            "column": self.column,
            "count": self.count,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class CleaningRecord:
    """Everything :func:`clean_dataset` did.

    Attributes:
        n_rows_in: Rows received.
        n_rows_out: Rows returned.
        steps: Every decision with its counts, in order.
    """

    n_rows_in: int
    n_rows_out: int
    steps: tuple[CleaningStep, ...]

    def count(self, action: str, column: str | None = None) -> int:
        """Total count of the steps with this action (and column, if given)."""
        return sum(
            s.count
            for s in self.steps
            if s.action == action and (column is None or s.column == column)
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {
            "n_rows_in": self.n_rows_in,
            "n_rows_out": self.n_rows_out,
            "steps": [s.to_dict() for s in self.steps],
        }

    def to_metrics(self) -> dict[str, float]:
        """Flat numeric metrics: rows in/out and affected counts per action."""
        metrics = {"n_rows_in": float(self.n_rows_in), "n_rows_out": float(self.n_rows_out)}
        for step in self.steps:
            key = step.action if step.column is None else f"{step.column}.{step.action}"
            metrics[key] = metrics.get(key, 0.0) + float(step.count)
        return metrics


def _json_value(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


class _Cleaner:
    def __init__(self, df: pd.DataFrame, schema: InputSchema, options: CleanOptions) -> None:
        self.df = df.copy()
        self.schema = schema
        self.options = options
        self.steps: list[CleaningStep] = []

    def record(self, action: str, column: str | None, count: int, **detail: Any) -> None:
        self.steps.append(
            CleaningStep(action, column, int(count), {k: _json_value(v) for k, v in detail.items()})
        )

    def present(self, kind: ColumnKind) -> list[str]:
        return [c for c in self.schema.names_of(kind) if c in self.df.columns]

    def numeric_present(self) -> list[str]:
        """Numeric columns that hold numbers (all of them once types are coerced)."""
        return [
            c for c in self.present("numeric") if pd.api.types.is_numeric_dtype(self.df[c].dtype)
        ]

    def coerce(self) -> None:
        for column in self.present("numeric") + self.present("boolean"):
            values = self.df[column]
            null = is_null_like(values)
            if values.dtype == object:
                values = values.map(
                    lambda v: (
                        {"true": 1.0, "false": 0.0}.get(v.strip().lower(), v)
                        if isinstance(v, str)
                        else v
                    )
                )
            numbers = pd.to_numeric(values.where(~null), errors="coerce").astype(float)
            numbers[~np.isfinite(numbers)] = np.nan
            lost = int((numbers.isna() & ~null).sum())
            self.df[column] = numbers
            self.record("coerce_numeric", column, lost, invalid_to_missing=lost)
        for column in self.present("categorical"):
            values = self.df[column]
            null = is_null_like(values)
            self.df[column] = values.map(str).where(~null, np.nan).astype(object)

    def parse_dates(self) -> None:
        for column in self.present("datetime"):
            parsed, formats = parse_datetimes(self.df[column])
            failed = int((parsed.isna() & ~is_null_like(self.df[column])).sum())
            counts = {str(k): int(v) for k, v in formats.value_counts().items()}
            self.df[column] = parsed
            self.record(
                "parse_dates",
                column,
                int(parsed.notna().sum()),
                formats=counts,
                unparseable_to_missing=failed,
            )

    def drop_missing_target(self) -> None:
        if self.schema.target not in self.df.columns:
            return
        missing = is_null_like(self.df[self.schema.target])
        self.df = self.df[~missing]
        self.record("drop_missing_target", self.schema.target, int(missing.sum()))

    def drop_duplicates(self) -> None:
        duplicated = self.df.duplicated(keep="first")
        self.df = self.df[~duplicated]
        self.record("drop_duplicates", None, int(duplicated.sum()), keep="first")

    def clip_outliers(self) -> None:
        for column in self.numeric_present():
            values = self.df[column].to_numpy(dtype=float)
            bounds = outlier_bounds(values, self.options.outlier_iqr_k)
            if bounds is None:
                self.record("clip_outliers", column, 0, reason="IQR is 0 or too few values")
                continue
            low, high = bounds
            present = ~np.isnan(values)
            inside = values[present & (values >= low) & (values <= high)]
            clip_low, clip_high = np.quantile(inside, [self.options.q_low, self.options.q_high])
            too_low = present & (values < low)
            too_high = present & (values > high)
            values = values.copy()
            values[too_low] = clip_low
            values[too_high] = clip_high
            self.df[column] = values
            self.record(
                "clip_outliers",
                column,
                int(too_low.sum() + too_high.sum()),
                fences=[low, high],
                clipped_to=[float(clip_low), float(clip_high)],
                below=int(too_low.sum()),
                above=int(too_high.sum()),
            )

    def impute(self) -> None:
        for column in self.numeric_present():
            values = self.df[column]
            missing = int(values.isna().sum())
            if not missing:
                continue
            strategy = self.options.impute_numeric
            fill = values.median() if strategy == "median" else values.mean()
            fill = 0.0 if pd.isna(fill) else float(fill)
            self.df[column] = values.fillna(fill)
            self.record("impute", column, missing, strategy=strategy, value=fill)
        for column in self.present("boolean") + self.present("categorical"):
            values = self.df[column]
            missing = int(values.isna().sum())
            if not missing:
                continue
            use_token = self.options.impute_categorical == "missing" and column in self.present(
                "categorical"
            )
            if use_token or values.notna().sum() == 0:
                strategy, fill = "missing", self.options.missing_token
            else:
                # Ties go to the smallest value, so the choice is reproducible.
                counts = values.value_counts()
                strategy, fill = "most_frequent", min(counts.index[counts == counts.max()])
            self.df[column] = values.where(values.notna(), fill)
            self.record("impute", column, missing, strategy=strategy, value=fill)
        for column in self.present("datetime"):
            values = self.df[column]
            missing = int(values.isna().sum())
            if not missing or not pd.api.types.is_datetime64_any_dtype(values.dtype):
                continue
            fill = values.median()
            self.df[column] = values.fillna(fill)
            self.record("impute", column, missing, strategy="median", value=fill)

    def cast_target(self) -> None:
        target = self.schema.target
        if self.schema.task != "classification" or target not in self.df.columns:
            return
        values = self.df[target]
        if values.dtype.kind == "f" and values.notna().all() and (values % 1 == 0).all():
            self.df[target] = values.astype(np.int64)
            self.record("cast_target", target, len(values), dtype="int64")


def clean_dataset(
    df: pd.DataFrame, schema: InputSchema, options: CleanOptions | None = None
) -> tuple[pd.DataFrame, CleaningRecord]:
    """Clean a dataset so it passes validation (see the module docstring).

    Columns not in the schema are kept untouched.

    Args:
        df: Raw rows.
        schema: The expected input schema.
        options: What to do; the defaults of :class:`CleanOptions` when ``None``.

    Returns:
        The cleaned frame and the record of every choice.
    """
    options = options or CleanOptions()
    cleaner = _Cleaner(df, schema, options)
    if options.coerce_types:
        cleaner.coerce()
    if options.parse_dates:
        cleaner.parse_dates()
    if options.drop_missing_target:
        cleaner.drop_missing_target()
    if options.drop_duplicates:
        cleaner.drop_duplicates()
    cleaner.impute()
    if options.clip_outliers:
        cleaner.clip_outliers()
    cleaner.cast_target()
    cleaned = cleaner.df.reset_index(drop=True)
    record = CleaningRecord(n_rows_in=len(df), n_rows_out=len(cleaned), steps=tuple(cleaner.steps))
    return cleaned, record
