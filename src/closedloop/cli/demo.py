"""``closedloop demo``: the closed loop on one machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from closedloop import config
from closedloop.cli._common import console, one_line_errors


def register(app: typer.Typer) -> None:
    """Add ``demo`` to *app*."""

    @app.command()
    @one_line_errors
    def demo(
        workdir: Annotated[
            Path | None,
            typer.Option(help="Where everything goes (default: $CLOSEDLOOP_HOME/demo-<time>)."),
        ] = None,
        train_rows: Annotated[
            int, typer.Option(min=2000, help="Rows of the first training run.")
        ] = 20_000,
        seed: Annotated[
            int,
            typer.Option(
                min=0,
                help="Seed of the data, the traffic and every random choice of the runs "
                "(tests/benchmarks/demo_pass_rate.py runs seeds 0-9).",
            ),
        ] = 0,
    ) -> None:
        """Train v1, serve it, drift the traffic, and watch the loop retrain and promote v2."""
        from closedloop.demo.run import DemoConfig, run_demo

        target = workdir or config.home() / f"demo-{time.strftime('%Y%m%dT%H%M%S')}"
        started = time.monotonic()
        result = run_demo(
            target,
            DemoConfig(train_rows=train_rows, seed=seed),
            say=lambda line: console.print(line, highlight=False, markup=False),
        )
        console.print(
            f"[green]demo finished[/] in {time.monotonic() - started:.0f}s: served {', '.join(result.versions_served)}; "
            f"{result.failed_requests} failed requests; {result.retraining_runs} retraining run(s); "
            f"champion {result.promoted}"
        )
        console.print(f"report: {result.report}")
