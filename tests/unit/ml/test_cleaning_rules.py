"""The fitted cleaning rule shared by training, batch inference and serving."""

import subprocess
import sys

import numpy as np

from closedloop.ml.cleaning_rules import apply_fitted
from closedloop.ml.schema import ColumnSpec

NUMERIC = ColumnSpec("x", "numeric", fill=5.0, clip=(0.0, 50.0, 1.0, 40.0))


def test_numbers_are_filled_then_clipped():
    values = np.array([np.nan, np.inf, -np.inf, -3.0, 0.0, 25.0, 50.0, 51.0])
    out = apply_fitted(NUMERIC, values)
    np.testing.assert_array_equal(out, [5.0, 5.0, 5.0, 1.0, 0.0, 25.0, 50.0, 40.0])
    assert np.isnan(values[0])  # the input is left alone
    # One row costs the same code as a million.
    assert apply_fitted(NUMERIC, np.array([99.0])).tolist() == [40.0]


def test_a_fill_outside_the_fences_is_clipped_as_at_training():
    # A mean fill can lie beyond a fence: training imputed, then clipped.
    spec = ColumnSpec("x", "numeric", fill=90.0, clip=(0.0, 50.0, 1.0, 40.0))
    assert apply_fitted(spec, np.array([np.nan])).tolist() == [40.0]


def test_without_a_fit_values_stay_as_they_are():
    bare = ColumnSpec("x", "numeric")
    out = apply_fitted(bare, np.array([np.nan, 1e9]))
    assert np.isnan(out[0]) and out[1] == 1e9
    clip_only = ColumnSpec("x", "numeric", clip=(0.0, 1.0, 0.0, 1.0))
    out = apply_fitted(clip_only, np.array([np.nan, 7.0]))
    assert np.isnan(out[0]) and out[1] == 1.0


def test_booleans_categories_and_dates_are_filled():
    assert apply_fitted(ColumnSpec("b", "boolean", fill=1.0), np.array([np.nan, 0.0])).tolist() == [
        1.0,
        0.0,
    ]
    categories = np.array(["a", np.nan, None, "b"], dtype=object)
    filled = apply_fitted(ColumnSpec("c", "categorical", fill="missing"), categories)
    assert filled.tolist() == ["a", "missing", "missing", "b"]
    stamps = np.array(["NaT", "2026-01-01T00:00:00"], dtype="datetime64[ns]")
    spec = ColumnSpec("t", "datetime", fill="2026-01-31T12:00:00.5")
    out = apply_fitted(spec, stamps)
    assert out.dtype == np.dtype("datetime64[ns]")
    assert out.tolist() == [
        np.datetime64("2026-01-31T12:00:00.500000000", "ns").item(),
        np.datetime64("2026-01-01", "ns").item(),
    ]


def test_the_rule_imports_numpy_only():
    code = (
        "import sys\n"
        "import closedloop.ml.cleaning_rules\n"
        "print(','.join(m for m in ('pandas', 'sklearn', 'scipy', 'kfp') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_the_one_row_rule_equals_the_block_rule():
    from closedloop.ml.cleaning_rules import NumericRule
    from closedloop.ml.schema import ColumnSpec

    specs = [
        ColumnSpec(
            "a", "numeric", minimum=0.0, maximum=100.0, fill=5.0, clip=(1.0, 50.0, 2.0, 40.0)
        ),
        ColumnSpec("b", "numeric", nullable=True),
        ColumnSpec("c", "numeric", minimum=-10.0, maximum=10.0),
        ColumnSpec("d", "boolean", fill=1.0),
    ]
    rule = NumericRule(specs)
    rng = np.random.default_rng(3)
    choices = [np.nan, np.inf, -np.inf, 0.0, 1.0, 0.5, -1e308, 1e308, 45.0, 60.0, -20.0, 3.0]
    block = rng.choice(choices, size=(500, 4))
    expected = rule.apply(block)
    for row, want in zip(block.tolist(), expected.tolist(), strict=True):
        got = rule.apply_one(row)
        assert np.array_equal(np.array(got), np.array(want), equal_nan=True), (row, got, want)
