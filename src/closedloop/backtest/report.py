"""A backtest's HTML report (charts inlined as base64 PNG) and its terminal table."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

from closedloop.backtest.engine import BacktestResult, StrategyResult, beats_clock

_COLOURS = {"static": "#8c959f", "periodic": "#0969da", "policy": "#cf222e"}


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _label(strategy: StrategyResult) -> str:
    return f"periodic (every {strategy.every})" if strategy.name == "periodic" else strategy.name


def summary_rows(result: BacktestResult) -> list[tuple[str, str, str, str, str]]:
    """Rows of strategy, retrains, promotions, mean, min), as text cells."""
    return [
        (
            _label(s),
            str(s.retrains),
            str(s.promotions),
            _fmt(s.mean_metric),
            _fmt(s.min_metric),
        )
        for s in result.strategies.values()
    ]


def terminal_table(result: BacktestResult) -> Any:
    """A :class:`rich.table.Table` of the strategies (print it with a rich console)."""
    from rich.table import Table

    table = Table(title=f"backtest: {result.windows} windows of {result.window_rows} rows")
    table.add_column("strategy")
    for name in ("retrains", "promotions", f"mean {result.metric}", f"min {result.metric}"):
        table.add_column(name, justify="right")
    for row in summary_rows(result):
        table.add_row(*row)
    return table


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures(result: BacktestResult) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: list[tuple[str, str]] = []
    try:
        fig, ax = plt.subplots(figsize=(10, 4.5))
        for strategy in result.strategies.values():
            x = range(1, len(strategy.metrics) + 1)
            ax.plot(
                x,
                strategy.metrics,
                marker=".",
                color=_COLOURS.get(strategy.name),
                label=f"{_label(strategy)}: {strategy.retrains} retrains",
            )
        policy = result.strategies.get("policy")
        if policy is not None:
            values = policy.metrics
            for i, w in enumerate(policy.runs):
                ax.axvline(
                    w + 1.5,
                    color="#cf222e",
                    linestyle="--",
                    alpha=0.5,
                    label="policy run" if i == 0 else None,
                )
            if policy.alarms:
                ax.scatter(
                    [w + 1 for w in policy.alarms],
                    [values[w] for w in policy.alarms],
                    marker="x",
                    s=60,
                    color="#9a6700",
                    zorder=3,
                    label="policy alarm",
                )
            if policy.promotions_at:
                ax.scatter(
                    [w + 1.5 for w in policy.promotions_at],
                    [values[w] for w in policy.promotions_at],
                    marker="^",
                    s=80,
                    color="#1a7f37",
                    zorder=3,
                    label="policy promotion",
                )
        ax.set(xlabel="window", ylabel=result.metric, title=f"{result.metric} per window")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
        figures.append((f"{result.metric} per window", _png(fig)))
        if result.periodic_curve:
            fig, ax = plt.subplots(figsize=(5.5, 4))
            points = sorted(result.periodic_curve, key=lambda p: p.retrains)
            static = result.strategies.get("static")
            xs = [p.retrains for p in points]
            ys = [p.mean_metric for p in points]
            if static is not None:
                xs, ys = [0, *xs], [static.mean_metric, *ys]
            ax.plot(xs, ys, marker="o", color=_COLOURS["periodic"], label="clock (static at 0)")
            for p in points:
                ax.annotate(f"k={p.every}", (p.retrains, p.mean_metric), fontsize="small")
            if policy is not None:
                ax.scatter(
                    [policy.retrains],
                    [policy.mean_metric],
                    marker="*",
                    s=160,
                    color=_COLOURS["policy"],
                    zorder=3,
                    label="policy",
                )
            ax.set(
                xlabel="retraining runs",
                ylabel=f"mean {result.metric}",
                title="policy vs retraining on a clock",
            )
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize="small")
            figures.append(("policy vs the clock", _png(fig)))
    finally:
        plt.close("all")
    return figures


def to_html(result: BacktestResult, title: str = "Backtest") -> str:
    """A self-contained HTML page: charts, the strategy table, the goals and the curve.

    Args:
        result: The backtest.
        title: Page heading.

    Returns:
        The HTML page.
    """
    goals = beats_clock(result)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in summary_rows(result)
    )
    curve = "".join(
        f"<tr><td>{p.every}</td><td>{p.retrains}</td><td>{p.promotions}</td>"
        f"<td>{_fmt(p.mean_metric)}</td><td>{_fmt(p.min_metric)}</td></tr>"
        for p in result.periodic_curve
    )
    goal_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(_goal_text(v))}</td></tr>"
        for k, v in goals.items()
    )
    images = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in _figures(result)
    )
    clock = (
        "the time column"
        if result.clock == "time_column"
        else "the policy's window_max_age_seconds"
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #d0d7de; padding: 4px 8px; text-align: right; }}
td:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em; }}
img {{ max-width: 960px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{result.windows} windows of {result.window_rows} rows after {result.initial_rows} initial
rows; metric {html.escape(result.metric)}; labels {result.label_delay_windows} window(s) late;
one window = {result.window_seconds:,.0f} s (from {clock}).</p>
{images}
<h2>Strategies</h2>
<table><tr><th>strategy</th><th>retrains</th><th>promotions</th>
<th>mean {html.escape(result.metric)}</th><th>min {html.escape(result.metric)}</th></tr>{rows}</table>
<h2>Goals</h2>
<table><tr><th>goal</th><th>value</th></tr>{goal_rows}</table>
<h2>Periodic curve</h2>
<table><tr><th>every</th><th>retrains</th><th>promotions</th><th>mean</th><th>min</th></tr>{curve}</table>
</body></html>
"""


def _goal_text(value: Any) -> str:
    if isinstance(value, float):
        return _fmt(value)
    return "n/a" if value is None else str(value)
