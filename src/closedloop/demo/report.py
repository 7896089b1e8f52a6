"""The demo's report: drift per window, quality over time per model version, retrain marks."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.demo.monitor import WindowRecord
from closedloop.demo.traffic import TrafficLog


@dataclass(frozen=True)
class Event:
    """A moment worth marking on the timeline."""

    at: float
    label: str
    kind: str  # phase | alarm | run | promotion | swap | note


@dataclass(frozen=True)
class QualityPoint:
    """Quality of one chunk of consecutive rows answered by one version."""

    at: float
    version: str
    phase: str
    rows: int
    roc_auc: float | None
    accuracy: float


def quality_by_chunk(log: TrafficLog, chunk_rows: int = 500) -> list[QualityPoint]:
    """Cut the answered rows into chunks (never mixing versions) and score each."""
    from sklearn.metrics import roc_auc_score

    points: list[QualityPoint] = []
    scores: list[float] = []
    truth: list[int] = []
    current: tuple[str, str] | None = None
    last_at = 0.0

    def flush() -> None:
        if current is None or not scores:
            return
        y, s = np.asarray(truth), np.asarray(scores)
        auc = float(roc_auc_score(y, s)) if len(set(truth)) == 2 else None
        accuracy = float(np.mean((s >= 0.5).astype(int) == y))
        points.append(QualityPoint(last_at, current[0], current[1], len(y), auc, accuracy))
        scores.clear()
        truth.clear()

    for exchange in log.exchanges:
        if not exchange.ok:
            continue
        key = (exchange.version, exchange.phase)
        if key != current:
            flush()
            current = key
        scores.extend(exchange.scores)
        truth.extend(exchange.truth)
        last_at = exchange.at
        if len(scores) >= chunk_rows:
            flush()
    flush()
    return points


def _png(fig: object) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return base64.b64encode(buffer.getvalue()).decode()


# p-values of a strongly drifted window underflow towards 1e-300; the plot clips them.
P_FLOOR = 1e-30
_STYLES = {
    "alarm": ("#c0392b", "--", "trigger fired"),
    "run": ("#8e44ad", ":", "retraining run"),
    "promotion": ("#27ae60", "-", "promotion"),
    "swap": ("#16a085", "-.", "server swapped version"),
}


def _marks(ax: Any, events: Sequence[Event], t0: float) -> None:
    labelled: set[str] = set()
    for event in events:
        if event.kind in _STYLES:
            color, style, label = _STYLES[event.kind]
            first = label not in labelled
            labelled.add(label)
            ax.axvline(
                event.at - t0,
                color=color,
                linestyle=style,
                linewidth=1.2,
                label=label if first else None,
            )


def write_report(
    path: Path,
    log: TrafficLog,
    windows: Sequence[WindowRecord],
    events: Sequence[Event],
    p_value: float,
    title: str = "closedloop demo",
    outcome: str = "",
) -> Path:
    """Write a self-contained HTML report (and ``timeline.json`` beside it).

    Args:
        path: Where the HTML goes.
        log: Every request the traffic driver sent.
        windows: The sidecar's evaluated windows.
        events: Alarms, runs, promotions, swaps and notes.
        p_value: The policy's input-drift p-value (drawn as a line).
        title: Page heading.
        outcome: One paragraph on how the run ended; when the loop did not recover it
            says why (the gate's verdict, the data counts).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min([e.at for e in events] + [x.at for x in log.exchanges] or [0.0])
    quality = quality_by_chunk(log)
    versions = sorted({q.version for q in quality} | {w.version for w in windows})
    colors = {v: plt.cm.tab10(i % 10) for i, v in enumerate(versions)}

    fig, ax = plt.subplots(figsize=(10, 3.6))
    for version in versions:
        rows = [w for w in windows if w.version == version]
        ax.scatter(
            [w.at - t0 for w in rows],
            [max(w.min_p_value, P_FLOOR) for w in rows],
            color=colors[version],
            marker="o",
            label=f"windows of {version}",
            zorder=3,
        )
        drifted = [w for w in rows if w.drift]
        ax.scatter(
            [w.at - t0 for w in drifted],
            [max(w.min_p_value, P_FLOOR) for w in drifted],
            facecolors="none",
            edgecolors="#c0392b",
            s=140,
            linewidths=1.6,
            zorder=4,
        )
    ax.axhline(
        p_value, color="black", linestyle="--", linewidth=1, label=f"policy p-value {p_value:g}"
    )
    ax.set_yscale("log")
    ax.set_ylabel(f"smallest feature p-value (floor {P_FLOOR:g})")
    ax.set_xlabel("seconds since start")
    _marks(ax, events, t0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Drift per window (red rings: drifted)")
    fig.tight_layout()
    drift_png = _png(fig)

    fig, ax = plt.subplots(figsize=(10, 3.6))
    for version in versions:
        rows = [q for q in quality if q.version == version and q.roc_auc is not None]
        ax.plot(
            [q.at - t0 for q in rows],
            [q.roc_auc for q in rows],
            marker="o",
            color=colors[version],
            label=f"{version}",
        )
    ax.set_ylabel("ROC AUC per 500 rows")
    ax.set_xlabel("seconds since start")
    _marks(ax, events, t0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Quality on live traffic, by serving model version")
    fig.tight_layout()
    quality_png = _png(fig)

    rows_html = "".join(
        f"<tr><td>{e.at - t0:7.1f}s</td><td>{html.escape(e.kind)}</td><td>{html.escape(e.label)}</td></tr>"
        for e in sorted(events, key=lambda e: e.at)
    )
    quality_html = "".join(
        f"<tr><td>{q.at - t0:7.1f}s</td><td>{html.escape(q.phase)}</td><td>{html.escape(q.version)}</td>"
        f"<td>{q.rows}</td><td>{'' if q.roc_auc is None else f'{q.roc_auc:.3f}'}</td><td>{q.accuracy:.3f}</td></tr>"
        for q in quality
    )
    path.write_text(
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        + (f"<p><b>Outcome:</b> {html.escape(outcome)}</p>" if outcome else "")
        + f"<p>{log.rows} rows predicted in {len(log.exchanges)} requests; {log.failed} failed. "
        f"Versions that served: {html.escape(', '.join(log.versions()))}.</p>"
        f"<img src='data:image/png;base64,{drift_png}'/><br/><img src='data:image/png;base64,{quality_png}'/>"
        f"<h2>Timeline</h2><table border=1 cellpadding=3><tr><th>t</th><th>kind</th><th>what</th></tr>{rows_html}</table>"
        f"<h2>Quality per chunk</h2><table border=1 cellpadding=3><tr><th>t</th><th>phase</th><th>version</th>"
        f"<th>rows</th><th>ROC AUC</th><th>accuracy</th></tr>{quality_html}</table></body></html>"
    )
    (path.parent / "timeline.json").write_text(
        json.dumps(
            {
                "events": [asdict(e) for e in events],
                "windows": [asdict(w) for w in windows],
                "quality": [asdict(q) for q in quality],
                "failed_requests": log.failed,
                "outcome": outcome,
            },
            indent=2,
        )
    )
    return path
