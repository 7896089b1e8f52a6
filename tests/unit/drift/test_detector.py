import json

import numpy as np
import pandas as pd
import pytest

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.drift.detector import (
    DriftEncoder,
    EncodedColumn,
    FittedDetector,
    fit_detector,
    load_detector_dir,
    save_detector_dir,
)
from closedloop.drift.policy import DriftPolicy
from closedloop.drift.verdict import drifted_features
from closedloop.ml.schema import InputSchema, infer_schema

WINDOW = 1000
SEEDS = range(11, 16)
POLICY = DriftPolicy(effect_size_threshold=0.0)


def _drifted(result) -> tuple[str, ...]:
    return drifted_features(POLICY, result.p_values, result.effect_sizes)


@pytest.fixture(scope="module")
def schema() -> InputSchema:
    return infer_schema(generate_transactions(3000, seed=301), DEFAULT_TARGET)


@pytest.fixture(scope="module")
def detector(schema) -> FittedDetector:
    return fit_detector(generate_transactions(8000, seed=300), schema, max_reference_rows=5000)


def test_fit_keeps_a_bounded_reference_sample(detector, schema):
    assert len(detector.reference) == 5000
    assert list(detector.reference.columns) == list(schema.feature_names)
    assert detector.feature_names == tuple(
        n for n in schema.feature_names if n != "transaction_time"
    )
    assert detector.encoder.dropped == ("transaction_time",)
    assert detector.p_val == 0.05


def test_no_drift_on_in_distribution_windows(detector):
    results = [detector.score(generate_transactions(WINDOW, seed=s)) for s in SEEDS]
    # Each window is a 1% false-alarm test; five clean windows raise at most one.
    assert sum(bool(_drifted(r)) for r in results) <= 1
    assert all(r.n_rows == WINDOW for r in results)
    assert max(r.effect_size for r in results) < 0.1


def test_drift_on_covariate_shift(detector):
    for seed in SEEDS:
        result = detector.score(generate_transactions(WINDOW, seed=seed, covariate_shift=1.0))
        assert {"channel", "amount"} <= set(_drifted(result))
        assert result.p_values["channel"] < POLICY.feature_p_threshold(len(result.p_values))
        assert result.effect_size > 0.3


def test_result_fields_are_consistent(detector):
    result = detector.score(generate_transactions(WINDOW, seed=21, covariate_shift=0.5))
    names = set(detector.feature_names)
    assert set(result.p_values) == set(result.distances) == set(result.effect_sizes) == names
    assert "is_drift" not in result.to_dict()  # the verdict is the policy's, not the detector's
    assert all(0.0 <= e <= 1.0 for e in result.effect_sizes.values())
    assert result.effect_size == max(result.effect_sizes.values())
    json.dumps(result.to_dict(), allow_nan=False)


def test_missing_and_unknown_categories_show_up_as_drift(detector):
    window = generate_transactions(WINDOW, seed=22)
    window.loc[window.index[:300], "country"] = None
    window.loc[window.index[300:400], "merchant_category"] = "casino"
    result = detector.score(window)
    assert {"country", "merchant_category"} <= set(_drifted(result))


def test_save_load_gives_identical_p_values(detector, tmp_path):
    save_detector_dir(detector, tmp_path / "drift")
    loaded = load_detector_dir(tmp_path / "drift")
    assert loaded.encoder == detector.encoder
    assert loaded.schema == detector.schema
    pd.testing.assert_frame_equal(
        loaded.reference,
        detector.reference.astype({c: float for c in ("hour", "account_age_days", "card_present")}),
    )
    for shift in (0.0, 0.3, 1.0):
        window = generate_transactions(WINDOW, seed=23, covariate_shift=shift)
        before, after = detector.score(window), loaded.score(window)
        assert after.p_values == before.p_values
        assert after.distances == before.distances
        assert _drifted(after) == _drifted(before)


def test_load_reports_missing_files(detector, tmp_path):
    save_detector_dir(detector, tmp_path)
    (tmp_path / "encoder.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"encoder\.json"):
        load_detector_dir(tmp_path)


def test_encoder_codes(schema):
    reference = generate_transactions(500, seed=24)
    encoder = DriftEncoder.fit(reference, schema)
    channel = next(c for c in encoder.columns if c.name == "channel")
    assert channel.categories == ("in_person", "online")
    window = pd.DataFrame(
        {
            "amount": [10.0, np.nan],
            "channel": ["online", "phone"],
            "merchant_category": [None, "fuel"],
            "hour": [1, 2],
            "country": ["US", "US"],
            "account_age_days": [5, 6],
            "card_present": [0, 1],
        }
    )
    matrix = encoder.transform(window)
    assert matrix.dtype == np.float32
    assert matrix.shape == (2, len(encoder.columns))
    names = list(encoder.feature_names)
    assert matrix[1, names.index("amount")] == np.float32(reference["amount"].median())
    assert matrix[:, names.index("channel")].tolist() == [1.0, channel.unknown_code]
    merchant = encoder.columns[names.index("merchant_category")]
    assert matrix[0, names.index("merchant_category")] == merchant.missing_code
    assert matrix[1, names.index("merchant_category")] == merchant.categories.index("fuel")
    assert DriftEncoder.from_dict(json.loads(json.dumps(encoder.to_dict()))) == encoder
    with pytest.raises(ValueError, match="lack columns"):
        encoder.transform(window.drop(columns=["amount"]))


def test_boolean_columns_are_categorical():
    column = EncodedColumn("flag", "categorical", categories=("0", "1"))
    encoded = column.encode(pd.Series([True, False, 1.0, 0, None, 7]))
    assert encoded.tolist() == [1, 0, 1, 0, column.missing_code, column.unknown_code]


def test_errors(detector, schema):
    with pytest.raises(ValueError, match="empty"):
        detector.score(generate_transactions(10, seed=1).head(0))
    with pytest.raises(ValueError, match="no reference rows"):
        fit_detector(generate_transactions(10, seed=1).head(0), schema)
    with pytest.raises(ValueError, match="version"):
        DriftEncoder.from_dict({"version": 0, "columns": []})
