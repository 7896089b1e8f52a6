"""Backtests: replay a time-ordered labelled dataset through the loop's own code paths.

* :mod:`closedloop.backtest.engine` — :func:`run_backtest` replays the rows window by
  window under three strategies (``static``, ``periodic``, ``policy``) with the same
  retraining recipe, gate, quality test, drift detector and trigger decision as the
  live loop, and :func:`beats_clock` says whether the policy beat the clock;
* :mod:`closedloop.backtest.report` — the HTML report and the terminal table.

No S3 and no servers: everything runs in process.
"""

from closedloop.backtest.engine import (
    CURVE_EVERY,
    STRATEGIES,
    BacktestError,
    BacktestProgress,
    BacktestResult,
    CurvePoint,
    StrategyResult,
    beats_clock,
    run_backtest,
)

__all__ = [
    "CURVE_EVERY",
    "STRATEGIES",
    "BacktestError",
    "BacktestProgress",
    "BacktestResult",
    "CurvePoint",
    "StrategyResult",
    "beats_clock",
    "run_backtest",
]
