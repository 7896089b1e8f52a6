"""The fitted cleaning rule: one function that training, batch inference and serving share.

:func:`closedloop.ml.clean.clean_dataset` fits, per column, a fill value and (numeric
columns) IQR fences with clip targets, and stores them in the schema
(:attr:`closedloop.ml.schema.ColumnSpec.fill` / ``clip``). :func:`apply_fitted`
applies them to already-coerced values of one column, exactly as the cleaning step
treated its training rows:

* a missing value (``NaN``, ``NaT``, ``None``) and, in numeric and boolean columns, a
  non-finite number (training's coercion turns ``±inf`` into missing) becomes the
  fill value;
* then a numeric value below the low fence becomes the low clip target and one above
  the high fence the high clip target (``clean.clip_outliers``' ``clipped_to``);
* then a finite numeric value still outside the schema's ``[minimum, maximum]`` is
  clipped to it. Ranges are inferred from the raw training data, so this changes
  nothing the cleaning step saw; it keeps ``-1e308`` out of a column whose minimum is 0
  (and out of float32 overflow) without refusing rows that drifted.

:class:`NumericRule` is that rule compiled for a block of numeric columns at once: the
model server applies it to every request (one row or ten thousand) and
:func:`apply_fitted` applies it to one column of a training frame.

The model server imports this module: it depends on the standard library and numpy
only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = ["FittedColumn", "NumericRule", "apply_fitted"]


_NO_CLIP = (-np.inf, np.inf, -np.inf, np.inf)


class FittedColumn(Protocol):
    """What :func:`apply_fitted` reads of a column (a ``ColumnSpec`` satisfies it)."""

    @property
    def kind(self) -> str:
        """``numeric``, ``boolean``, ``categorical`` or ``datetime``."""

    @property
    def fill(self) -> float | str | None:
        """The training fill value, or ``None`` for none."""

    @property
    def clip(self) -> tuple[float, float, float, float] | None:
        """``(low_fence, high_fence, low_to, high_to)``, or ``None`` for none."""

    @property
    def minimum(self) -> float | None:
        """Lowest value the schema allows, or ``None``."""

    @property
    def maximum(self) -> float | None:
        """Highest value the schema allows, or ``None``."""


class NumericRule:
    """The fitted cleaning of several numeric (or boolean) columns, as arrays.

    Args:
        specs: The columns, in the order of the block's columns.
    """

    def __init__(self, specs: Sequence[FittedColumn]) -> None:
        self.fill = np.array(
            [np.nan if s.fill is None else float(s.fill) for s in specs], dtype=np.float64
        )
        self.has_fill = ~np.isnan(self.fill)
        clips = [s.clip if s.clip is not None else _NO_CLIP for s in specs]
        self.low, self.high, self.low_to, self.high_to = (
            np.array(clips, dtype=np.float64).reshape(len(specs), 4).T
        )
        self.minimum = np.array(
            [-np.inf if s.minimum is None else float(s.minimum) for s in specs], dtype=np.float64
        )
        self.maximum = np.array(
            [np.inf if s.maximum is None else float(s.maximum) for s in specs], dtype=np.float64
        )
        self._per_column = list(
            zip(
                self.fill.tolist(),
                self.low.tolist(),
                self.high.tolist(),
                self.low_to.tolist(),
                self.high_to.tolist(),
                self.minimum.tolist(),
                self.maximum.tolist(),
                strict=True,
            )
        )

    def apply(self, block: np.ndarray) -> np.ndarray:
        """Apply the rule to an ``(n, k)`` float64 block; returns a new block.

        Missing and non-finite values become the fill where there is one; without one
        they stay as they are (NaN, ±inf) for the caller to accept or refuse.
        """
        out = np.array(block, dtype=np.float64)
        absent = ~np.isfinite(out)
        if absent.any():
            out = np.where(absent & self.has_fill, self.fill, out)
        # NaN compares false both ways, so a missing value without a fill stays missing.
        out = np.where(out < self.low, self.low_to, out)
        out = np.where(out > self.high, self.high_to, out)
        finite = np.isfinite(out)
        return np.where(finite, np.clip(out, self.minimum, self.maximum), out)

    def apply_one(self, row: list[float]) -> list[float]:
        """:meth:`apply` for one row of Python floats, without numpy (a request's row).

        The same rule, step for step; a test proves the two equal.
        """
        out = []
        for value, (fill, low, high, low_to, high_to, minimum, maximum) in zip(
            row, self._per_column, strict=True
        ):
            if not math.isfinite(value) and fill == fill:  # NaN != NaN: no fill
                value = fill
            if value < low:
                value = low_to
            elif value > high:
                value = high_to
            if math.isfinite(value):
                value = minimum if value < minimum else maximum if value > maximum else value
            out.append(value)
        return out


def apply_fitted(spec: FittedColumn, values: np.ndarray) -> np.ndarray:
    """Treat coerced values of one column exactly as the fitted cleaning step did.

    Args:
        spec: The column's fitted cleaning (``kind``, ``fill``, ``clip``, and the
            schema's ``minimum``/``maximum``).
        values: The column, coerced: ``float64`` for numeric and boolean columns
            (``NaN`` missing), ``datetime64[ns]`` for datetime columns (``NaT``
            missing), an object array of ``str`` or ``NaN``/``None`` for categorical
            columns. Vectorized: one row or millions.

    Returns:
        A new array of the same dtype; the input is not modified. Without a fitted
        fill, missing values stay missing; without a fitted clip, values stay as they are.
    """
    if spec.kind in ("numeric", "boolean"):
        column = np.asarray(values, dtype=np.float64).reshape(-1, 1)
        return NumericRule([spec]).apply(column)[:, 0]
    if spec.kind == "datetime":
        out = np.array(values, dtype="datetime64[ns]")
        if spec.fill is not None:
            out[np.isnat(out)] = np.datetime64(str(spec.fill), "ns")
        return out
    out = np.array(values, dtype=object)
    if spec.fill is not None:
        # Elementwise in C: `v != v` is true only for NaN; `v == None` only for None.
        missing = (out != out) | np.equal(out, None)
        out[missing] = str(spec.fill)
    return out
