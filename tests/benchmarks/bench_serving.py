"""Benchmark the model server with wrk, side by side in one run, against its goals.

Three servers, each run alone (the previous one is stopped), with the same number of
gunicorn workers and ``OMP_NUM_THREADS=1``:

* ``anchor``: the bare ``seldon-core-microservice`` serving :mod:`booster_model`, the
  registered version's XGBoost booster answering ``booster.inplace_predict`` on the
  already-transformed row (the output of the pipeline's ``features`` step);
* ``closedloop``: what ``closedloop serve`` runs, Seldon's wrapper serving
  :class:`closedloop.serving.model.ClosedLoopModel` with the same registered version,
  sent the raw row with its names (schema checks, feature step, model, metrics);
* ``echo``: the wrapper serving :class:`echo_model.EchoModel` (returns its input), for
  context: the cost of the wrapper alone.

wrk (``scripts/install-wrk.sh`` installs it) POSTs one JSON body with
``tests/benchmarks/wrk_post.lua`` to ``/api/v1.0/predictions``: cell ``c1`` is 1 thread
and 1 connection, ``c8`` 2 threads and 8 connections, ``--seconds`` each after a
``--warmup``. It reports req/s and the p50/p99 latency; a cell with non-2xx answers or
socket errors is reported as failed, not as a speed. The closedloop server also gets
``--large-rows``-row requests (c1): rows/s = req/s x rows.

In process (this process, ``OMP_NUM_THREADS=1``, the booster at ``nthread=1``):
``booster.inplace_predict`` on the same large request's transformed rows, and on
``--batch-rows`` transformed rows next to :func:`batch_predict_step`, the predict step of
the batch-inference pipeline (:func:`closedloop.ml.batch.score_batch`), timed per phase.

Goals (each printed with its measured figure, the ratio and PASS/MISS):

* closedloop req/s at c8 >= 0.9 x anchor req/s at c8;
* closedloop p99 at c8 <= 12 ms;
* closedloop p50 at c1 <= anchor p50 at c1 + 0.3 ms;
* large requests through closedloop: rows/s >= 0.5 x in-process ``inplace_predict``;
* batch predict step: rows/s >= 0.5 x in-process ``inplace_predict`` on the same rows.

Where a goal is missed it prints the gap and a cProfile of where the time goes: the
requests run in process through the wrapper's own Flask app
(``seldon_core.wrapper.get_rest_microservice``), in the serving environment (this script
re-run by ``.venv-serving/bin/python`` with ``--profile-only serving``), and
:func:`batch_predict_step` on ``--profile-batch-rows`` rows. Then the summary tables in
Markdown. Progress goes to stderr, results to stdout. Run from the repository root::

    make bench                          # installs wrk if needed, then the same as:
    .venv/bin/python tests/benchmarks/bench_serving.py [--workers 2] [--seconds 10]
        [--warmup 2] [--large-rows 10000] [--large-seconds 5] [--batch-rows 1000000]
        [--profile auto|always|never] [--profile-requests 2000] [--timeout 1800]

``--seconds 3 --batch-rows 200000`` is a quick run (under two minutes; the defaults take
about three). ``--large-seconds`` defaults to ``min(5, --seconds)``; ``--profile-large-requests``
and ``--profile-batch-rows`` size the other profiles. Everything is bounded by
``--timeout``; servers, SeaweedFS and temporary directories are stopped and removed on
every exit (also on Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import os

# Single-core figures everywhere: the servers get the same from LocalSeldonServer.
os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import contextlib
import cProfile
import json
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from closedloop.data.generate import generate_transactions
from closedloop.deploy.local import (
    LocalSeldonServer,
    LocalServerError,
    find_microservice,
    model_parameters,
)
from closedloop.local.s3 import LocalS3
from closedloop.ml.batch import score_batch
from closedloop.ml.clean import clean_dataset, fitted_schema
from closedloop.ml.schema import InputSchema, check_frame, infer_schema
from closedloop.ml.train import ModelConfig, train_model
from closedloop.registry import Lineage, Registry
from closedloop.registry.layout import MODEL_FILE, SCHEMA_FILE

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LUA = HERE / "wrk_post.lua"
PREDICT_PATH = "/api/v1.0/predictions"
MODEL_NAME = "bench"
ANCHOR, CLOSEDLOOP, ECHO = "anchor", "closedloop", "echo"
DESCRIPTIONS = {
    ANCHOR: "anchor: bare seldon-core-microservice, `booster.inplace_predict` on transformed rows",
    CLOSEDLOOP: "closedloop: `closedloop serve` (ClosedLoopModel), raw rows with names",
    ECHO: "echo: the wrapper returning its input",
}
CELLS = {"c1": (1, 1), "c8": (2, 8)}
"""Cell name -> (wrk threads, connections)."""
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_ROWS = 10_000
# Goals of the issue.
GOAL_C8_THROUGHPUT = 0.9
GOAL_C8_P99_MS = 12.0
GOAL_C1_P50_EXTRA_MS = 0.3
GOAL_LARGE_FRACTION = 0.5
GOAL_BATCH_FRACTION = 0.5
GOAL_NAMES = (
    "closedloop c8 req/s vs anchor",
    "closedloop c8 p99",
    "closedloop c1 p50 - anchor c1 p50",
    "large requests rows/s vs in-process inplace_predict",
    "batch predict step rows/s vs in-process inplace_predict",
)
_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_STARTED = time.monotonic()
# The servers are on loopback: a proxy from the environment must not be asked for them.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:5.0f}s] {message}", file=sys.stderr, flush=True)


# -- wrk --------------------------------------------------------------------------------
@dataclass
class WrkResult:
    """One wrk run: throughput, latency percentiles and errors."""

    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    non2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def describe(self) -> str:
        if not self.ok:
            return f"FAILED: {self.error}"
        return (
            f"{self.rps:8.1f} req/s  p50 {self.p50_ms:7.3f} ms  p99 {self.p99_ms:7.3f} ms  "
            f"({self.requests} requests in {self.seconds:.1f}s)"
        )


def find_wrk() -> str:
    """Return the wrk executable: on PATH, else .tools/bin/wrk (scripts/install-wrk.sh)."""
    found = shutil.which("wrk")
    if found:
        return found
    local = REPO / ".tools" / "bin" / "wrk"
    if local.is_file():
        return str(local)
    raise SystemExit("wrk not found: run `bash scripts/install-wrk.sh` (`make bench` does)")


def wrk_version(wrk: str) -> str:
    answer = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    first = (answer.stdout + answer.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Read req/s, p50, p99 and the error counts from wrk's ``--latency`` output."""
    result = WrkResult()
    units = "|".join(_TIME_UNITS_MS)
    for quantile in ("50", "99"):
        found = re.search(rf"^\s*{quantile}(?:\.0+)?%\s+([\d.]+)({units})\s*$", text, re.M)
        if found:
            setattr(result, f"p{quantile}_ms", _ms(*found.groups()))
    found = re.search(rf"^\s*(\d+) requests in ([\d.]+)({units})", text, re.M)
    if found:
        result.requests = int(found.group(1))
        result.seconds = _ms(found.group(2), found.group(3)) / 1e3
    found = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if found:
        result.rps = float(found.group(1))
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if found:
        names = ("connect", "read", "write", "timeout")
        result.socket_errors = {n: int(v) for n, v in zip(names, found.groups(), strict=True)}
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if found:
        result.non2xx = int(found.group(1))
    problems = []
    if result.non2xx:
        problems.append(f"{result.non2xx} non-2xx answers")
    problems += [f"{n} socket {kind} errors" for kind, n in result.socket_errors.items() if n]
    if not result.requests or np.isnan(result.p50_ms) or np.isnan(result.p99_ms):
        problems.append("no completed requests (or unreadable wrk output)")
    result.error = "; ".join(problems)
    return result


def run_wrk(
    wrk: str,
    url: str,
    body: Path,
    threads: int,
    connections: int,
    seconds: int,
    request_timeout: int = 10,
) -> WrkResult:
    """Run wrk for *seconds* against *url*, POSTing *body*; failures come back as results."""
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={request_timeout}s",
        "--latency",
        "-s",
        str(LUA),
        url,
        "--",
        str(body),
    ]
    try:
        answer = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + request_timeout + 30
        )
    except subprocess.TimeoutExpired:
        return WrkResult(error=f"wrk did not finish within {seconds + request_timeout + 30}s")
    if answer.returncode != 0:
        detail = (answer.stderr or answer.stdout).strip().replace("\n", " | ")[:300]
        return WrkResult(error=f"wrk exited with {answer.returncode}: {detail}")
    return parse_wrk(answer.stdout)


# -- requests and model ---------------------------------------------------------------
def json_rows(frame: pd.DataFrame) -> list[list[Any]]:
    """Rows as JSON values (datetimes as ISO strings), as a client would send them."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return json.loads(out.to_json(orient="values"))


def raw_body(rows: list[list[Any]], names: list[str]) -> bytes:
    return json.dumps({"data": {"names": names, "ndarray": rows}}).encode()


def transformed(rows: list[list[Any]], names: list[str], pipeline: Any, schema: InputSchema):
    """The rows as the anchor gets them: checked as the server does, then the feature step."""
    checked = check_frame(rows, schema, names).frame
    return pipeline.named_steps["features"].transform(checked)


def anchor_body(matrix: np.ndarray) -> bytes:
    return json.dumps({"data": {"ndarray": matrix.tolist()}}).encode()


def post(url: str, body: bytes, timeout: float = 60.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with _LOOPBACK.open(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def probe(url: str, body: bytes) -> np.ndarray:
    """POST once; return the answer's ``data.ndarray`` or raise on anything but 200."""
    status, answer = post(url, body)
    if status != 200:
        raise RuntimeError(f"HTTP {status} from {url}: {answer[:300].decode(errors='replace')}")
    data = json.loads(answer).get("data", {})
    return np.asarray(data.get("ndarray", []), dtype=object)


def batch_predict_step(
    frame: pd.DataFrame,
    pipeline: Any,
    schema: InputSchema,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Score a batch as the batch-inference pipeline's predict step does.

    The component (components/inference/batch_predict) calls
    :func:`closedloop.ml.batch.score_batch`: the server's row check, then the compiled
    pipeline. With *timings*, the seconds of each phase go there (``check``, ``predict``).
    """
    return score_batch(frame, pipeline, schema, timings).scores


def rows_per_second(call: Callable[[], object], rows: int, min_seconds: float = 1.0) -> float:
    """Call *call* (after one warm-up call) for at least *min_seconds* and 3 calls; rows/s."""
    call()
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < min_seconds:
        call()
        calls += 1
    return rows * calls / (time.perf_counter() - started)


# -- profiles ---------------------------------------------------------------------------
def _where(file: str, line: int, function: str) -> str:
    if file == "~":
        return function
    if file.startswith(f"{REPO}/"):
        file = file[len(str(REPO)) + 1 :]
    for marker in ("site-packages/", "/src/", "/lib/python3.12/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{function} ({file}:{line})"


def profile_report(
    profiler: cProfile.Profile,
    calls: int,
    unit: str,
    top: int = 15,
    skip: tuple[str, ...] = (),
) -> str:
    """The top functions by cumulative and by own time, per call of the profiled unit.

    Functions whose file ends with one of *skip* are left out (the test client's layers,
    which a real server does not run).
    """
    stats = pstats.Stats(profiler)
    rows = [
        (cumulative, own, count, _where(*key))
        for key, (_, count, own, cumulative, _) in stats.stats.items()  # type: ignore[attr-defined]
        if not key[0].endswith(skip)
    ]
    lines = []
    for index, title in ((0, "cumulative"), (1, "own (total) time")):
        lines.append(f"top {top} by {title}, per {unit}:")
        lines.append(f"  {'cum ms':>9s} {'own ms':>9s} {'calls':>8s}  function")
        ranked = sorted(rows, key=lambda r: r[index], reverse=True)[:top]
        for cumulative, own, count, where in ranked:
            lines.append(
                f"  {cumulative / calls * 1e3:9.3f} {own / calls * 1e3:9.3f} "
                f"{count / calls:8.1f}  {where}"
            )
    return "\n".join(lines)


def profile_serving(args: argparse.Namespace) -> None:
    """``--profile-only serving``: requests through the wrapper's Flask app, in process.

    Runs in the serving environment (it imports seldon_core). Times ``--requests``
    requests to the anchor (when ``--anchor-body``) and to ClosedLoopModel without the
    profiler, then the closedloop ones again under cProfile.
    """
    from seldon_core.flask_utils import SeldonMicroserviceException
    from seldon_core.metrics import SeldonMetrics
    from seldon_core.wrapper import get_rest_microservice

    from closedloop.serving.model import ClosedLoopModel

    sys.path.insert(0, str(HERE))
    from booster_model import BoosterModel

    model = ClosedLoopModel(**json.loads(args.parameters))
    model.load()
    deadline = time.monotonic() + 120
    while True:
        try:
            model.health_status()
            break
        except SeldonMicroserviceException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    metrics = SeldonMetrics()
    n = args.requests

    def timed(app: Any, body: bytes, profiler: cProfile.Profile | None = None) -> float:
        client = app.test_client()

        def once() -> None:
            answer = client.post(PREDICT_PATH, data=body, content_type="application/json")
            if answer.status_code != 200:
                raise SystemExit(f"HTTP {answer.status_code}: {answer.get_data(True)[:300]}")

        for _ in range(min(50, n)):
            once()
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        for _ in range(n):
            once()
        if profiler is not None:
            profiler.disable()
        return (time.perf_counter() - started) / n * 1e3

    body = Path(args.body).read_bytes()
    lines = [
        f"{n} requests of {args.rows} row(s), in process through the wrapper's Flask app "
        "(test client, no HTTP):"
    ]
    if args.anchor_body:
        anchor = BoosterModel(args.booster_path)
        anchor.load()
        anchor_ms = timed(
            get_rest_microservice(anchor, metrics), Path(args.anchor_body).read_bytes()
        )
        lines.append(f"  {'anchor (BoosterModel)':30s} {anchor_ms:9.3f} ms per request")
    # The launcher's changes to the wrapper (closedloop.serving.microservice), which the
    # anchor runs without: applied only now, after the anchor was timed.
    from closedloop.serving.microservice import serve_closedloop_metrics

    serve_closedloop_metrics(tempfile.mkdtemp(prefix="closedloop-bench-metrics-"))
    closedloop_app = get_rest_microservice(model, metrics)
    closedloop_ms = timed(closedloop_app, body)
    lines.append(f"  {'closedloop (ClosedLoopModel)':30s} {closedloop_ms:9.3f} ms per request")
    profiler = cProfile.Profile()
    profiled_ms = timed(closedloop_app, body, profiler)
    lines.append(f"  {'closedloop under cProfile':30s} {profiled_ms:9.3f} ms per request")
    print("\n".join(lines))
    skip = ("werkzeug/test.py", "flask/testing.py", Path(__file__).name)
    print(profile_report(profiler, n, "request (closedloop, under cProfile)", skip=skip))


def run_serving_profile(
    s3: LocalS3,
    parameters: dict[str, str],
    body: Path,
    rows: int,
    requests: int,
    anchor: tuple[Path, Path] | None,
) -> str:
    """Run :func:`profile_serving` in the serving environment; return what it printed."""
    python = find_microservice().parent / "python"
    command = [
        str(python),
        str(Path(__file__).resolve()),
        "--profile-only",
        "serving",
        "--parameters",
        json.dumps(parameters),
        "--body",
        str(body),
        "--rows",
        str(rows),
        "--requests",
        str(requests),
    ]
    if anchor is not None:
        command += ["--booster-path", str(anchor[0]), "--anchor-body", str(anchor[1])]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(s3.settings().to_env())
    env["OMP_NUM_THREADS"] = "1"
    try:
        answer = subprocess.run(
            command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        return "profile did not finish within 600s"
    if answer.returncode != 0:
        return f"profile failed (exit {answer.returncode}):\n{answer.stderr[-2000:]}"
    return answer.stdout.rstrip()


# -- the benchmark ----------------------------------------------------------------------
@dataclass
class Measurements:
    """Everything measured in one run."""

    cells: dict[str, dict[str, WrkResult]] = field(default_factory=dict)
    server_errors: dict[str, str] = field(default_factory=dict)
    large: WrkResult | None = None
    large_inplace_rows_s: float = float("nan")
    batch_rows: int = 0
    batch_timings: dict[str, float] = field(default_factory=dict)
    batch_transform_s: float = float("nan")
    batch_inplace_s: float = float("nan")
    agreement: list[str] = field(default_factory=list)
    profiles: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Goal:
    name: str
    measured: str
    target: str
    ratio: float
    passed: bool | None
    """None when the figure could not be measured."""
    gap: str = ""

    @property
    def verdict(self) -> str:
        return "FAILED" if self.passed is None else "PASS" if self.passed else "MISS"


def train_and_register(work: Path, s3: LocalS3, train_rows: int) -> tuple[Registry, Any, Any]:
    raw = generate_transactions(train_rows, seed=1)
    # As the training pipeline does: infer, clean, serve the schema with its fitted cleaning.
    cleaned, record = clean_dataset(raw, infer_schema(raw, "is_fraud"))
    schema = fitted_schema(infer_schema(raw, "is_fraud"), record)
    pipeline = train_model(cleaned, schema, ModelConfig("xgboost"))
    source = work / "version"
    source.mkdir()
    joblib.dump(pipeline, source / MODEL_FILE)
    (source / SCHEMA_FILE).write_text(schema.to_json())
    registry = Registry(s3.store(), "s3://closedloop/registry")
    version = registry.register(MODEL_NAME, source, Lineage("generated://", "0" * 64)).version
    registry.promote(MODEL_NAME, version, "benchmark")
    return registry, pipeline, schema


@contextlib.contextmanager
def running(server: LocalSeldonServer) -> Iterator[LocalSeldonServer]:
    try:
        yield server.start()
    finally:
        server.stop()


def measure_server(
    label: str,
    server: LocalSeldonServer,
    body: Path,
    wrk: str,
    args: argparse.Namespace,
    found: Measurements,
    answers: dict[str, np.ndarray],
    large_body: Path | None = None,
) -> None:
    """Start *server*, warm it up, run every cell (and the large cell), stop it."""
    progress(f"{label}: starting ({args.workers} workers)")
    with running(server):
        url = server.url + PREDICT_PATH
        answers[label] = probe(url, body.read_bytes())
        progress(f"{label}: warm-up {args.warmup}s at c8")
        run_wrk(wrk, url, body, *CELLS["c8"], args.warmup)
        found.cells[label] = {}
        for cell, (threads, connections) in CELLS.items():
            progress(
                f"{label}: {cell} ({threads} thread(s), {connections} connection(s)) {args.seconds}s"
            )
            result = run_wrk(wrk, url, body, threads, connections, args.seconds)
            found.cells[label][cell] = result
            progress(f"{label}: {cell} {result.describe()}")
        if large_body is not None:
            progress(f"{label}: {args.large_rows}-row requests, c1 {args.large_seconds}s")
            try:
                probe(url, large_body.read_bytes())
            except (RuntimeError, OSError) as exc:
                found.large = WrkResult(error=str(exc))
            else:
                found.large = run_wrk(wrk, url, large_body, 1, 1, args.large_seconds, 60)
            progress(f"{label}: large {found.large.describe()}")
    progress(f"{label}: stopped")


def benchmark(work: Path, s3: LocalS3, wrk: str, args: argparse.Namespace) -> Measurements:
    found = Measurements()
    progress(f"training an XGBoost pipeline on {args.train_rows} rows and registering it")
    registry, pipeline, schema = train_and_register(work, s3, args.train_rows)
    names = list(schema.feature_names)
    booster = pipeline.named_steps["model"].get_booster()
    booster_path = work / "booster.ubj"
    booster.save_model(str(booster_path))
    booster.set_param({"nthread": 1})

    one = json_rows(generate_transactions(1, seed=7).loc[:, names])
    large = json_rows(generate_transactions(args.large_rows, seed=3).loc[:, names])
    large_matrix = transformed(large, names, pipeline, schema)
    bodies = {
        "raw": raw_body(one, names),
        "anchor": anchor_body(transformed(one, names, pipeline, schema)),
        "large": raw_body(large, names),
    }
    paths = {key: work / f"{key}.json" for key in bodies}
    for key, body in bodies.items():
        paths[key].write_bytes(body)
    parameters = model_parameters(
        registry.root,
        MODEL_NAME,
        poll_seconds=60,
        max_rows=max(DEFAULT_MAX_ROWS, args.large_rows),
        max_request_bytes=max(DEFAULT_MAX_REQUEST_BYTES, 2 * len(bodies["large"])),
    )
    common: dict[str, Any] = {
        "grpc": False,
        "workers": args.workers,
        "extra_env": {"OMP_NUM_THREADS": "1"},
    }
    servers = {
        ANCHOR: (
            lambda: LocalSeldonServer(
                {"booster_path": str(booster_path), "nthread": "1"},
                interface="booster_model.BoosterModel",
                pythonpath=[HERE],
                state_dir=work / "server-anchor",
                **common,
            ),
            paths["anchor"],
        ),
        CLOSEDLOOP: (
            lambda: LocalSeldonServer(
                parameters, s3=s3.settings(), state_dir=work / "server-closedloop", **common
            ),
            paths["raw"],
        ),
        ECHO: (
            lambda: LocalSeldonServer(
                {},
                interface="echo_model.EchoModel",
                pythonpath=[HERE],
                state_dir=work / "server-echo",
                **common,
            ),
            paths["raw"],
        ),
    }
    answers: dict[str, np.ndarray] = {}
    for label, (make, body) in servers.items():
        try:
            measure_server(
                label,
                make(),
                body,
                wrk,
                args,
                found,
                answers,
                large_body=paths["large"] if label == CLOSEDLOOP else None,
            )
        except (LocalServerError, RuntimeError, OSError, ValueError) as exc:
            found.server_errors[label] = f"{type(exc).__name__}: {exc}"
            progress(f"{label}: FAILED: {exc}")
    if ANCHOR in answers and CLOSEDLOOP in answers:
        diff = np.abs(answers[ANCHOR].astype(float) - answers[CLOSEDLOOP].astype(float)).max()
        found.agreement.append(
            f"anchor and closedloop answers to the 1-row request differ by at most {diff:.2g}"
        )

    progress(f"in process: booster.inplace_predict on the {args.large_rows} transformed rows")
    found.large_inplace_rows_s = rows_per_second(
        lambda: booster.inplace_predict(large_matrix), args.large_rows
    )

    progress(f"batch: generating {args.batch_rows} rows")
    batch = generate_transactions(args.batch_rows, seed=11)
    found.batch_rows = len(batch)
    batch_predict_step(batch.head(1000), pipeline, schema)  # warm-up
    progress("batch: batch_predict_step (check, predict)")
    scores = batch_predict_step(batch, pipeline, schema, found.batch_timings)
    started = time.perf_counter()
    matrix = pipeline.named_steps["features"].transform(check_frame(batch[names], schema).frame)
    found.batch_transform_s = time.perf_counter() - started
    booster.inplace_predict(matrix[:1000])  # warm-up
    progress("batch: booster.inplace_predict on the transformed rows")
    started = time.perf_counter()
    reference = booster.inplace_predict(matrix)
    found.batch_inplace_s = time.perf_counter() - started
    found.agreement.append(
        f"batch step and inplace_predict scores differ by at most "
        f"{np.abs(np.asarray(scores) - reference).max():.2g}"
    )
    del matrix, reference, scores

    if args.profile != "never":
        goals = evaluate(found, args)
        missed = [args.profile == "always" or g.passed is False for g in goals]
        if any(missed[:3]) and CLOSEDLOOP not in found.server_errors:
            progress(f"profile: {args.profile_requests} 1-row requests in process")
            found.profiles.append(
                (
                    "1-row requests",
                    run_serving_profile(
                        s3,
                        parameters,
                        paths["raw"],
                        1,
                        args.profile_requests,
                        (booster_path, paths["anchor"]),
                    ),
                )
            )
        if missed[3] and CLOSEDLOOP not in found.server_errors:
            progress(f"profile: {args.profile_large_requests} {args.large_rows}-row requests")
            found.profiles.append(
                (
                    f"{args.large_rows}-row requests",
                    run_serving_profile(
                        s3,
                        parameters,
                        paths["large"],
                        args.large_rows,
                        args.profile_large_requests,
                        None,
                    ),
                )
            )
        if missed[4]:
            rows = min(args.profile_batch_rows, len(batch))
            progress(f"profile: batch_predict_step on {rows} rows")
            profiler = cProfile.Profile()
            part = batch.head(rows)
            profiler.enable()
            batch_predict_step(part, pipeline, schema)
            profiler.disable()
            found.profiles.append(
                (f"batch_predict_step on {rows} rows", profile_report(profiler, 1, "batch"))
            )
    return found


def _cell(found: Measurements, label: str, cell: str) -> WrkResult | None:
    result = found.cells.get(label, {}).get(cell)
    return result if result is not None and result.ok else None


def evaluate(found: Measurements, args: argparse.Namespace) -> list[Goal]:
    """The five goals, with the measured figure, the ratio and the gap when missed."""
    names = GOAL_NAMES
    nan = float("nan")
    goals = []

    cl8, an8 = _cell(found, CLOSEDLOOP, "c8"), _cell(found, ANCHOR, "c8")
    if cl8 and an8:
        ratio = cl8.rps / an8.rps
        goal = Goal(
            names[0],
            f"{cl8.rps:.0f} vs {an8.rps:.0f} req/s",
            f">= {GOAL_C8_THROUGHPUT:.2f} x anchor",
            ratio,
            ratio >= GOAL_C8_THROUGHPUT,
        )
        if not goal.passed:
            wanted = GOAL_C8_THROUGHPUT * an8.rps
            goal.gap = (
                f"{wanted - cl8.rps:.0f} req/s short of {wanted:.0f} req/s; with "
                f"{args.workers} busy workers that is {args.workers / cl8.rps * 1e3:.2f} ms of "
                f"worker time per request against {args.workers / wanted * 1e3:.2f} ms allowed"
            )
        goals.append(goal)
    else:
        goals.append(
            Goal(names[0], "not measured", f">= {GOAL_C8_THROUGHPUT:.2f} x anchor", nan, None)
        )

    if cl8:
        ratio = cl8.p99_ms / GOAL_C8_P99_MS
        goal = Goal(
            names[1], f"{cl8.p99_ms:.2f} ms", f"<= {GOAL_C8_P99_MS:g} ms", ratio, ratio <= 1
        )
        if not goal.passed:
            goal.gap = f"p99 {cl8.p99_ms - GOAL_C8_P99_MS:.2f} ms over {GOAL_C8_P99_MS:g} ms"
        goals.append(goal)
    else:
        goals.append(Goal(names[1], "not measured", f"<= {GOAL_C8_P99_MS:g} ms", nan, None))

    cl1, an1 = _cell(found, CLOSEDLOOP, "c1"), _cell(found, ANCHOR, "c1")
    target = f"<= +{GOAL_C1_P50_EXTRA_MS:g} ms"
    if cl1 and an1:
        extra = cl1.p50_ms - an1.p50_ms
        goal = Goal(
            names[2],
            f"{extra:+.3f} ms ({cl1.p50_ms:.3f} vs {an1.p50_ms:.3f})",
            target,
            extra / GOAL_C1_P50_EXTRA_MS,
            extra <= GOAL_C1_P50_EXTRA_MS,
        )
        if not goal.passed:
            goal.gap = (
                f"{extra - GOAL_C1_P50_EXTRA_MS:.3f} ms per request to remove "
                f"(closedloop spends {extra:.3f} ms more than the anchor at p50)"
            )
        goals.append(goal)
    else:
        goals.append(Goal(names[2], "not measured", target, nan, None))

    target = f">= {GOAL_LARGE_FRACTION:.2f} x in-process"
    if found.large is not None and found.large.ok:
        served = found.large.rps * args.large_rows
        ratio = served / found.large_inplace_rows_s
        goal = Goal(
            names[3],
            f"{served:,.0f} vs {found.large_inplace_rows_s:,.0f} rows/s",
            target,
            ratio,
            ratio >= GOAL_LARGE_FRACTION,
        )
        if not goal.passed:
            allowed = args.large_rows / (GOAL_LARGE_FRACTION * found.large_inplace_rows_s) * 1e3
            took = 1e3 / found.large.rps
            goal.gap = (
                f"a {args.large_rows}-row request takes {took:.1f} ms (mean), the goal allows "
                f"{allowed:.1f} ms: {took - allowed:.1f} ms to remove"
            )
        goals.append(goal)
    else:
        goals.append(Goal(names[3], "not measured", target, nan, None))

    target = f">= {GOAL_BATCH_FRACTION:.2f} x in-process"
    if found.batch_timings and found.batch_inplace_s > 0:
        step = sum(found.batch_timings.values())
        ratio = found.batch_inplace_s / step
        goal = Goal(
            names[4],
            f"{found.batch_rows / step:,.0f} vs {found.batch_rows / found.batch_inplace_s:,.0f} rows/s",
            target,
            ratio,
            ratio >= GOAL_BATCH_FRACTION,
        )
        if not goal.passed:
            allowed = found.batch_inplace_s / GOAL_BATCH_FRACTION
            goal.gap = (
                f"{found.batch_rows} rows take {step:.2f}s (check "
                f"{found.batch_timings['check']:.2f}s + predict "
                f"{found.batch_timings['predict']:.2f}s), the goal allows {allowed:.2f}s: "
                f"{step - allowed:.2f}s to remove"
            )
        goals.append(goal)
    else:
        goals.append(Goal(names[4], "not measured", target, nan, None))
    return goals


def report(found: Measurements, args: argparse.Namespace, wrk: str) -> None:
    """Print the profiles, then the summary tables (the goals with PASS/MISS)."""
    for title, text in found.profiles:
        print(f"\n### Profile: {title}\n")
        print(text)
    goals = evaluate(found, args)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\n## Serving benchmark\n\n{args.workers} gunicorn worker(s) per server, each server "
        f"alone, OMP_NUM_THREADS=1, {os.cpu_count()} CPUs; {wrk_version(wrk)} with "
        f"tests/benchmarks/wrk_post.lua, {args.seconds}s per cell after a {args.warmup}s "
        f"warm-up; c1 = 1 thread 1 connection, c8 = 2 threads 8 connections; latency in ms; "
        f"load average at the end: {load}.\n"
    )
    print("| server | c1 req/s | c1 p50 | c8 req/s | c8 p50 | c8 p99 |")
    print("|---|---:|---:|---:|---:|---:|")
    for label in (ANCHOR, CLOSEDLOOP, ECHO):
        if label in found.server_errors:
            failed = f"failed: {found.server_errors[label][:120]}".replace("|", "/")
            print(f"| {DESCRIPTIONS[label]} | {failed} | | | | |")
            continue
        c1, c8 = found.cells.get(label, {}).get("c1"), found.cells.get(label, {}).get("c8")

        def show(result: WrkResult | None, what: str) -> str:
            if result is None:
                return "n/a"
            if not result.ok:
                return f"failed ({result.error})"
            value = getattr(result, what)
            return f"{value:.0f}" if what == "rps" else f"{value:.2f} ms"

        print(
            f"| {DESCRIPTIONS[label]} | {show(c1, 'rps')} | {show(c1, 'p50_ms')} | "
            f"{show(c8, 'rps')} | {show(c8, 'p50_ms')} | {show(c8, 'p99_ms')} |"
        )
    print()
    if found.large is not None:
        large = found.large
        served = (
            f"{large.rps:.2f} req/s = {large.rps * args.large_rows:,.0f} rows/s, "
            f"p50 {large.p50_ms:.1f} ms"
            if large.ok
            else f"failed ({large.error})"
        )
        print(
            f"- {args.large_rows}-row requests through closedloop (c1, {args.large_seconds}s): {served}"
        )
    print(
        f"- in process, `booster.inplace_predict` on those {args.large_rows} transformed rows: "
        f"{found.large_inplace_rows_s:,.0f} rows/s"
    )
    if found.batch_timings:
        t = found.batch_timings
        step = t["check"] + t["predict"]
        print(
            f"- batch predict step on {found.batch_rows:,} rows: check {t['check']:.2f}s + "
            f"predict {t['predict']:.2f}s = {step:.2f}s ({found.batch_rows / step:,.0f} rows/s); "
            f"`inplace_predict` on the transformed rows {found.batch_inplace_s:.2f}s "
            f"({found.batch_rows / found.batch_inplace_s:,.0f} rows/s; getting them there, "
            f"check + feature step, took {found.batch_transform_s:.2f}s and is not counted)"
        )
    for line in found.agreement:
        print(f"- {line}")
    print("\n| goal | measured | target | ratio | result |")
    print("|---|---|---|---:|---|")
    for goal in goals:
        ratio = "n/a" if np.isnan(goal.ratio) else f"{goal.ratio:.2f}"
        print(f"| {goal.name} | {goal.measured} | {goal.target} | {ratio} | {goal.verdict} |")
    print(
        "\nratio: measured / reference (throughput goals pass at >= the target, latency "
        "goals at <= 1; for the p50 goal, the extra ms / 0.3 ms)"
    )
    gaps = [g for g in goals if g.gap]
    if gaps:
        print("\nGaps:")
        for goal in gaps:
            print(f"- {goal.name}: {goal.gap}")
    if any(g.passed is not None and not g.passed for g in goals) and not found.profiles:
        print("\n(profiles skipped: --profile never)")


class OutOfTime(BaseException):
    """Raised by SIGALRM after ``--timeout``; no ``except Exception`` swallows it."""


def _raise_timeout(signum: int, frame: Any) -> None:
    raise OutOfTime("the benchmark ran past --timeout; everything it started was stopped")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per cell")
    parser.add_argument("--warmup", type=int, default=2, help="wrk warm-up per server (c8)")
    parser.add_argument("--large-rows", type=int, default=10_000, help="rows per large request")
    parser.add_argument(
        "--large-seconds",
        type=int,
        default=None,
        help="large-request cell (default min(5, --seconds))",
    )
    parser.add_argument("--batch-rows", type=int, default=1_000_000, help="rows of the batch step")
    parser.add_argument("--train-rows", type=int, default=5000, help="rows the model is trained on")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="profile where goals are missed (auto), always, or never",
    )
    parser.add_argument(
        "--profile-requests", type=int, default=2000, help="1-row requests profiled"
    )
    parser.add_argument(
        "--profile-large-requests", type=int, default=20, help="large requests profiled"
    )
    parser.add_argument(
        "--profile-batch-rows", type=int, default=100_000, help="rows of the profiled batch step"
    )
    parser.add_argument("--timeout", type=int, default=1800, help="stop everything after this (s)")
    # Internal: the in-process serving profile, run by the serving environment's python.
    parser.add_argument("--profile-only", choices=("serving",), help=argparse.SUPPRESS)
    parser.add_argument("--parameters", help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=2000, help=argparse.SUPPRESS)
    parser.add_argument("--booster-path", help=argparse.SUPPRESS)
    parser.add_argument("--anchor-body", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.large_seconds is None:
        args.large_seconds = min(5, args.seconds)
    if min(args.workers, args.seconds, args.warmup, args.large_seconds, args.large_rows) < 1:
        parser.error("--workers, --seconds, --warmup, --large-* must be >= 1")
    return args


def main() -> None:
    args = parse_args()
    if args.profile_only == "serving":
        profile_serving(args)
        return
    wrk = find_wrk()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGALRM, _raise_timeout)
    signal.alarm(args.timeout)
    try:
        with tempfile.TemporaryDirectory(prefix="closedloop-bench-") as tmp:
            work = Path(tmp)
            progress("starting SeaweedFS (local S3)")
            s3 = LocalS3(work / "s3").start()
            try:
                found = benchmark(work, s3, wrk, args)
            finally:
                s3.stop()
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
