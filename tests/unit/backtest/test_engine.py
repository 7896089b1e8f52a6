"""The backtest engine on small scenario streams, its JSON, and ``closedloop backtest``."""

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from closedloop.backtest import (
    BacktestError,
    BacktestResult,
    CurvePoint,
    StrategyResult,
    beats_clock,
    run_backtest,
)
from closedloop.backtest.report import to_html
from closedloop.cli.main import app
from closedloop.data.scenarios import scenario_stream
from closedloop.drift.policy import DriftPolicy
from closedloop.ml.retrain import RetrainRecipe

INITIAL = 2000
WINDOW = 500
WINDOWS = 12
# change_at=0.4 of 8000 rows: row 3200, inside window 3 (rows 3000-3499).
CHANGE_WINDOW = 2
FAST = RetrainRecipe(params={"n_estimators": 80, "max_depth": 3, "n_jobs": 1})
POLICY = DriftPolicy(window_size=WINDOW)


def _stream(name: str) -> pd.DataFrame:
    return scenario_stream(name, INITIAL + WINDOWS * WINDOW, seed=0)


@pytest.fixture(scope="module")
def abrupt() -> BacktestResult:
    return run_backtest(
        _stream("abrupt"),
        "is_fraud",
        POLICY,
        time_column="transaction_time",
        window_rows=WINDOW,
        initial_rows=INITIAL,
        recipe=FAST,
        curve_every=(1, 3),
    )


def test_static_never_retrains(abrupt):
    static = abrupt.strategies["static"]
    assert static.retrains == 0 and static.promotions == 0
    assert len(static.metrics) == WINDOWS


def test_policy_retrains_after_the_change_and_no_more_than_the_clock(abrupt):
    policy = abrupt.strategies["policy"]
    periodic = abrupt.strategies["periodic"]
    assert policy.retrains >= 1
    assert min(policy.runs) >= CHANGE_WINDOW
    assert policy.retrains <= periodic.retrains == WINDOWS
    assert set(policy.promotions_at) <= set(policy.runs)
    assert policy.mean_metric > abrupt.strategies["static"].mean_metric
    assert len(policy.reasons) == WINDOWS


def test_periodic_curve_reuses_the_periodic_replay(abrupt):
    assert [p.every for p in abrupt.periodic_curve] == [1, 3]
    first = abrupt.periodic_curve[0]
    assert first.retrains == abrupt.strategies["periodic"].retrains
    assert first.mean_metric == abrupt.strategies["periodic"].mean_metric
    assert abrupt.periodic_curve[1].retrains == WINDOWS // 3


def test_json_shape_and_round_trip(abrupt):
    data = json.loads(abrupt.to_json())
    assert set(data["strategies"]) == {"static", "periodic", "policy"}
    for strategy in data["strategies"].values():
        assert {"retrains", "mean_metric", "min_metric", "windows"} <= set(strategy)
        assert len(strategy["windows"]) == WINDOWS
    assert [set(p) >= {"every", "retrains", "mean_metric"} for p in data["periodic_curve"]] == [
        True,
        True,
    ]
    again = BacktestResult.from_json(abrupt.to_json())
    assert again.to_dict() == abrupt.to_dict()


def test_beats_clock_interpolates_the_curve_in_retrains():
    def strategy(name: str, mean: float, retrains: int) -> StrategyResult:
        return StrategyResult(name, (mean, mean), runs=tuple(range(retrains)))

    result = BacktestResult(
        metric="roc_auc",
        window_rows=10,
        initial_rows=10,
        label_delay_windows=0,
        window_seconds=1.0,
        clock="policy",
        strategies={
            "static": strategy("static", 0.5, 0),
            "periodic": strategy("periodic", 0.9, 10),
            "policy": strategy("policy", 0.85, 2),
        },
        periodic_curve=(CurvePoint(1, 10, 3, 0.9, 0.8), CurvePoint(5, 4, 1, 0.8, 0.6)),
    )
    goals = beats_clock(result)
    # Between static (0 retrains, 0.5) and k=5 (4 retrains, 0.8): 0.65 at 2 retrains.
    assert goals["clock_at_policy_retrains"] == pytest.approx(0.65)
    assert goals["beats_clock"] is True
    assert goals["within_budget"] is False  # 0.85 < 0.9 - 0.005


def test_policy_does_not_retrain_without_change():
    result = run_backtest(
        _stream("none"),
        "is_fraud",
        POLICY,
        time_column="transaction_time",
        window_rows=WINDOW,
        initial_rows=INITIAL,
        recipe=FAST,
        strategies=("policy",),
        curve_every=(),
    )
    assert list(result.strategies) == ["policy"]
    assert result.strategies["policy"].retrains == 0
    assert not math.isnan(result.strategies["policy"].mean_metric)
    assert result.clock == "time_column"


def test_late_labels_delay_runs_and_retraining_data(abrupt):
    result = run_backtest(
        _stream("abrupt"),
        "is_fraud",
        POLICY,
        time_column="transaction_time",
        window_rows=WINDOW,
        initial_rows=INITIAL,
        recipe=FAST,
        label_delay_windows=1,
        curve_every=(),
    )
    # No label before window 2 closes: the clock's first run comes one window late.
    assert result.strategies["periodic"].runs == tuple(range(1, WINDOWS))
    # Quality of window i is known at window i + 1: the policy cannot fire earlier.
    assert min(result.strategies["policy"].runs) >= min(abrupt.strategies["policy"].runs)
    assert result.label_delay_windows == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"window_rows": 0}, "window_rows"),
        ({"initial_rows": 1}, "initial_rows"),
        ({"time_column": "nope"}, "time column 'nope'"),
        ({"initial_rows": 100_000}, "no window"),
        ({"metric": "f1"}, "unknown metric 'f1'"),
        ({"label_delay_windows": -1}, "label_delay_windows"),
    ],
)
def test_bad_arguments_fail_before_any_training(arguments, message):
    frame = _stream("none").iloc[:3000]
    with pytest.raises(BacktestError, match=message):
        run_backtest(frame, "is_fraud", POLICY, **{"window_rows": WINDOW, **arguments})
    with pytest.raises(BacktestError, match="target column 'label'"):
        run_backtest(frame, "label", POLICY)


def test_html_report_is_self_contained(abrupt):
    page = to_html(abrupt, title="abrupt")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("data:image/png;base64,") == 2
    assert "periodic (every 1)" in page and 'src="http' not in page


runner = CliRunner()


def test_cli_writes_json_and_html(tmp_path):
    data = tmp_path / "stream.csv"
    scenario_stream("abrupt", INITIAL + 4 * WINDOW, seed=0, change_at=0.75).to_csv(
        data, index=False
    )
    out, report = tmp_path / "out" / "result.json", tmp_path / "out" / "report.html"
    result = runner.invoke(
        app,
        [
            "backtest",
            str(data),
            "--target",
            "is_fraud",
            "--time-column",
            "transaction_time",
            "--window-rows",
            str(WINDOW),
            "--initial-rows",
            str(INITIAL),
            "--no-curve",
            "--json",
            str(out),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert set(written["strategies"]) == {"static", "periodic", "policy"}
    assert len(written["strategies"]["static"]["windows"]) == 4
    assert report.read_text().startswith("<!DOCTYPE html>")
    assert "window 4/4" in result.output  # progress, one line per window


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--target", "label"], "target column 'label'"),
        (["--target", "is_fraud", "--window-rows", "0"], "--window-rows must be at least 1"),
        (["--scenario", "sideways"], "unknown scenario 'sideways'"),
    ],
)
def test_cli_bad_input_is_one_line_error(tmp_path, arguments, message):
    data = tmp_path / "stream.csv"
    scenario_stream("none", 300, seed=0).to_csv(data, index=False)
    positional = [] if "--scenario" in arguments else [str(data)]
    result = runner.invoke(app, ["backtest", *positional, *arguments])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
