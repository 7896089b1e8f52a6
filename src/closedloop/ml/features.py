"""The fitted feature step of every served pipeline.

:class:`TabularFeatures` turns a raw feature frame into a dense ``float64`` matrix:

* numeric columns: ``float64``, missing values replaced by the median seen in
  ``fit``; with ``engineer=True`` a ``log1p`` copy is added for each column that was
  non-negative and right-skewed (skewness > 1) at fit time;
* categorical columns: one-hot, missing values as their own category; unknown
  categories become all-zeros (or the infrequent bucket when ``max_categories``
  grouped rare ones at fit time);
* datetime columns (``datetime64`` or strings in
  :data:`closedloop.ml.schema.DATETIME_FORMATS`): with ``engineer=True`` hour,
  day of week and month; with ``engineer=False`` they contribute nothing, because a
  raw timestamp does not generalise to rows from the future.

When no column lists are given, every column is numeric and the step accepts
arrays (this is what scikit-learn's estimator checks exercise). Output names come
from :meth:`TabularFeatures.get_feature_names_out`; ``feature_sources_`` maps each
output column back to its input column, which explanations use to sum engineered
contributions per input.

This module is imported by the model server (it is inside the pickled pipeline):
numpy, pandas and scikit-learn only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from closedloop.ml.schema import InputSchema, parse_datetimes

MISSING_CATEGORY = "__missing__"
DATETIME_PARTS: tuple[str, ...] = ("hour", "dayofweek", "month")
_SKEW_FOR_LOG = 1.0


def _skewness(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    if values.size < 3:
        return 0.0
    std = values.std()
    if std == 0:
        return 0.0
    return float(np.mean(((values - values.mean()) / std) ** 3))


def _is_skewed_non_negative(values: np.ndarray) -> bool:
    present = values[~np.isnan(values)]
    return bool(present.size and present.min() >= 0 and _skewness(present) > _SKEW_FOR_LOG)


def _nan_medians(matrix: np.ndarray) -> np.ndarray:
    medians = np.zeros(matrix.shape[1])
    for j in range(matrix.shape[1]):
        column = matrix[:, j]
        column = column[~np.isnan(column)]
        if column.size:
            medians[j] = np.median(column)
    return medians


class TabularFeatures(TransformerMixin, BaseEstimator):
    """Encode numeric, categorical and datetime columns into one float64 matrix.

    Args:
        numeric_columns: Names of numeric (and boolean) columns. If all three column
            lists are ``None``, every input column is numeric and arrays are accepted.
        categorical_columns: Names of categorical columns (one-hot encoded).
        datetime_columns: Names of datetime columns.
        engineer: Add engineered features (``log1p`` of skewed non-negative numerics,
            date parts); when false only the base encoding is produced.
        max_categories: Most one-hot columns per categorical input; rarer categories
            share an infrequent bucket. ``None`` keeps every category.
    """

    def __init__(
        self,
        numeric_columns: Sequence[str] | None = None,
        categorical_columns: Sequence[str] | None = None,
        datetime_columns: Sequence[str] | None = None,
        engineer: bool = True,
        max_categories: int | None = None,
    ) -> None:
        self.numeric_columns = numeric_columns
        self.categorical_columns = categorical_columns
        self.datetime_columns = datetime_columns
        self.engineer = engineer
        self.max_categories = max_categories

    def __sklearn_tags__(self) -> Any:
        """Declare that missing values are accepted (they are imputed)."""
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _named_mode(self) -> bool:
        return not (
            self.numeric_columns is None
            and self.categorical_columns is None
            and self.datetime_columns is None
        )

    def _numeric_matrix(self, X: Any, reset: bool) -> np.ndarray:
        if not self._named_mode():
            return validate_data(
                self, X, reset=reset, dtype=np.float64, ensure_all_finite="allow-nan"
            )
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                "TabularFeatures with named columns needs a pandas DataFrame, "
                f"got {type(X).__name__}"
            )
        validate_data(self, X, reset=reset, skip_check_array=True)
        if len(X) == 0:
            raise ValueError("TabularFeatures needs at least one row")
        names = list(self.numeric_columns or ())
        absent = [c for c in self._all_named_columns() if c not in X.columns]
        if absent:
            raise ValueError(f"columns not in the frame: {absent}")
        block = X[names]
        if all(pd.api.types.is_numeric_dtype(t) for t in block.dtypes):
            matrix = block.to_numpy(dtype=np.float64)
        else:
            matrix = np.column_stack(
                [pd.to_numeric(block[c], errors="raise").to_numpy(dtype=np.float64) for c in names]
            )
        if np.isinf(matrix).any():
            bad = [names[j] for j in np.flatnonzero(np.isinf(matrix).any(axis=0))]
            raise ValueError(f"infinite values in numeric columns {bad}")
        return matrix

    def _all_named_columns(self) -> list[str]:
        return [
            *(self.numeric_columns or ()),
            *(self.categorical_columns or ()),
            *(self.datetime_columns or ()),
        ]

    def _categorical_matrix(self, X: pd.DataFrame) -> np.ndarray:
        values = X[list(self.categorical_columns or ())].to_numpy(dtype=object)
        # One string type for the encoder: missing becomes its own category.
        values[pd.isna(values)] = MISSING_CATEGORY
        return values.astype(str).astype(object)

    def _datetime_parts(self, X: pd.DataFrame) -> np.ndarray:
        parts = []
        for column in self.datetime_columns or ():
            values = X[column]
            if not pd.api.types.is_datetime64_any_dtype(values.dtype):
                values = parse_datetimes(values)[0]
            elif isinstance(values.dtype, pd.DatetimeTZDtype):
                values = values.dt.tz_convert("UTC").dt.tz_localize(None)
            # numpy calendar arithmetic: far cheaper than the .dt accessors on few rows.
            stamps = values.to_numpy(dtype="datetime64[ns]")
            days = stamps.astype("datetime64[D]")
            hour = (stamps - days).astype("timedelta64[h]").astype(np.float64)
            # 1970-01-01 was a Thursday (Monday = 0).
            dayofweek = (days.astype(np.int64) + 3) % 7
            month = stamps.astype("datetime64[M]").astype(np.int64) % 12 + 1
            missing = np.isnat(stamps)
            for part in (hour, dayofweek, month):
                part = part.astype(np.float64)
                part[missing] = np.nan
                parts.append(part)
        return np.column_stack(parts) if parts else np.empty((len(X), 0))

    def fit(self, X: Any, y: Any = None) -> TabularFeatures:
        """Learn medians, skewed columns, categories and date-part medians.

        Args:
            X: A frame (named mode) or a 2-D array-like (all-numeric mode).
            y: Ignored.

        Returns:
            The fitted transformer.
        """
        numeric = self._numeric_matrix(X, reset=True)
        if self._named_mode():
            self.numeric_columns_ = tuple(self.numeric_columns or ())
            self.categorical_columns_ = tuple(self.categorical_columns or ())
            self.datetime_columns_ = tuple(self.datetime_columns or ())
        else:
            names = getattr(self, "feature_names_in_", None)
            self.numeric_columns_ = tuple(
                str(n) for n in (names if names is not None else _default_names(numeric))
            )
            self.categorical_columns_ = ()
            self.datetime_columns_ = ()
        self.medians_ = _nan_medians(numeric)
        self.log_columns_ = tuple(
            j
            for j in range(numeric.shape[1])
            if self.engineer and _is_skewed_non_negative(numeric[:, j])
        )
        self.encoder_: OneHotEncoder | None = None
        if self.categorical_columns_:
            self.encoder_ = OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                max_categories=self.max_categories,
                sparse_output=False,
                dtype=np.float64,
            ).fit(self._categorical_matrix(X))
        self.datetime_medians_ = np.zeros(0)
        if self.engineer and self.datetime_columns_:
            self.datetime_medians_ = _nan_medians(self._datetime_parts(X))
        names, sources = self._output_names()
        self.feature_names_out_ = np.asarray(names, dtype=object)
        self.feature_sources_ = tuple(sources)
        return self

    def _output_names(self) -> tuple[list[str], list[str]]:
        names = list(self.numeric_columns_)
        sources = list(self.numeric_columns_)
        for j in self.log_columns_:
            names.append(f"{self.numeric_columns_[j]}__log1p")
            sources.append(self.numeric_columns_[j])
        if self.encoder_ is not None:
            # The property raises AttributeError unless rare categories were grouped.
            infrequent_per_column = getattr(self.encoder_, "infrequent_categories_", None)
            for i, (column, categories) in enumerate(
                zip(self.categorical_columns_, self.encoder_.categories_, strict=True)
            ):
                infrequent = None if infrequent_per_column is None else infrequent_per_column[i]
                rare = set() if infrequent is None else set(infrequent)
                kept = [c for c in categories if c not in rare]
                names.extend(f"{column}__{c}" for c in kept)
                if rare:
                    names.append(f"{column}__infrequent")
                sources.extend([column] * (len(kept) + bool(rare)))
        if self.engineer:
            for column in self.datetime_columns_:
                names.extend(f"{column}__{part}" for part in DATETIME_PARTS)
                sources.extend([column] * len(DATETIME_PARTS))
        return names, sources

    def transform(self, X: Any) -> np.ndarray:
        """Encode ``X`` with the fitted state.

        Args:
            X: Input of the same layout as in :meth:`fit`.

        Returns:
            A ``float64`` matrix with ``len(get_feature_names_out())`` columns.
        """
        check_is_fitted(self)
        numeric = self._numeric_matrix(X, reset=False)
        blocks = [np.where(np.isnan(numeric), self.medians_, numeric)]
        if self.log_columns_:
            logged = blocks[0][:, list(self.log_columns_)]
            blocks.append(np.log1p(np.clip(logged, 0.0, None)))
        if self.encoder_ is not None:
            blocks.append(self.encoder_.transform(self._categorical_matrix(X)))
        if self.engineer and self.datetime_columns_:
            parts = self._datetime_parts(X)
            blocks.append(np.where(np.isnan(parts), self.datetime_medians_, parts))
        return np.hstack(blocks).astype(np.float64, copy=False)

    def get_feature_names_out(self, input_features: Sequence[str] | None = None) -> np.ndarray:
        """Names of the output columns (``<input>__log1p``, ``<input>__<category>``, ...).

        Args:
            input_features: Checked against the fitted input names, as scikit-learn
                requires; the output names always derive from the fitted columns.

        Returns:
            An object array of output column names.
        """
        check_is_fitted(self)
        _check_feature_names_in(self, input_features)
        return self.feature_names_out_.copy()


def _default_names(matrix: np.ndarray) -> list[str]:
    return [f"x{j}" for j in range(matrix.shape[1])]


def make_features(
    schema: InputSchema, engineer: bool = True, max_categories: int | None = 50
) -> TabularFeatures:
    """Build the unfitted feature step for a schema.

    Boolean columns are treated as numeric 0/1.

    Args:
        schema: The model's input schema.
        engineer: Whether to add engineered features.
        max_categories: Most one-hot columns per categorical input.

    Returns:
        An unfitted :class:`TabularFeatures`.
    """
    return TabularFeatures(
        numeric_columns=schema.names_of("numeric") + schema.names_of("boolean"),
        categorical_columns=schema.names_of("categorical"),
        datetime_columns=schema.names_of("datetime"),
        engineer=engineer,
        max_categories=max_categories,
    )
