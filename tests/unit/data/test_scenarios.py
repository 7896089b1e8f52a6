import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.data.scenarios import (
    GRADUAL_RAMP,
    RECURRING_BLOCK,
    SCENARIOS,
    describe_scenario,
    scenario_segments,
    scenario_stream,
)
from closedloop.ml.schema import infer_schema
from closedloop.ml.train import ModelConfig, predict_scores, train_model

ROWS = 20_000
CHANGE = 8_000  # change_at=0.4 of ROWS
TRAIN = 5_000
WINDOW = 2_000
FAST_XGBOOST = ModelConfig("xgboost", {"n_estimators": 60, "max_depth": 3, "n_jobs": 1}, seed=0)


@pytest.fixture(scope="module")
def streams() -> dict[str, pd.DataFrame]:
    return {name: scenario_stream(name, ROWS, seed=0) for name in SCENARIOS}


@pytest.mark.parametrize("name", SCENARIOS)
def test_stream_is_one_time_ordered_frame_of_generator_columns(name, streams):
    stream = streams[name]
    assert list(stream.columns) == list(generate_transactions(10).columns)
    assert len(stream) == ROWS
    pd.testing.assert_index_equal(stream.index, pd.RangeIndex(ROWS))
    times = stream["transaction_time"]
    assert (times.diff().iloc[1:] > pd.Timedelta(0)).all()
    assert (times.dt.hour == stream["hour"]).all()
    assert set(stream[DEFAULT_TARGET].unique()) == {0, 1}
    assert stream.notna().all().all()


def test_streams_are_reproducible_per_seed(streams):
    pd.testing.assert_frame_equal(streams["gradual"], scenario_stream("gradual", ROWS, seed=0))
    other = scenario_stream("gradual", ROWS, seed=1)
    assert not streams["gradual"]["amount"].equals(other["amount"])


def test_none_does_not_repeat_segments(streams):
    rows = streams["none"].drop(columns=["transaction_time", DEFAULT_TARGET])
    assert rows.duplicated().mean() < 0.01


def test_scenarios_share_the_rows_before_the_change(streams):
    before = streams["none"].iloc[:CHANGE]
    for name in SCENARIOS:
        pd.testing.assert_frame_equal(streams[name].iloc[:CHANGE], before)
    # The concept scenarios only relabel: their features match everywhere.
    features = streams["none"].drop(columns=DEFAULT_TARGET)
    for name in ("abrupt", "gradual", "recurring"):
        pd.testing.assert_frame_equal(streams[name].drop(columns=DEFAULT_TARGET), features)
    assert not streams["abrupt"][DEFAULT_TARGET].equals(streams["none"][DEFAULT_TARGET])


def _knob_per_row(name: str, attribute: str) -> np.ndarray:
    values = np.empty(ROWS)
    segments = scenario_segments(name, ROWS)
    assert segments[0].start == 0 and segments[-1].stop == ROWS
    for previous, segment in itertools.pairwise(segments):
        assert previous.stop == segment.start
    for segment in segments:
        values[segment.start : segment.stop] = getattr(segment, attribute)
    return values


def test_segments_follow_each_scenario_shape():
    abrupt = _knob_per_row("abrupt", "concept_drift")
    assert (abrupt[:CHANGE] == 0).all() and (abrupt[CHANGE:] == 1).all()

    gradual = _knob_per_row("gradual", "concept_drift")
    ramp_end = CHANGE + round(GRADUAL_RAMP * ROWS)
    assert (gradual[:CHANGE] == 0).all() and (gradual[ramp_end:] == 1).all()
    ramp = gradual[CHANGE:ramp_end]
    assert (np.diff(ramp) >= 0).all() and 0 < ramp[0] < 0.05 and 0.95 < ramp[-1] < 1
    assert len(np.unique(ramp)) >= 20

    recurring = _knob_per_row("recurring", "concept_drift")
    block = round(RECURRING_BLOCK * ROWS)
    expected = [0, 1, 0, 1, 0]
    starts = [0, CHANGE, CHANGE + block, CHANGE + 2 * block, CHANGE + 3 * block, ROWS]
    for value, start, stop in zip(expected, starts, starts[1:], strict=False):
        assert (recurring[start:stop] == value).all()

    shift = _knob_per_row("covariate", "covariate_shift")
    assert (shift[:CHANGE] == 0).all() and (shift[CHANGE:] > 0).all()
    assert (_knob_per_row("covariate", "concept_drift") == 0).all()
    assert (_knob_per_row("none", "concept_drift") == 0).all()
    assert (_knob_per_row("none", "covariate_shift") == 0).all()


def test_unaligned_change_point_starts_a_segment():
    segments = scenario_segments("abrupt", 1000, change_at=0.123)
    assert next(s.start for s in segments if s.concept_drift == 1) == 123
    assert scenario_stream("abrupt", 1000, change_at=0.123)["transaction_time"].is_unique


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="abrupt, gradual, recurring, covariate, none"):
        scenario_stream("sudden")
    with pytest.raises(ValueError, match="unknown scenario"):
        describe_scenario("sudden")
    with pytest.raises(ValueError, match="change_at"):
        scenario_stream("abrupt", 1000, change_at=1.5)
    with pytest.raises(ValueError, match="rows"):
        scenario_stream("abrupt", 0)
    with pytest.raises(ValueError, match="rows_per_day"):
        scenario_stream("abrupt", 1000, rows_per_day=0)


def test_every_scenario_has_a_one_line_description():
    descriptions = [describe_scenario(name) for name in SCENARIOS]
    assert all(d and "\n" not in d for d in descriptions)
    assert len(set(descriptions)) == len(SCENARIOS)


def _window_aucs(stream: pd.DataFrame, scores: np.ndarray) -> dict[int, float]:
    y = stream[DEFAULT_TARGET].to_numpy()
    return {
        start: roc_auc_score(y[start : start + WINDOW], scores[start : start + WINDOW])
        for start in range(CHANGE, ROWS, WINDOW)
    }


def test_model_quality_follows_the_scenario(streams):
    # Every scenario shares the first rows, so one model trained on them serves all.
    # The time column orders the stream; it is not a feature.
    features = {name: s.drop(columns="transaction_time") for name, s in streams.items()}
    train = features["none"].iloc[:TRAIN]
    schema = infer_schema(train, DEFAULT_TARGET)
    model = train_model(train, schema, FAST_XGBOOST)
    scores = {name: predict_scores(model, f, schema) for name, f in features.items()}
    y_pre = features["none"][DEFAULT_TARGET].to_numpy()[TRAIN:CHANGE]
    pre = roc_auc_score(y_pre, scores["none"][TRAIN:CHANGE])
    assert pre > 0.85
    auc = {name: _window_aucs(features[name], scores[name]) for name in SCENARIOS}

    assert all(a < pre - 0.1 for a in auc["abrupt"].values())
    gradual = list(auc["gradual"].values())
    assert gradual[0] > pre - 0.1 and all(a < pre - 0.1 for a in gradual[3:])
    # recurring blocks (3,000 rows): new concept 8k-11k, old 11k-14k, new 14k-17k, old 17k+
    assert auc["recurring"][8_000] < pre - 0.1 and auc["recurring"][14_000] < pre - 0.1
    assert auc["recurring"][12_000] > pre - 0.05 and auc["recurring"][18_000] > pre - 0.05
    for name in ("covariate", "none"):
        assert abs(np.mean(list(auc[name].values())) - pre) < 0.03, name

    # Harmless: a model retrained on shifted rows does not beat the old one on later ones.
    shifted = features["covariate"]
    middle = (CHANGE + ROWS) // 2
    retrained = train_model(shifted.iloc[CHANGE:middle], schema, FAST_XGBOOST)
    later = shifted.iloc[middle:]
    gain = roc_auc_score(
        later[DEFAULT_TARGET], predict_scores(retrained, later, schema)
    ) - roc_auc_score(later[DEFAULT_TARGET], scores["covariate"][middle:])
    assert gain < 0.02
