"""Data quality checks before training, with a report for humans and for metrics.

The schema part (required columns, value types, ranges, allowed categories,
nullability, known labels) is a pandera ``DataFrameSchema`` validated lazily, so every
failure is collected. Rates pandera does not compute are checked by hand: missing
values per column, exact duplicate rows, outliers, datetime format consistency, label
balance and row count.

Severities (``passed`` means no ``error``):

* error: missing column or target, fewer than ``min_rows`` rows, a value of the wrong
  type (non-number in a numeric column, unparseable date), a column with every value
  missing, any rate above its threshold, a label outside ``schema.classes``, a
  minority class below ``min_minority_class_rate`` or a single class;
* warning: columns the schema does not know, missing values in a column the schema
  calls non-nullable (the missing-rate threshold decides whether that is an error),
  and values outside the schema's range or categories when they are at most
  ``max_out_of_schema_rate`` of the rows (above it they are errors).

A schema *given* to validate against (the champion's, when retraining) is a contract,
and :class:`SchemaContract` states what new data may change relative to it (pass one to
:func:`validate_dataset`; without one the rules above are all there is):

* columns and types must match: a column the schema does not know is an error (not a
  warning), as is a categorical column that now holds numbers or timestamps (numeric,
  boolean and datetime columns already fail on values of another type);
* the target's classes must be a subset of the schema's: a new class is an error;
* numeric ranges may widen by at most ``range_slack`` times the schema's span on each
  side (a minimum of 0 or more never goes below 0); values beyond that count as out
  of range, and every widening is reported as a warning with its numbers;
* up to ``max_new_categories`` new categories per categorical column are accepted
  and reported as a warning; more is an error.

:func:`evolve_schema` returns the given schema grown by what the contract accepted
(ranges stretched to the values seen, new categories added), for the model trained on
the data.

Outliers are values outside the IQR fences ``[Q1 - k*IQR, Q3 + k*IQR]`` with
``k = outlier_iqr_k`` (3, Tukey's "far out"), over the non-missing values of numeric
columns, computed on ``log1p`` of right-skewed non-negative columns (see
:func:`outlier_bounds`); a column whose IQR is 0 has no outliers by this rule. Datetime format
consistency is the share of non-missing date strings not written in the column's most
common format from :data:`closedloop.ml.schema.DATETIME_FORMATS`.
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import skew

from closedloop.ml.schema import ColumnSpec, InputSchema, is_null_like, parse_datetimes

Severity = Literal["error", "warning"]
StatValue = float | int | str | None

_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class QualityThresholds:
    """Limits a training dataset must respect.

    Attributes:
        max_missing_rate: Highest share of missing values in any column.
        max_duplicate_rate: Highest share of rows that exactly repeat an earlier row.
        max_outlier_rate: Highest share of IQR outliers in a numeric column.
        outlier_iqr_k: Fence multiplier ``k`` of the IQR rule.
        max_inconsistent_format_rate: Highest share of date strings not in the
            column's dominant format.
        max_out_of_schema_rate: Highest share of values outside the schema's range or
            categories that is only a warning.
        min_minority_class_rate: Lowest share of the rarest class (classification).
        min_rows: Fewest rows to train on.
    """

    max_missing_rate: float = 0.2
    max_duplicate_rate: float = 0.05
    max_outlier_rate: float = 0.05
    outlier_iqr_k: float = 3.0
    max_inconsistent_format_rate: float = 0.01
    max_out_of_schema_rate: float = 0.01
    min_minority_class_rate: float = 0.01
    min_rows: int = 100

    def to_dict(self) -> dict[str, float]:
        """Return a JSON-serializable dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class SchemaContract:
    """What new data may change relative to a given schema (see the module docstring).

    Attributes:
        range_slack: Numeric ranges may widen by this share of the schema's span
            (``maximum - minimum``) on each side.
        max_new_categories: New categories accepted per categorical column.
    """

    range_slack: float = 0.5
    max_new_categories: int = 3

    def __post_init__(self) -> None:
        if self.range_slack < 0 or self.max_new_categories < 0:
            raise ValueError("range_slack and max_new_categories must be non-negative")

    def to_dict(self) -> dict[str, float]:
        """Return a JSON-serializable dict."""
        return {"range_slack": self.range_slack, "max_new_categories": self.max_new_categories}


@dataclass(frozen=True)
class Issue:
    """One problem found in a dataset.

    Attributes:
        check: What was checked (e.g. ``missing_rate``, ``numeric_values``).
        column: The column concerned, or ``None`` for whole-frame checks.
        severity: ``error`` or ``warning``.
        message: One readable sentence.
        observed: The measured value (a rate or a count), if any.
        threshold: The limit it was compared with, if any.
        examples: A few offending values with their row labels.
    """

    check: str
    column: str | None
    severity: Severity
    message: str
    observed: float | None = None
    threshold: float | None = None
    examples: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {
            "check": self.check,
            "column": self.column,
            "severity": self.severity,
            "message": self.message,
            "observed": self.observed,
            "threshold": self.threshold,
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of :func:`validate_dataset`.

    Attributes:
        passed: True when no issue is an error.
        issues: Every issue found, errors first.
        column_stats: Per column: dtype, missing rate, distinct values and, by kind,
            min/max/mean/outlier rate or dominant date format and inconsistency rate.
        n_rows: Number of rows checked.
        duplicate_rate: Share of rows repeating an earlier row exactly.
        thresholds: The limits applied.
        contract: The rules for changes against a given schema, or ``None``.
    """

    passed: bool
    issues: tuple[Issue, ...]
    column_stats: Mapping[str, Mapping[str, StatValue]]
    n_rows: int
    duplicate_rate: float = 0.0
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    contract: SchemaContract | None = None

    @property
    def errors(self) -> tuple[Issue, ...]:
        """The issues with severity ``error``."""
        return tuple(i for i in self.issues if i.severity == "error")

    @property
    def warnings(self) -> tuple[Issue, ...]:
        """The issues with severity ``warning``."""
        return tuple(i for i in self.issues if i.severity == "warning")

    def failing_columns(self) -> tuple[str, ...]:
        """Columns with at least one error, in order of first appearance."""
        return tuple(dict.fromkeys(i.column for i in self.errors if i.column is not None))

    def to_metrics(self) -> dict[str, float]:
        """Flat numeric metrics (for KFP ``Metrics``): counts, rates per column."""
        metrics: dict[str, float] = {
            "passed": float(self.passed),
            "n_rows": float(self.n_rows),
            "n_errors": float(len(self.errors)),
            "n_warnings": float(len(self.warnings)),
            "duplicate_rate": float(self.duplicate_rate),
        }
        for column, stats in self.column_stats.items():
            for key in ("missing_rate", "outlier_rate", "inconsistent_format_rate"):
                value = stats.get(key)
                if isinstance(value, float | int) and math.isfinite(value):
                    metrics[f"{column}.{key}"] = float(value)
        return metrics

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        return {
            "passed": self.passed,
            "n_rows": self.n_rows,
            "duplicate_rate": self.duplicate_rate,
            "issues": [i.to_dict() for i in self.issues],
            "column_stats": {c: dict(s) for c, s in self.column_stats.items()},
            "thresholds": self.thresholds.to_dict(),
            "contract": None if self.contract is None else self.contract.to_dict(),
        }

    def summary(self) -> str:
        """One line: verdict, counts, and the failing columns with their checks."""
        verdict = "PASSED" if self.passed else "FAILED"
        text = (
            f"{verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s) "
            f"on {self.n_rows} rows"
        )
        if self.errors:
            by_column: dict[str, list[str]] = {}
            for issue in self.errors:
                by_column.setdefault(issue.column or "<frame>", []).append(issue.check)
            text += "; failing: " + "; ".join(
                f"{column} ({', '.join(dict.fromkeys(checks))})"
                for column, checks in by_column.items()
            )
        return text

    def _contract_text(self) -> str:
        if self.contract is None:
            return "Schema inferred from these rows: no contract against an earlier schema."
        return (
            "Checked against a given schema as a contract: columns and types must match, "
            "no new target class; numeric ranges may widen by at most "
            f"{self.contract.range_slack:g} of the schema's span on each side; at most "
            f"{self.contract.max_new_categories} new categories per column."
        )

    def to_html(self) -> str:
        """A self-contained HTML page: verdict, issues, column statistics."""
        colour = "#1a7f37" if self.passed else "#cf222e"
        rows = "".join(
            "<tr class='{sev}'><td>{sev}</td><td>{col}</td><td>{check}</td><td>{msg}</td>"
            "<td>{obs}</td><td>{thr}</td><td>{ex}</td></tr>".format(
                sev=i.severity,
                col=html.escape(i.column or "(frame)"),
                check=html.escape(i.check),
                msg=html.escape(i.message),
                obs=_fmt(i.observed),
                thr=_fmt(i.threshold),
                ex=html.escape("; ".join(i.examples)),
            )
            for i in self.issues
        )
        keys = sorted({k for stats in self.column_stats.values() for k in stats})
        stat_rows = "".join(
            "<tr><td>{}</td>{}</tr>".format(
                html.escape(column),
                "".join(f"<td>{html.escape(_fmt(stats.get(k)))}</td>" for k in keys),
            )
            for column, stats in self.column_stats.items()
        )
        return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Data validation</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; }}
th {{ background: #f6f8fa; }}
tr.error td:first-child {{ color: #cf222e; font-weight: bold; }}
tr.warning td:first-child {{ color: #9a6700; }}
</style></head><body>
<h1>Data validation</h1>
<p style="color: {colour}; font-weight: bold">{html.escape(self.summary())}</p>
<p>Duplicate rate: {_fmt(self.duplicate_rate)}</p>
<p>{html.escape(self._contract_text())}</p>
<h2>Issues</h2>
<table><tr><th>severity</th><th>column</th><th>check</th><th>message</th><th>observed</th>
<th>threshold</th><th>examples</th></tr>{rows or "<tr><td colspan=7>none</td></tr>"}</table>
<h2>Columns</h2>
<table><tr><th>column</th>{"".join(f"<th>{html.escape(k)}</th>" for k in keys)}</tr>
{stat_rows}</table>
</body></html>
"""


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def outlier_bounds(values: np.ndarray, k: float = 3.0) -> tuple[float, float] | None:
    """IQR fences of the finite values, on a log scale for right-skewed positive data.

    For a column whose finite values are all non-negative with skewness above 1 (amounts,
    durations, counts) the upper fence is computed on ``log1p(values)`` and mapped back,
    so the long natural tail of a lognormal is not called outliers, and the lower fence
    is 0 (a small amount or a young account is not an anomaly); otherwise the fences are
    ``(Q1 - k*IQR, Q3 + k*IQR)`` on the values themselves.

    Args:
        values: Numbers; NaN and infinities are ignored.
        k: Fence multiplier.

    Returns:
        The fences, or ``None`` when fewer than 4 values remain or the IQR is 0.
    """
    finite = values[np.isfinite(values)].astype(np.float64)
    if finite.size < 4:
        return None
    log_scale = bool(finite.min() >= 0 and skew(finite) > 1.0)
    scaled = np.log1p(finite) if log_scale else finite
    q1, q3 = np.percentile(scaled, [25, 75])
    iqr = q3 - q1
    if iqr <= 0:
        return None
    if log_scale:
        # On a log scale the low side is stretched: small values are not outliers.
        return 0.0, float(np.expm1(q3 + k * iqr))
    return float(q1 - k * iqr), float(q3 + k * iqr)


def _numbers(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values.where(~is_null_like(values)), errors="coerce").astype(float)


def _pandera_schema(schema: InputSchema) -> Any:
    import pandera.pandas as pa

    columns = {spec.name: _pandera_column(pa, spec) for spec in schema.columns}
    target_checks = []
    if schema.task == "classification":
        labels = {str(c) for c in schema.classes or ()} | set(schema.classes or ())
        target_checks.append(
            pa.Check(
                lambda s: s.isin(labels) | s.astype(str).isin(labels),
                name="known_labels",
            )
        )
    else:
        target_checks.append(pa.Check(lambda s: _numbers(s).notna(), name="numeric_values"))
    columns[schema.target] = pa.Column(None, checks=target_checks, nullable=False)
    return pa.DataFrameSchema(columns, strict=False)


def _pandera_column(pa: Any, spec: ColumnSpec) -> Any:
    checks = []
    if spec.kind in ("numeric", "boolean"):
        checks.append(
            pa.Check(lambda s: _numbers(s).notna() | is_null_like(s), name="numeric_values")
        )
    if spec.kind == "numeric" and (spec.minimum is not None or spec.maximum is not None):
        low = -math.inf if spec.minimum is None else spec.minimum
        high = math.inf if spec.maximum is None else spec.maximum
        checks.append(
            pa.Check(
                lambda s: _numbers(s).isna() | _numbers(s).between(low, high),
                name="in_range",
            )
        )
    if spec.kind == "boolean":
        checks.append(
            pa.Check(
                lambda s: _numbers(s).isna() | _numbers(s).isin([0.0, 1.0]), name="boolean_values"
            )
        )
    if spec.kind == "categorical" and spec.allowed is not None:
        allowed = set(spec.allowed)
        checks.append(
            pa.Check(
                lambda s: is_null_like(s) | s.astype(str).isin(allowed), name="allowed_categories"
            )
        )
    if spec.kind == "datetime":
        checks.append(
            pa.Check(
                lambda s: is_null_like(s) | parse_datetimes(s)[0].notna(), name="datetime_values"
            )
        )
    return pa.Column(None, checks=checks, nullable=spec.nullable)


_RATE_TOLERATED_CHECKS = frozenset({"in_range", "allowed_categories", "boolean_values"})


def _pandera_issues(
    df: pd.DataFrame, schema: InputSchema, thresholds: QualityThresholds
) -> list[Issue]:
    import pandera.pandas as pa

    try:
        with warnings.catch_warnings():
            # pandera's own failure-case concatenation triggers a pandas FutureWarning.
            warnings.simplefilter("ignore", FutureWarning)
            _pandera_schema(schema).validate(df, lazy=True)
    except pa.errors.SchemaErrors as error:
        cases = error.failure_cases
    else:
        return []
    issues: list[Issue] = []
    n_rows = max(len(df), 1)
    for row in cases[cases["check"] == "column_in_dataframe"].itertuples():
        column = str(row.failure_case)
        is_target = column == schema.target
        issues.append(
            Issue(
                check="missing_target" if is_target else "missing_column",
                column=column,
                severity="error",
                message=f"{'target' if is_target else 'required'} column {column!r} is missing",
            )
        )
    value_cases = cases[cases["check"] != "column_in_dataframe"]
    for (column, check), group in value_cases.groupby(["column", "check"], sort=False):
        count = len(group)
        rate = count / n_rows
        examples = tuple(
            f"row {idx}: {value!r}"
            for idx, value in zip(
                group["index"].head(_MAX_EXAMPLES),
                group["failure_case"].head(_MAX_EXAMPLES),
                strict=True,
            )
        )
        severity: Severity = "error"
        threshold: float | None = None
        if check == "not_nullable":
            severity = "warning"
            message = (
                f"column {column!r} is not nullable in the schema but has {count} missing "
                f"value(s) ({rate:.2%})"
            )
        elif check in _RATE_TOLERATED_CHECKS:
            threshold = thresholds.max_out_of_schema_rate
            severity = "warning" if rate <= threshold else "error"
            what = {
                "in_range": "outside the schema range",
                "allowed_categories": "unknown categories",
            }
            message = (
                f"column {column!r} has {count} value(s) ({rate:.2%}) "
                f"{what.get(str(check), 'that are not booleans')}"
            )
            if check == "in_range":
                spec = schema.column(str(column))
                message += f" [{spec.minimum}, {spec.maximum}]"
        elif check == "known_labels":
            message = f"target {column!r} has {count} label(s) not in {list(schema.classes or ())}"
        elif check == "numeric_values":
            message = f"column {column!r} has {count} value(s) that are not numbers"
        elif check == "datetime_values":
            message = f"column {column!r} has {count} value(s) that are not parseable dates"
        else:
            message = f"column {column!r} failed check {check!r} on {count} row(s)"
        issues.append(
            Issue(
                check=str(check),
                column=str(column),
                severity=severity,
                message=message,
                observed=rate,
                threshold=threshold,
                examples=examples,
            )
        )
    return issues


def _column_stats(
    values: pd.Series, spec: ColumnSpec | None, thresholds: QualityThresholds
) -> dict[str, StatValue]:
    n = len(values)
    missing = int(is_null_like(values).sum())
    stats: dict[str, StatValue] = {
        "dtype": str(values.dtype),
        "kind": spec.kind if spec else "target/unknown",
        "missing_rate": missing / n if n else 0.0,
        "n_unique": int(values.nunique(dropna=True)),
    }
    if spec is not None and spec.kind in ("numeric", "boolean"):
        numbers = _numbers(values).to_numpy()
        finite = numbers[np.isfinite(numbers)]
        if finite.size:
            stats.update(
                minimum=float(finite.min()), maximum=float(finite.max()), mean=float(finite.mean())
            )
        if spec.kind == "numeric":
            bounds = outlier_bounds(numbers, thresholds.outlier_iqr_k)
            outliers = (
                0 if bounds is None else int(((finite < bounds[0]) | (finite > bounds[1])).sum())
            )
            stats["outlier_rate"] = outliers / finite.size if finite.size else 0.0
    if spec is not None and spec.kind == "datetime":
        _, formats = parse_datetimes(values)
        known = formats.dropna()
        if len(known):
            counts = known.value_counts()
            stats["dominant_format"] = str(counts.index[0])
            stats["inconsistent_format_rate"] = float(1.0 - counts.iloc[0] / len(known))
        else:
            stats["inconsistent_format_rate"] = 0.0
    return stats


def _rate_issues(
    df: pd.DataFrame,
    schema: InputSchema,
    thresholds: QualityThresholds,
    stats: Mapping[str, Mapping[str, StatValue]],
) -> list[Issue]:
    issues: list[Issue] = []
    for column, column_stats in stats.items():
        missing_rate = float(column_stats["missing_rate"] or 0.0)
        if len(df) and missing_rate == 1.0:
            issues.append(
                Issue("all_missing", column, "error", f"column {column!r} has no values", 1.0)
            )
        elif missing_rate > thresholds.max_missing_rate:
            issues.append(
                Issue(
                    "missing_rate",
                    column,
                    "error",
                    f"column {column!r} is {missing_rate:.1%} missing "
                    f"(limit {thresholds.max_missing_rate:.1%})",
                    missing_rate,
                    thresholds.max_missing_rate,
                )
            )
        outlier_rate = column_stats.get("outlier_rate")
        if isinstance(outlier_rate, float) and outlier_rate > thresholds.max_outlier_rate:
            issues.append(
                Issue(
                    "outlier_rate",
                    column,
                    "error",
                    f"column {column!r} has {outlier_rate:.1%} outliers outside the IQR fences "
                    f"(k={thresholds.outlier_iqr_k:g}; limit {thresholds.max_outlier_rate:.1%})",
                    outlier_rate,
                    thresholds.max_outlier_rate,
                )
            )
        format_rate = column_stats.get("inconsistent_format_rate")
        limit = thresholds.max_inconsistent_format_rate
        if isinstance(format_rate, float) and format_rate > limit:
            issues.append(
                Issue(
                    "inconsistent_format",
                    column,
                    "error",
                    f"column {column!r}: {format_rate:.1%} of dates are not in the dominant "
                    f"format {column_stats.get('dominant_format')} (limit {limit:.1%})",
                    format_rate,
                    limit,
                )
            )
    if schema.task == "classification" and schema.target in df.columns:
        issues.extend(_balance_issues(df[schema.target], schema, thresholds))
    return issues


def _balance_issues(
    target: pd.Series, schema: InputSchema, thresholds: QualityThresholds
) -> list[Issue]:
    labels = target[~is_null_like(target)]
    if labels.empty:
        return []
    counts = labels.astype(str).value_counts()
    if len(counts) < 2:
        return [
            Issue(
                "single_class",
                schema.target,
                "error",
                f"target {schema.target!r} holds one class only ({counts.index[0]})",
                1.0,
            )
        ]
    minority = float(counts.iloc[-1] / counts.sum())
    if minority < thresholds.min_minority_class_rate:
        return [
            Issue(
                "class_balance",
                schema.target,
                "error",
                f"target {schema.target!r}: rarest class {counts.index[-1]!r} is {minority:.2%} "
                f"of labels (minimum {thresholds.min_minority_class_rate:.2%})",
                minority,
                thresholds.min_minority_class_rate,
            )
        ]
    return []


def _widened_bounds(minimum: float, maximum: float, slack: float) -> tuple[float, float]:
    """A range widened by *slack* times its span on each side; a minimum >= 0 stays >= 0."""
    span = maximum - minimum
    low = minimum - slack * span
    if minimum >= 0:
        low = max(low, 0.0)
    return low, maximum + slack * span


def _numeric_contract(
    spec: ColumnSpec, values: pd.Series, contract: SchemaContract
) -> tuple[ColumnSpec, ColumnSpec, list[Issue]]:
    if spec.minimum is None or spec.maximum is None:
        return spec, spec, []  # an open range has no span to widen by
    low, high = _widened_bounds(spec.minimum, spec.maximum, contract.range_slack)
    limit = replace(spec, minimum=low, maximum=high)
    numbers = _numbers(values).to_numpy()
    finite = numbers[np.isfinite(numbers)]
    if finite.size == 0:
        return limit, spec, []
    seen_low, seen_high = float(finite.min()), float(finite.max())
    if spec.minimum <= seen_low and seen_high <= spec.maximum:
        return limit, spec, []
    # Stretch to what the data reached, never past the contract's limit.
    evolved = replace(
        spec,
        minimum=max(min(spec.minimum, seen_low), low),
        maximum=min(max(spec.maximum, seen_high), high),
    )
    message = (
        f"column {spec.name!r} ranges over [{seen_low:.6g}, {seen_high:.6g}], beyond the "
        f"schema's [{spec.minimum:.6g}, {spec.maximum:.6g}]; the contract lets a range widen "
        f"by {contract.range_slack:g} of its span, to [{low:.6g}, {high:.6g}]"
    )
    if seen_low < low or seen_high > high:
        message += "; values beyond that count as out of range"
    return limit, evolved, [Issue("range_widened", spec.name, "warning", message)]


def _categorical_contract(
    spec: ColumnSpec, values: pd.Series, contract: SchemaContract
) -> tuple[ColumnSpec, ColumnSpec, list[Issue]]:
    present = values[~is_null_like(values)]
    if present.empty:
        return spec, spec, []
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        held = "numbers"
    elif pd.api.types.is_datetime64_any_dtype(values.dtype):
        held = "timestamps"
    else:
        held = ""
    if held:
        message = (
            f"column {spec.name!r} is categorical in the schema but holds {held} "
            f"(dtype {values.dtype}): its type changed"
        )
        return spec, spec, [Issue("type_changed", spec.name, "error", message)]
    if spec.allowed is None:
        return spec, spec, []
    counts = present.astype(str).value_counts()
    new = counts[~counts.index.isin(spec.allowed)]
    if new.empty:
        return spec, spec, []
    limit = replace(spec, allowed=(*spec.allowed, *sorted(new.index)))
    accepted = len(new) <= contract.max_new_categories
    shown = ", ".join(repr(c) for c in list(new.index)[:_MAX_EXAMPLES])
    more = " …" if len(new) > _MAX_EXAMPLES else ""
    message = (
        f"column {spec.name!r} has {len(new)} new categor{'y' if len(new) == 1 else 'ies'} "
        f"({shown}{more}) in {int(new.sum())} row(s); the contract accepts at most "
        f"{contract.max_new_categories} per column"
    )
    issue = Issue(
        "new_categories",
        spec.name,
        "warning" if accepted else "error",
        message,
        observed=float(len(new)),
        threshold=float(contract.max_new_categories),
        examples=tuple(f"{c!r}: {n} row(s)" for c, n in new.head(_MAX_EXAMPLES).items()),
    )
    # The limit schema lists them so the rate check does not report them a second time.
    return limit, limit if accepted else spec, [issue]


def _apply_contract(
    df: pd.DataFrame, schema: InputSchema, contract: SchemaContract
) -> tuple[InputSchema, InputSchema, list[Issue]]:
    """Return the schema to check against, the evolved schema, and the contract's issues."""
    limits: list[ColumnSpec] = []
    evolved: list[ColumnSpec] = []
    issues: list[Issue] = []
    for spec in schema.columns:
        limit, grown, found = spec, spec, []
        if spec.name in df.columns and spec.kind == "numeric":
            limit, grown, found = _numeric_contract(spec, df[spec.name], contract)
        elif spec.name in df.columns and spec.kind == "categorical":
            limit, grown, found = _categorical_contract(spec, df[spec.name], contract)
        limits.append(limit)
        evolved.append(grown)
        issues.extend(found)
    return replace(schema, columns=tuple(limits)), replace(schema, columns=tuple(evolved)), issues


def evolve_schema(df: pd.DataFrame, schema: InputSchema, contract: SchemaContract) -> InputSchema:
    """Return *schema* grown by the changes *contract* accepts in *df*.

    Numeric ranges stretch to the values seen, up to the contract's widening;
    accepted new categories are appended to ``allowed``. Everything else is unchanged,
    so a schema that *df* fits is returned equal to itself.

    Args:
        df: Rows that passed :func:`validate_dataset` with this contract.
        schema: The given schema (e.g. the champion's).
        contract: The rules for changes.

    Returns:
        The evolved schema, for the model trained on *df*.
    """
    return _apply_contract(df, schema, contract)[1]


def validate_dataset(
    df: pd.DataFrame,
    schema: InputSchema,
    thresholds: QualityThresholds | None = None,
    contract: SchemaContract | None = None,
) -> ValidationReport:
    """Check a dataset against a schema and quality thresholds.

    Never raises for bad data: every problem becomes an :class:`Issue` naming its
    column (see the module docstring for what is an error).

    Args:
        df: Raw or cleaned rows, features and target.
        schema: The expected input schema.
        thresholds: Limits; the defaults of :class:`QualityThresholds` when ``None``.
        contract: When *schema* was given rather than inferred from *df* (e.g. the
            champion's), the rules for what may have changed; ``None`` for none.

    Returns:
        The report.
    """
    thresholds = thresholds or QualityThresholds()
    issues: list[Issue] = []
    if contract is not None:
        schema, _, contract_issues = _apply_contract(df, schema, contract)
        issues.extend(contract_issues)
    if len(df) < thresholds.min_rows:
        issues.append(
            Issue(
                "min_rows",
                None,
                "error",
                f"{len(df)} rows; at least {thresholds.min_rows} are needed",
                float(len(df)),
                float(thresholds.min_rows),
            )
        )
    expected = {*schema.feature_names, schema.target}
    for column in df.columns:
        if column not in expected:
            issues.append(
                Issue(
                    "extra_column",
                    str(column),
                    "warning" if contract is None else "error",
                    f"column {column!r} is not in the schema"
                    + ("" if contract is None else " (under a contract, columns must match)"),
                )
            )
    issues.extend(_pandera_issues(df, schema, thresholds))

    specs = {spec.name: spec for spec in schema.columns}
    stats = {
        str(column): _column_stats(df[column], specs.get(str(column)), thresholds)
        for column in df.columns
        if column in expected
    }
    issues.extend(_rate_issues(df, schema, thresholds, stats))
    duplicate_rate = float(df.duplicated().mean()) if len(df) else 0.0
    if duplicate_rate > thresholds.max_duplicate_rate:
        issues.append(
            Issue(
                "duplicate_rate",
                None,
                "error",
                f"{duplicate_rate:.1%} of rows repeat an earlier row exactly "
                f"(limit {thresholds.max_duplicate_rate:.1%})",
                duplicate_rate,
                thresholds.max_duplicate_rate,
            )
        )
    ordered = tuple(sorted(issues, key=lambda i: i.severity != "error"))
    return ValidationReport(
        passed=not any(i.severity == "error" for i in ordered),
        issues=ordered,
        column_stats=stats,
        n_rows=len(df),
        duplicate_rate=duplicate_rate,
        thresholds=thresholds,
        contract=contract,
    )
