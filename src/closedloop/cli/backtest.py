"""``closedloop backtest``: replay a labelled dataset under static, periodic and policy retraining."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from closedloop.cli._common import console, err_console, one_line_errors

if TYPE_CHECKING:
    import pandas as pd

_WINDOWS_OF_A_SCENARIO = 40


def _load(
    data: str | None,
    scenario: str | None,
    dataset: str | None,
    target: str | None,
    time_column: str | None,
    rows: int,
    seed: int,
) -> tuple[pd.DataFrame, str, str | None]:
    """The frame, its target and its time column, from DATA, --scenario or --dataset."""
    from closedloop.backtest import BacktestError

    given = [
        name
        for name, value in (("DATA", data), ("--scenario", scenario), ("--dataset", dataset))
        if value
    ]
    if len(given) != 1:
        raise BacktestError(
            "give exactly one of DATA (a CSV or Parquet file), --scenario NAME or --dataset NAME"
            + (f"; got {', '.join(given)}" if given else "")
        )
    if scenario is not None:
        from closedloop.data.scenarios import SCENARIOS, scenario_stream

        if scenario not in SCENARIOS:
            raise BacktestError(
                f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}"
            )
        frame = scenario_stream(scenario, rows, seed=seed)
        return frame, target or "is_fraud", time_column or "transaction_time"
    if dataset is not None:
        from closedloop.data.public import PUBLIC_DATASETS

        if dataset not in PUBLIC_DATASETS:
            raise BacktestError(
                f"unknown dataset {dataset!r}; choose one of {', '.join(PUBLIC_DATASETS)}"
            )
        public = PUBLIC_DATASETS[dataset]
        return public.load(), target or public.target, time_column or public.time_column
    from closedloop.ml.ingest import ingest

    assert data is not None
    if target is None:
        raise BacktestError("--target is required with a DATA file: name the label column")
    return ingest(data).frame, target, time_column


def register(app: typer.Typer) -> None:
    """Add ``backtest`` to *app*."""

    @app.command()
    @one_line_errors
    def backtest(
        data: Annotated[
            str | None,
            typer.Argument(
                help="Time-ordered labelled rows: a CSV or Parquet file (or s3:// URI)."
            ),
        ] = None,
        target: Annotated[
            str | None,
            typer.Option(help="Label column (default for --scenario/--dataset: theirs)."),
        ] = None,
        time_column: Annotated[
            str | None,
            typer.Option(
                help="Orders the rows; datetimes also set the clock of cooldown and daily cap "
                "(default: row order)."
            ),
        ] = None,
        policy: Annotated[
            Path | None,
            typer.Option(
                help="Drift policy JSON (see closedloop.drift.policy) (default: built-in defaults)."
            ),
        ] = None,
        window_rows: Annotated[
            int | None, typer.Option(help="Rows per window (default: the policy's window_size).")
        ] = None,
        initial_rows: Annotated[int, typer.Option(help="Rows the first model trains on.")] = 5000,
        periodic_every: Annotated[
            int, typer.Option(help="The periodic strategy retrains after every N windows.")
        ] = 1,
        metric: Annotated[
            str | None,
            typer.Option(
                help="Reported metric: roc_auc, log_loss, accuracy, mae, rmse "
                "(default: the policy's quality_metric)."
            ),
        ] = None,
        label_delay_windows: Annotated[
            int, typer.Option(help="Labels of a window arrive this many windows later.")
        ] = 0,
        curve: Annotated[
            bool, typer.Option(help="Also replay periodic every 1, 2, 3, 5, 10 windows.")
        ] = True,
        json_path: Annotated[
            Path | None, typer.Option("--json", help="Write the result as JSON here.")
        ] = None,
        report: Annotated[Path | None, typer.Option(help="Write the HTML report here.")] = None,
        scenario: Annotated[
            str | None,
            typer.Option(help="Instead of DATA: abrupt, gradual, recurring, covariate or none."),
        ] = None,
        dataset: Annotated[
            str | None, typer.Option(help="Instead of DATA: a public dataset (rainfall).")
        ] = None,
        rows: Annotated[
            int | None,
            typer.Option(
                help=f"--scenario: rows of the stream (default: initial rows + "
                f"{_WINDOWS_OF_A_SCENARIO} windows)."
            ),
        ] = None,
        seed: Annotated[int, typer.Option(help="--scenario: seed of the stream.")] = 0,
        quiet: Annotated[bool, typer.Option(help="No line per window on stderr.")] = False,
    ) -> None:
        """Replay labelled rows window by window: never retrain, retrain on a clock, or follow the drift policy."""
        from closedloop.backtest import (
            CURVE_EVERY,
            BacktestError,
            BacktestProgress,
            beats_clock,
            run_backtest,
        )
        from closedloop.backtest.report import terminal_table, to_html
        from closedloop.drift.policy import DriftPolicy

        drift_policy = DriftPolicy.load(policy) if policy is not None else DriftPolicy()
        window = drift_policy.window_size if window_rows is None else window_rows
        for name, value, low in (
            ("--window-rows", window, 1),
            ("--initial-rows", initial_rows, 2),
            ("--periodic-every", periodic_every, 1),
            ("--label-delay-windows", label_delay_windows, 0),
        ):
            if value < low:
                raise BacktestError(f"{name} must be at least {low}, got {value}")
        stream_rows = initial_rows + _WINDOWS_OF_A_SCENARIO * window if rows is None else rows
        if stream_rows < 1:
            raise BacktestError(f"--rows must be positive, got {stream_rows}")
        frame, label, time = _load(data, scenario, dataset, target, time_column, stream_rows, seed)

        def show(event: BacktestProgress) -> None:
            err_console.print(event.line(), highlight=False, markup=False)

        result = run_backtest(
            frame,
            label,
            drift_policy,
            time_column=time,
            window_rows=window,
            initial_rows=initial_rows,
            periodic_every=periodic_every,
            metric=metric,
            label_delay_windows=label_delay_windows,
            curve_every=CURVE_EVERY if curve else (),
            progress=None if quiet else show,
        )
        console.print(terminal_table(result))
        goals = beats_clock(result)
        if goals["beats_clock"] is not None:
            console.print(
                f"policy: {goals['policy_retrains']} retrains, mean {result.metric} "
                f"{goals['policy_mean']:.4f}; the clock at that many retrains: "
                f"{goals['clock_at_policy_retrains']:.4f} "
                f"({'beats' if goals['beats_clock'] else 'does not beat'} the clock)",
                highlight=False,
            )
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(result.to_json())
            console.print(f"json: {json_path}", highlight=False)
        if report is not None:
            title = f"Backtest: {scenario or dataset or data}"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(to_html(result, title=title))
            console.print(f"report: {report}", highlight=False)
