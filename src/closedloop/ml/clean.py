"""Fix what validation flags: types, dates, missing target, duplicates, outliers, gaps.

Steps, in this order (each recorded with its counts in a :class:`CleaningRecord`):

1. coerce types per schema with the value rules serving uses
   (:func:`closedloop.ml.schema.coerce_numbers`, ``category_text``,
   ``parse_datetimes``): numbers that do not parse and ``±inf`` become missing,
   booleans become 0/1, categories become strings, dates in any of
   :data:`closedloop.ml.schema.DATETIME_FORMATS` (or ISO 8601) become ``datetime64``
   and unparseable ones missing;
2. drop rows whose target is missing;
3. drop exact duplicate rows (after coercion, so one timestamp written in two formats
   counts as a duplicate);
4. impute: a fill value is fitted for **every** column of the schema, whether or not
   it has missing values here (a missing value at serving gets it): numeric → median
   (or mean), boolean and categorical → most frequent value (or the ``missing_token``
   category), datetime → median timestamp (to the microsecond);
5. clip outliers of numeric columns: values outside the IQR fences of
   :func:`closedloop.ml.validate.outlier_bounds` (the definition validation uses)
   are moved to the ``q_low`` / ``q_high`` quantile of the values inside the fences;
   only outliers change. This runs after imputation because many imputed medians
   narrow the IQR: fences computed before would not be the ones validation sees,
   while clipping to values inside the fences leaves the quartiles, and so the
   fences, unchanged;
6. give a classification target with integral float labels an integer dtype.

Steps 4 and 5 are applied with :func:`closedloop.ml.cleaning_rules.apply_fitted`, the
function serving and batch inference apply, and the fitted values (fills, fences and
clip targets) are kept in the record: :func:`fitted_schema` writes them into the schema
that is served, and :func:`apply_cleaning` applies them to new raw rows. So a value at
serving is treated exactly as this step treated it at training.

The result has a fresh ``RangeIndex``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from closedloop.ml.cleaning_rules import apply_fitted
from closedloop.ml.schema import (
    ColumnKind,
    ColumnSpec,
    InputSchema,
    coerce_categories,
    coerce_numbers,
    datetime_text,
    is_null_like,
    parse_datetimes,
)
from closedloop.ml.validate import outlier_bounds

Fill = float | str
Clip = tuple[float, float, float, float]


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
    """Everything :func:`clean_dataset` did, and the cleaning it fitted.

    Attributes:
        n_rows_in: Rows received.
        n_rows_out: Rows returned.
        steps: Every decision with its counts, in order.
        fills: The fill value fitted per column (see
            :attr:`closedloop.ml.schema.ColumnSpec.fill`), for every column it could
            fit one for, whether or not the column had missing values.
        clips: ``(low_fence, high_fence, low_to, high_to)`` per clipped numeric column.
    """

    n_rows_in: int
    n_rows_out: int
    steps: tuple[CleaningStep, ...]
    fills: Mapping[str, Fill] = field(default_factory=dict)
    clips: Mapping[str, Clip] = field(default_factory=dict)

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
        # The fitted cleaning per column; schema.fill/clip are ignored: this refits them.
        self.fitted: dict[str, ColumnSpec] = {}

    def record(self, action: str, column: str | None, count: int, **detail: Any) -> None:
        self.steps.append(
            CleaningStep(action, column, int(count), {k: _json_value(v) for k, v in detail.items()})
        )

    def present(self, kind: ColumnKind) -> list[str]:
        return [c for c in self.schema.names_of(kind) if c in self.df.columns]

    def numeric_present(self, kind: ColumnKind = "numeric") -> list[str]:
        """Numeric (or boolean) columns that hold numbers (all of them once types are coerced)."""
        return [c for c in self.present(kind) if pd.api.types.is_numeric_dtype(self.df[c].dtype)]

    def coerce(self) -> None:
        for kind in ("numeric", "boolean"):
            for column in self.present(kind):
                numbers, bad = coerce_numbers(self.df[column].to_numpy(), boolean=kind == "boolean")
                # Not a number (already NaN) and ±inf alike become missing.
                infinite = np.isinf(numbers)
                numbers[infinite] = np.nan
                lost = int((bad | infinite).sum())
                self.df[column] = numbers
                self.record("coerce_numeric", column, lost, invalid_to_missing=lost)
        for column in self.present("categorical"):
            self.df[column] = coerce_categories(self.df[column].to_numpy())

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

    def fit(self, column: str, **cleaning: Any) -> None:
        """Add to the fitted cleaning of a column and apply all of it, as serving will."""
        spec = self.fitted.get(column) or replace(self.schema.column(column), fill=None, clip=None)
        self.fitted[column] = replace(spec, **cleaning)
        self.df[column] = apply_fitted(self.fitted[column], self.df[column].to_numpy())

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
            self.fit(column, clip=(low, high, float(clip_low), float(clip_high)))
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
            strategy = self.options.impute_numeric
            fill = values.median() if strategy == "median" else values.mean()
            fill = 0.0 if pd.isna(fill) else float(fill)
            self.fit(column, fill=fill)
            if missing:
                self.record("impute", column, missing, strategy=strategy, value=fill)
        booleans = self.numeric_present("boolean")
        for column in booleans + self.present("categorical"):
            values = self.df[column]
            missing = int(values.isna().sum())
            boolean = column in booleans
            if values.notna().sum() == 0 and boolean:
                strategy, fill = "constant", 0.0
            elif (self.options.impute_categorical == "missing" and not boolean) or (
                values.notna().sum() == 0
            ):
                strategy, fill = "missing", self.options.missing_token
            else:
                # Ties go to the smallest value, so the choice is reproducible.
                counts = values.value_counts()
                strategy, fill = "most_frequent", min(counts.index[counts == counts.max()])
            self.fit(column, fill=fill)
            if missing:
                self.record("impute", column, missing, strategy=strategy, value=fill)
        for column in self.present("datetime"):
            values = self.df[column]
            if not pd.api.types.is_datetime64_any_dtype(values.dtype) or values.notna().sum() == 0:
                continue
            missing = int(values.isna().sum())
            # To the microsecond: the fill is written into the schema as ISO text.
            fill = datetime_text(values.median().to_datetime64())
            self.fit(column, fill=fill)
            if missing:
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

    Columns not in the schema are kept untouched. A fitted cleaning the schema may
    carry (e.g. the champion's) is ignored: this fits its own, which is in the record.

    Args:
        df: Raw rows.
        schema: The expected input schema.
        options: What to do; the defaults of :class:`CleanOptions` when ``None``.

    Returns:
        The cleaned frame and the record of every choice, with the fitted cleaning
        (pass it to :func:`fitted_schema` for the schema to serve).
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
    record = CleaningRecord(
        n_rows_in=len(df),
        n_rows_out=len(cleaned),
        steps=tuple(cleaner.steps),
        fills={n: s.fill for n, s in cleaner.fitted.items() if s.fill is not None},
        clips={n: s.clip for n, s in cleaner.fitted.items() if s.clip is not None},
    )
    return cleaned, record


def fitted_schema(schema: InputSchema, record: CleaningRecord) -> InputSchema:
    """The schema to serve: *schema* carrying the cleaning fitted by :func:`clean_dataset`.

    Serving (:func:`closedloop.ml.schema.check_frame`) and batch inference then treat a
    missing, non-finite or out-of-fence value exactly as cleaning treated it at
    training. Any fitted cleaning *schema* carried before is replaced.

    Args:
        schema: The schema the rows were cleaned with.
        record: What :func:`clean_dataset` returned with the cleaned rows.

    Returns:
        The schema with ``fill`` and ``clip`` set per column.
    """
    return schema.with_cleaning(record.fills, record.clips)


def apply_cleaning(df: pd.DataFrame, schema: InputSchema) -> pd.DataFrame:
    """Treat new raw rows as :func:`clean_dataset` treated its training rows.

    Types are coerced as in step 1 (so a value that is not a number or not a date
    becomes missing, where serving refuses it), then each column's fitted cleaning
    (from :func:`fitted_schema`) is applied with
    :func:`closedloop.ml.cleaning_rules.apply_fitted`. No row is dropped or
    deduplicated, nothing is refitted; the target and columns not in the schema are
    left as they are.

    Args:
        df: Raw rows holding the schema's feature columns.
        schema: A schema carrying a fitted cleaning (without one, only types change).

    Returns:
        A new frame, on the same index.
    """
    cleaner = _Cleaner(df, schema, CleanOptions())
    cleaner.coerce()
    cleaner.parse_dates()
    for spec in schema.columns:
        if spec.name in cleaner.df.columns and (spec.fill is not None or spec.clip is not None):
            cleaner.df[spec.name] = apply_fitted(spec, cleaner.df[spec.name].to_numpy())
    return cleaner.df
