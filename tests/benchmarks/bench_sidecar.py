"""Benchmark the drift sidecar's event path against Seldon's bare wrapper, side by side in one run.

With the request logger's ``mode: all`` every prediction brings a request event and a
response event (and a feedback event when labelled), so one sidecar must take request
events at least twice as fast as its model server answers requests. Measured here, one
after the other on this machine, with wrk (``scripts/install-wrk.sh`` installs it) at
``c8`` (2 threads, 8 connections) for ``--seconds`` each after a ``--warmup``:

* ``wrapper``: Seldon's bare ``seldon-core-microservice`` serving
  :class:`echo_model.EchoModel` with ``--workers`` gunicorn workers (default 2), POSTed
  a one-row prediction request (``tests/benchmarks/wrk_post.lua``): the cost of the
  wrapper alone, the fastest the model server can go;
* ``sidecar 1-row``: ``closedloop sidecar serve`` (one process), POSTed the same request
  as a request-logger CloudEvent with a unique ``Ce-Id`` per request
  (``tests/benchmarks/wrk_cloudevents.lua``), so every event is checked, journaled
  (fsync'd before its answer) and taken into a window;
* ``sidecar N-row``: the same with ``--batch-rows``-row requests (default 100).

The sidecar serves a version registered in a local directory (no S3) with a detector
fitted on generated transactions; its windows hold ``--window-size`` rows, so the
detector runs during the load as it would in production. Its own metrics confirm the
rows it accepted (a refused event is answered 202, which wrk counts as success).

It prints events/s, rows/s, p50/p99, the ratio of the sidecar's one-row events/s to the
wrapper's req/s with PASS/MISS against the goal (2x) and the target (10x), how the
batched events scale (rows/s of N-row events over events/s of one-row events), and the
journal's group commits (records per fsync, mean fsync). Progress goes to stderr, the
Markdown tables to stdout. Run from the repository root::

    .venv/bin/python tests/benchmarks/bench_sidecar.py [--seconds 10] [--warmup 2]
        [--workers 2] [--batch-rows 100] [--window-size 10000] [--timeout 900]

Everything it starts is stopped on every exit (also on Ctrl-C, SIGTERM and ``--timeout``).
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench_serving import (
    CELLS,
    HERE,
    PREDICT_PATH,
    OutOfTime,
    WrkResult,
    _raise_interrupt,
    _raise_timeout,
    find_wrk,
    json_rows,
    parse_wrk,
    probe,
    progress,
    raw_body,
    run_wrk,
    running,
    wrk_version,
)

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.deploy.local import LocalSeldonServer
from closedloop.local.s3 import free_port

LUA = HERE / "wrk_cloudevents.lua"
GOAL = 2.0
TARGET = 10.0
MODEL = "bench"
LAUNCHER = "from closedloop.cli.main import app; app()"
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class SidecarCell:
    """One wrk run against the sidecar, with the rows its metrics say it accepted."""

    label: str
    rows_per_event: int
    wrk: WrkResult
    rows_accepted: float = float("nan")

    @property
    def rows_per_second(self) -> float:
        return self.wrk.rps * self.rows_per_event


@dataclass
class Found:
    wrapper: WrkResult | None = None
    cells: list[SidecarCell] = field(default_factory=list)
    journal: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


# -- the sidecar process --------------------------------------------------------------
def register_version(work: Path, window_size: int) -> tuple[str, Path]:
    """A version with a fitted detector in a local registry; the policy file."""
    from closedloop.drift.detector import fit_detector, save_detector_dir
    from closedloop.ml.schema import infer_schema
    from closedloop.registry import Lineage, Registry
    from closedloop.storage import Store

    reference = generate_transactions(3000, seed=0)
    schema = infer_schema(reference, DEFAULT_TARGET)
    version = work / "version"
    save_detector_dir(fit_detector(reference, schema, seed=0), version / "detector")
    (version / "schema.json").write_text(schema.to_json())
    root = str(work / "registry")
    registry = Registry(Store(), root)
    registry.promote(
        MODEL, registry.register(MODEL, version, Lineage("b://", "0" * 64)).version, "b"
    )
    policy = work / "policy.json"
    policy.write_text(
        json.dumps(
            {"window_size": window_size, "window_max_age_seconds": 600, "min_window_rows": 1000,
             "p_value": 0.01, "effect_size_threshold": 0.1, "k": 1, "n": 3, "min_samples": 500}
        )
    )  # fmt: skip
    return root, policy


@contextlib.contextmanager
def sidecar_process(work: Path, registry: str, policy: Path) -> Iterator[tuple[str, str]]:
    """Start ``closedloop sidecar serve``; yield its event URL and metrics URL."""
    events, ops = free_port(), free_port()
    command = [
        sys.executable, "-c", LAUNCHER, "sidecar", "serve",
        "--registry-uri", registry, "--model-name", MODEL, "--policy", str(policy),
        "--port", str(events), "--metrics-port", str(ops),
        "--state-dir", str(work / "sidecar-state"), "--archive-uri", str(work / "archive"),
        "--trigger-url", f"http://127.0.0.1:{free_port()}/", "--log-level", "warning",
    ]  # fmt: skip
    log = (work / "sidecar.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the sidecar exited: {(work / 'sidecar.log').read_text()}")
            if healthy(f"http://127.0.0.1:{ops}/healthz"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the sidecar was not ready in 120 s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{events}/", f"http://127.0.0.1:{ops}/metrics"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        log.close()


def healthy(url: str) -> bool:
    """Whether *url* answers 200."""
    try:
        with _LOOPBACK.open(url, timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def metric(url: str, name: str) -> float:
    """Sum of the samples of *name* at a Prometheus endpoint."""
    with _LOOPBACK.open(url, timeout=10) as answer:
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_events(
    wrk: str, url: str, body: Path, run: str, seconds: int, connections: tuple[int, int]
) -> WrkResult:
    """wrk with unique Ce-Ids (``wrk_cloudevents.lua``); failures come back as results."""
    threads, conns = connections
    command = [
        wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout=10s", "--latency",
        "-s", str(LUA), url, "--", str(body), run,
    ]  # fmt: skip
    try:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        return WrkResult(error=f"wrk did not finish within {seconds + 60}s")
    if answer.returncode != 0:
        return WrkResult(error=f"wrk exited with {answer.returncode}: {answer.stderr[:300]}")
    return parse_wrk(answer.stdout)


# -- the run --------------------------------------------------------------------------
def benchmark(work: Path, wrk: str, args: argparse.Namespace) -> Found:
    found = Found()
    names = [c for c in generate_transactions(1, seed=7).columns if c != DEFAULT_TARGET]
    frame = generate_transactions(args.batch_rows, seed=7).loc[:, names]
    bodies = {1: raw_body(json_rows(frame.iloc[:1]), names)}
    bodies[args.batch_rows] = raw_body(json_rows(frame), names)
    paths = {}
    for rows, body in bodies.items():
        paths[rows] = work / f"body-{rows}.json"
        paths[rows].write_bytes(body)

    progress(f"wrapper: bare seldon-core-microservice, echo model, {args.workers} workers")
    server = LocalSeldonServer(
        {},
        interface="echo_model.EchoModel",
        pythonpath=[HERE],
        state_dir=work / "wrapper",
        bare=True,
        workers=args.workers,
        grpc=False,
        extra_env={"OMP_NUM_THREADS": "1"},
    )
    with running(server):
        url = server.url + PREDICT_PATH
        probe(url, bodies[1])
        run_wrk(wrk, url, paths[1], *CELLS["c8"], args.warmup)
        found.wrapper = run_wrk(wrk, url, paths[1], *CELLS["c8"], args.seconds)
    progress(f"wrapper: c8 {found.wrapper.describe()}")

    progress(f"sidecar: registering a version, windows of {args.window_size} rows")
    registry, policy = register_version(work, args.window_size)
    try:
        measure_sidecar(work, wrk, args, registry, policy, paths, found)
    except (RuntimeError, OSError) as exc:
        found.errors.append(f"sidecar: {exc}")
        progress(f"sidecar: FAILED: {exc}")
    return found


def measure_sidecar(
    work: Path,
    wrk: str,
    args: argparse.Namespace,
    registry: str,
    policy: Path,
    paths: dict[int, Path],
    found: Found,
) -> None:
    """Start the sidecar, warm it up, run the 1-row and the batched cell, stop it."""
    with sidecar_process(work, registry, policy) as (events_url, metrics_url):
        run_events(wrk, events_url, paths[1], "warmup", args.warmup, CELLS["c8"])
        for rows in (1, args.batch_rows):
            label = f"sidecar {rows}-row events"
            progress(f"{label}: c8 {args.seconds}s")
            before = metric(metrics_url, "closedloop_sidecar_rows_accepted_total")
            result = run_events(wrk, events_url, paths[rows], f"r{rows}", args.seconds, CELLS["c8"])
            accepted = metric(metrics_url, "closedloop_sidecar_rows_accepted_total") - before
            cell = SidecarCell(label, rows, result, accepted)
            if result.ok and accepted < result.requests * rows:
                result.error = f"only {accepted:.0f} of {result.requests * rows} rows accepted"
            found.cells.append(cell)
            progress(f"{label}: {result.describe()}; {accepted:.0f} rows accepted")
        for name in ("journal_records_synced_total", "journal_syncs_total"):
            found.journal[name] = metric(metrics_url, f"closedloop_sidecar_{name}")
        found.journal["sync_seconds"] = metric(
            metrics_url, "closedloop_sidecar_journal_sync_seconds_sum"
        )


def verdict(ratio: float, goal: float) -> str:
    if ratio != ratio:  # NaN: not measured
        return "FAILED"
    return "PASS" if ratio >= goal else "MISS"


def report(found: Found, args: argparse.Namespace, wrk: str) -> None:
    wrapper = found.wrapper
    base = wrapper.rps if wrapper is not None and wrapper.ok else float("nan")
    load = os.getloadavg()
    print(
        f"\n## Drift sidecar vs Seldon's bare wrapper ({wrk_version(wrk)}, c8 = 2 threads x 8 "
        f"connections, {args.seconds}s per cell; {os.cpu_count()} CPUs, load "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f})\n"
    )
    print("| server | events or req/s | rows/s | p50 ms | p99 ms | vs wrapper req/s |")
    print("|---|---:|---:|---:|---:|---:|")
    if wrapper is not None:
        cells = (
            f"{wrapper.rps:,.0f} | {wrapper.rps:,.0f} | {wrapper.p50_ms:.2f} | {wrapper.p99_ms:.2f}"
            if wrapper.ok
            else f"FAILED: {wrapper.error} | | | "
        )
        print(
            f"| wrapper: bare microservice, echo model, {args.workers} workers | {cells} | 1.00x |"
        )
    for cell in found.cells:
        result = cell.wrk
        if not result.ok:
            print(f"| {cell.label} | FAILED: {result.error} | | | | |")
            continue
        print(
            f"| {cell.label} | {result.rps:,.0f} | {cell.rows_per_second:,.0f} | "
            f"{result.p50_ms:.2f} | {result.p99_ms:.2f} | {result.rps / base:.2f}x |"
        )
    one = next((c for c in found.cells if c.rows_per_event == 1 and c.wrk.ok), None)
    batched = next((c for c in found.cells if c.rows_per_event > 1 and c.wrk.ok), None)
    ratio = one.wrk.rps / base if one is not None else float("nan")
    print("\n| goal | measured | target | verdict |")
    print("|---|---:|---:|---|")
    print(f"| sidecar 1-row events/s vs wrapper req/s (goal) | {ratio:.2f}x | >= {GOAL:.0f}x | {verdict(ratio, GOAL)} |")  # fmt: skip
    print(f"| sidecar 1-row events/s vs wrapper req/s (target) | {ratio:.2f}x | >= {TARGET:.0f}x | {verdict(ratio, TARGET)} |")  # fmt: skip
    if one is not None and batched is not None:
        scale = batched.rows_per_second / one.wrk.rps
        print(
            f"| {batched.rows_per_event}-row events: rows/s vs 1-row events/s | {scale:.1f}x | "
            f"> 1x (rows, not events, set the pace) | {verdict(scale, 1.0)} |"
        )
    synced = found.journal.get("journal_syncs_total", 0.0)
    if synced:
        records = found.journal["journal_records_synced_total"]
        mean_ms = found.journal["sync_seconds"] / synced * 1e3
        print(
            f"\nJournal: {records:,.0f} records in {synced:,.0f} group commits "
            f"({records / synced:.1f} records per fdatasync, {mean_ms:.2f} ms each on average)."
        )
    for error in found.errors:
        print(f"\nerror: {error}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per cell")
    parser.add_argument("--warmup", type=int, default=2, help="wrk warm-up per server (c8)")
    parser.add_argument("--workers", type=int, default=2, help="the wrapper's gunicorn workers")
    parser.add_argument("--batch-rows", type=int, default=100, help="rows per batched event")
    parser.add_argument("--window-size", type=int, default=10_000, help="rows per drift window")
    parser.add_argument("--timeout", type=int, default=900, help="stop everything after this (s)")
    args = parser.parse_args(argv)
    if min(args.seconds, args.warmup, args.workers) < 1 or args.batch_rows < 2:
        parser.error("--seconds, --warmup, --workers must be >= 1 and --batch-rows >= 2")
    return args


def main() -> None:
    args = parse_args()
    wrk = find_wrk()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGALRM, _raise_timeout)
    signal.alarm(args.timeout)
    try:
        with tempfile.TemporaryDirectory(prefix="closedloop-bench-sidecar-") as tmp:
            found = benchmark(Path(tmp), wrk, args)
    except OutOfTime as exc:
        raise SystemExit(f"error: {exc} (--timeout {args.timeout})") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted; everything the benchmark started was stopped") from None
    finally:
        signal.alarm(0)
    progress("done")
    report(found, args, wrk)


if __name__ == "__main__":
    main()
