"""The served pipeline compiled to numpy: the same numbers, without pandas on the way.

:class:`CompiledPipeline` is built once per loaded version from the fitted pipeline
(``features`` = :class:`closedloop.ml.features.TabularFeatures`, then the model). It
takes :class:`closedloop.ml.rowplan.CheckedRows` and computes

* the feature matrix with plain numpy, from the fitted state of ``TabularFeatures``
  (medians, ``log1p`` columns, one-hot positions, date-part medians); the one-hot
  position of every known category and of an unknown one is read off the fitted
  encoder itself at compile time, so infrequent buckets and ``handle_unknown`` behave
  exactly as scikit-learn's;
* the prediction: for XGBoost, ``Booster.inplace_predict`` with the iteration range
  and missing value the estimator uses (what ``XGBClassifier.predict_proba`` and
  ``XGBRegressor.predict`` call underneath); for other estimators, the rest of the
  pipeline on the matrix.

:meth:`CompiledPipeline.compile` returns ``None`` when the pipeline is not of that
shape; callers then use the pipeline on :attr:`CheckedRows.frame`. A test proves the
compiled path equal to the fitted pipeline on generated frames, and the server checks
it on a probe row before a version serves.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from xgboost import XGBModel

from closedloop.ml.features import MISSING_CATEGORY, TabularFeatures
from closedloop.ml.rowplan import CheckedRows

_PER_VALUE_ROWS = 64
_NS_PER_HOUR = 3_600_000_000_000
_NS_PER_DAY = 24 * _NS_PER_HOUR
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_BLOCK_ROWS = 16_384
_UNKNOWN_PROBE = "\x00closedloop-unknown-category\x00"


class CompiledPipeline:
    """A fitted served pipeline as numpy functions (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, features: TabularFeatures, classification: bool) -> None:
        self.pipeline = pipeline
        self.classification = classification
        self.numeric_names = tuple(features.numeric_columns_)
        self.medians = np.asarray(features.medians_, dtype=np.float64)
        self._medians = self.medians.tolist()
        self.log_columns = list(features.log_columns_)
        self.categorical_names = tuple(features.categorical_columns_)
        self.datetime_names = tuple(features.datetime_columns_) if features.engineer else ()
        self.datetime_medians = np.asarray(features.datetime_medians_, dtype=np.float64)
        self.n_out = len(features.feature_names_out_)
        self.onehot_offset = len(self.numeric_names) + len(self.log_columns)
        self.onehot_width = 0
        self.category_maps: list[tuple[dict[str, int], int]] = []
        if features.encoder_ is not None:
            self.onehot_width, self.category_maps = _category_maps(features)
        model = pipeline.steps[-1][1]
        self.booster = None
        if isinstance(model, XGBModel) and len(pipeline.steps) == 2:
            self.booster = model.get_booster()
            self.iteration_range = _iteration_range(model)
            self.missing = model.missing
        self.tail = pipeline[1:]

    @classmethod
    def compile(
        cls, pipeline: Any, classification: bool, numeric_names: tuple[str, ...]
    ) -> CompiledPipeline | None:
        """Compile a served pipeline, or return ``None`` if it is not of the known shape.

        Args:
            pipeline: The unpickled artifact.
            classification: Whether it predicts classes.
            numeric_names: The row plan's numeric block order; it must be the feature
                step's.
        """
        if not isinstance(pipeline, Pipeline) or len(pipeline.steps) < 2:
            return None
        features = pipeline.steps[0][1]
        if not isinstance(features, TabularFeatures) or not features._named_mode():
            return None
        if tuple(features.numeric_columns_) != tuple(numeric_names):
            return None
        return cls(pipeline, features, classification)

    def transform(self, rows: CheckedRows) -> np.ndarray:
        """The feature matrix ``TabularFeatures.transform`` gives for these rows."""
        numeric = rows.numeric
        n = numeric.shape[0]
        if n == 1:
            return self._transform_one(rows)
        out = np.empty((n, self.n_out), dtype=np.float64)
        k = len(self.numeric_names)
        block = out[:, :k]
        np.copyto(block, numeric)
        missing = np.isnan(block)
        if missing.any():
            block[missing] = np.broadcast_to(self.medians, block.shape)[missing]
        if self.log_columns:
            out[:, k : self.onehot_offset] = np.log1p(
                np.clip(block[:, self.log_columns], 0.0, None)
            )
        if self.onehot_width:
            onehot = out[:, self.onehot_offset : self.onehot_offset + self.onehot_width]
            onehot.fill(0.0)
            for name, (mapping, unknown) in zip(
                self.categorical_names, self.category_maps, strict=True
            ):
                values = rows.categorical[name]
                if n <= _PER_VALUE_ROWS:
                    for i, value in enumerate(values.tolist()):
                        key = value if isinstance(value, str) else MISSING_CATEGORY
                        index = mapping.get(key, unknown)
                        if index >= 0:
                            onehot[i, index] = 1.0
                    continue
                # Values are str or NaN here (CheckedRows): one lookup per distinct value.
                codes, uniques = pd.factorize(values, use_na_sentinel=False)
                lookup = [
                    mapping.get(u if isinstance(u, str) else MISSING_CATEGORY, unknown)
                    for u in uniques
                ]
                where = np.asarray(lookup, dtype=np.int64)[codes]
                hot = where >= 0
                onehot[np.flatnonzero(hot), where[hot]] = 1.0
        if self.datetime_names:
            start = self.onehot_offset + self.onehot_width
            parts = out[:, start:]
            for c, name in enumerate(self.datetime_names):
                stamps = rows.datetime[name]
                days = stamps.astype("datetime64[D]")
                hour = (stamps - days).astype("timedelta64[h]").astype(np.float64)
                dayofweek = ((days.astype(np.int64) + 3) % 7).astype(np.float64)
                month = (stamps.astype("datetime64[M]").astype(np.int64) % 12 + 1).astype(
                    np.float64
                )
                nat = np.isnat(stamps)
                for p, part in enumerate((hour, dayofweek, month)):
                    if nat.any():
                        part[nat] = self.datetime_medians[3 * c + p]
                    parts[:, 3 * c + p] = part
        return out

    def _transform_one(self, rows: CheckedRows) -> np.ndarray:
        """:meth:`transform` of a single row in plain Python (a request's usual case).

        The same arithmetic value for value (``log1p`` still by numpy); a test proves
        it equal to the block transform.
        """
        row = [
            median if value != value else value
            for value, median in zip(rows.numeric[0].tolist(), self._medians, strict=True)
        ]
        if self.log_columns:
            logged = np.log1p(np.clip(np.array([row[j] for j in self.log_columns]), 0.0, None))
            row += logged.tolist()
        if self.onehot_width:
            onehot = [0.0] * self.onehot_width
            for name, (mapping, unknown) in zip(
                self.categorical_names, self.category_maps, strict=True
            ):
                value = rows.categorical[name][0]
                index = mapping.get(value if isinstance(value, str) else MISSING_CATEGORY, unknown)
                if index >= 0:
                    onehot[index] = 1.0
            row += onehot
        for c, name in enumerate(self.datetime_names):
            stamp = rows.datetime[name][0]
            if np.isnat(stamp):
                row += self.datetime_medians[3 * c : 3 * c + 3].tolist()
                continue
            ns = int(stamp.astype(np.int64))
            days = ns // _NS_PER_DAY
            hour = (ns - days * _NS_PER_DAY) // _NS_PER_HOUR
            month = date.fromordinal(days + _EPOCH_ORDINAL).month
            row += [float(hour), float((days + 3) % 7), float(month)]
        return np.array([row], dtype=np.float64)

    def predict(self, rows: CheckedRows) -> np.ndarray:
        """Class probabilities ``(n, K)`` or values ``(n,)``, float64, as the pipeline's.

        Long inputs go through in blocks of rows, so the feature matrix of a block
        stays in cache between the transform and the model.
        """
        n = rows.n_rows
        if n <= _BLOCK_ROWS:
            return self._predict_block(rows)
        blocks = [
            self._predict_block(rows.slice(start, start + _BLOCK_ROWS))
            for start in range(0, n, _BLOCK_ROWS)
        ]
        return np.concatenate(blocks)

    def _predict_block(self, rows: CheckedRows) -> np.ndarray:
        matrix = self.transform(rows)
        if self.booster is not None:
            raw = self.booster.inplace_predict(
                matrix,
                iteration_range=self.iteration_range,
                missing=self.missing,
                validate_features=False,
            )
            if not self.classification:
                return np.asarray(raw, dtype=np.float64)
            if raw.ndim == 1:
                # XGBClassifier.predict_proba of a binary model: (1 - p, p) in float32.
                out = np.empty((len(raw), 2), dtype=np.float64)
                out[:, 0] = 1.0 - raw
                out[:, 1] = raw
                return out
            return np.asarray(raw, dtype=np.float64)
        if self.classification:
            return np.asarray(self.tail.predict_proba(matrix), dtype=np.float64)
        return np.asarray(self.tail.predict(matrix), dtype=np.float64)


def _iteration_range(model: XGBModel) -> tuple[int, int]:
    # XGBModel.predict uses the best iteration when early stopping kept one.
    try:
        return tuple(model._get_iteration_range(None))  # type: ignore[attr-defined,return-value]
    except AttributeError:
        best = getattr(model, "best_iteration", None)
        return (0, best + 1) if best is not None else (0, 0)


def _category_maps(features: TabularFeatures) -> tuple[int, list[tuple[dict[str, int], int]]]:
    """Where the fitted encoder puts each known category and an unknown one.

    Returns:
        The one-hot width and, per categorical column, ``({category: index}, unknown
        index)`` with indices inside the one-hot block (-1 for all-zeros).
    """
    encoder = features.encoder_
    assert encoder is not None
    categories = [list(c) for c in encoder.categories_]
    width = int(encoder.transform(np.array([[c[0] for c in categories]], dtype=object)).shape[1])
    maps = []
    for j, known in enumerate(categories):
        probes = [*known, _UNKNOWN_PROBE]
        rows = np.array([[c[0] for c in categories] for _ in probes], dtype=object)
        rows[:, j] = probes
        encoded = encoder.transform(rows)
        # Columns of this input: the ones that vary with it.
        own = np.flatnonzero(encoded.max(axis=0) != encoded.min(axis=0))
        if own.size == 0:  # a single category: its column is always on
            own = np.flatnonzero(encoded[0])
        mapping: dict[str, int] = {}
        unknown = -1
        for probe, row in zip(probes, encoded, strict=True):
            hot = [int(i) for i in own if row[i] == 1.0]
            index = hot[0] if hot else -1
            if probe is _UNKNOWN_PROBE:
                unknown = index
            else:
                mapping[str(probe)] = index
        maps.append((mapping, unknown))
    return width, maps
