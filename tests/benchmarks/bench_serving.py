"""Benchmark the model server: 1-row requests over loopback at concurrency 1, 8 and 32.

Side by side, in one run:

* ``echo``: Seldon's wrapper serving :class:`echo_model.EchoModel` (returns its input);
* ``closedloop``: the wrapper serving :class:`closedloop.serving.model.ClosedLoopModel`
  with a registered XGBoost pipeline (schema checks, prediction, metrics);
* ``in-process predict``: ``pipeline.predict_proba`` on the same one-row frame, no HTTP;
* ``in-process check+predict``: the schema check the server runs, then the prediction.

Each server runs alone (the other is stopped) with the same number of gunicorn
workers, ``OMP_NUM_THREADS=1``. Each cell sends at most ``--requests`` requests for at
most ``--seconds`` seconds after a warm-up. Run from the repository root::

    .venv/bin/python tests/benchmarks/bench_serving.py [--workers 1] [--requests 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import requests

from closedloop.data.generate import generate_transactions
from closedloop.deploy.local import LocalSeldonServer, model_parameters
from closedloop.local.s3 import LocalS3
from closedloop.ml.schema import check_frame, infer_schema
from closedloop.ml.train import ModelConfig, train_model
from closedloop.registry import Lineage, Registry
from closedloop.registry.layout import MODEL_FILE, SCHEMA_FILE

HERE = Path(__file__).resolve().parent
CONCURRENCY = (1, 8, 32)
WARMUP = 50
ECHO = "echo (wrapper only)"
MODEL = "closedloop model server"
IN_PROCESS = "in-process predict"

Cell = tuple[float, float, float, int]
"""Requests per second, p50 ms, p99 ms, requests measured."""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_cell(
    call: Callable[[Any], None],
    make_state: Callable[[], Any],
    threads: int,
    count: int,
    seconds: float,
) -> Cell:
    """Run *count* calls over *threads* threads (at most *seconds*); (req/s, p50 ms, p99 ms, n)."""
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [count]
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        state = make_state()
        for _ in range(WARMUP // threads + 1):
            call(state)
        mine: list[float] = []
        while time.perf_counter() < deadline:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            started = time.perf_counter()
            call(state)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    barrier_start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()
    elapsed = time.perf_counter() - barrier_start
    return (
        len(latencies) / elapsed,
        percentile(latencies, 50) * 1e3,
        percentile(latencies, 99) * 1e3,
        len(latencies),
    )


def http_target(url: str, body: dict[str, Any]) -> tuple[Callable[[Any], None], Callable[[], Any]]:
    def make_session() -> requests.Session:
        return requests.Session()

    def call(session: requests.Session) -> None:
        answer = session.post(url, json=body, timeout=30)
        if answer.status_code != 200:
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:200]}")

    return call, make_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per server")
    parser.add_argument("--requests", type=int, default=2000, help="requests per cell")
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per cell")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="closedloop-bench-") as tmp:
        work = Path(tmp)
        s3 = LocalS3(work / "s3").start()
        try:
            results, connection = benchmark(work, s3, args)
        finally:
            s3.stop()
    print_table(results, connection, args)


def benchmark(
    work: Path, s3: LocalS3, args: argparse.Namespace
) -> tuple[dict[str, dict[int, Cell]], str]:
    """Measure every target; return the cells and the ``Connection`` header servers sent."""
    train = generate_transactions(5000, seed=1)
    schema = infer_schema(train, "is_fraud")
    pipeline = train_model(train, schema, ModelConfig("xgboost"))
    source = work / "version"
    source.mkdir()
    joblib.dump(pipeline, source / MODEL_FILE)
    (source / SCHEMA_FILE).write_text(schema.to_json())
    registry = Registry(s3.store(), "s3://closedloop/registry")
    version = registry.register("bench", source, Lineage("generated://", "0" * 64)).version
    registry.promote("bench", version, "benchmark")

    names = list(schema.feature_names)
    frame = generate_transactions(1, seed=7).loc[:, names]
    row = [
        value.strftime("%Y-%m-%dT%H:%M:%S")
        if hasattr(value, "strftime")
        else getattr(value, "item", lambda v=value: v)()
        for value in frame.iloc[0]
    ]
    body = {"data": {"names": names, "ndarray": [row]}}
    results: dict[str, dict[int, Cell]] = {}
    connection = "keep-alive"

    servers = {
        ECHO: LocalSeldonServer(
            {},
            interface="echo_model.EchoModel",
            pythonpath=[HERE],
            grpc=False,
            workers=args.workers,
        ),
        MODEL: LocalSeldonServer(
            model_parameters(registry.root, "bench", poll_seconds=60),
            s3=s3.settings(),
            grpc=False,
            workers=args.workers,
        ),
    }
    for label, server in servers.items():
        server.start()
        try:
            call, make_state = http_target(server.url + "/api/v1.0/predictions", body)
            probe = requests.post(server.url + "/api/v1.0/predictions", json=body, timeout=30)
            connection = probe.headers.get("Connection", connection)
            results[label] = {}
            for threads in CONCURRENCY:
                results[label][threads] = run_cell(
                    call, make_state, threads, args.requests, args.seconds
                )
                print(
                    f"  {label:28s} c={threads:<3d} {results[label][threads][0]:8.0f} req/s",
                    file=sys.stderr,
                )
        finally:
            server.stop()

    # As the server runs it (OMP_NUM_THREADS=1): one thread per prediction.
    pipeline.named_steps["model"].set_params(n_jobs=1)
    coerced = check_frame([row], schema).frame

    def predict_only(_: Any) -> None:
        pipeline.predict_proba(coerced)

    def check_and_predict(_: Any) -> None:
        pipeline.predict_proba(check_frame([row], schema, names).frame)

    for label, call in (
        (IN_PROCESS, predict_only),
        ("in-process check+predict", check_and_predict),
    ):
        results[label] = {}
        for threads in CONCURRENCY:
            results[label][threads] = run_cell(
                call, lambda: None, threads, args.requests, args.seconds
            )
    return results, connection


def print_table(
    results: dict[str, dict[int, Cell]], connection: str, args: argparse.Namespace
) -> None:
    print()
    print(
        f"1-row requests over loopback; {args.workers} gunicorn worker(s) per server, "
        f"OMP_NUM_THREADS=1, {os.cpu_count()} CPUs"
    )
    print(
        f"client: python requests.Session per thread (keep-alive requested; the server "
        f"answered 'Connection: {connection}', so each request "
        "opens a new TCP connection on gunicorn's sync worker)"
    )
    print(f"at most {args.requests} requests or {args.seconds:g}s per cell, after a warm-up")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average at the end (1, 5, 15 min): {load} - other work on the machine skews it\n")
    header = f"{'target':28s} {'conc':>4s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'n':>6s}"
    print(header)
    print("-" * len(header))
    for label, cells in results.items():
        for threads in CONCURRENCY:
            rate, p50, p99, n = cells[threads]
            print(f"{label:28s} {threads:4d} {rate:9.0f} {p50:8.3f} {p99:8.3f} {n:6d}")
    print("\nratios (throughput, and p50 latency):")
    for threads in CONCURRENCY:
        echo, model = results[ECHO][threads], results[MODEL][threads]
        local = results[IN_PROCESS][threads]
        print(
            f"  c={threads:<3d} model/echo req/s {model[0] / echo[0]:.2f}  "
            f"in-process/model req/s {local[0] / model[0]:.1f}  "
            f"model/echo p50 {model[1] / echo[1]:.2f}  model p50 / in-process p50 {model[1] / local[1]:.1f}"
        )


if __name__ == "__main__":
    main()
