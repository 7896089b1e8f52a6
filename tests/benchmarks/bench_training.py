"""Benchmark the cost of componentization: the training pipeline vs the same steps in one process.

For each row count, on generated card transactions uploaded to a real S3 server
(SeaweedFS, started in a temporary directory and always stopped):

* ``kfp.local``: the registered ``training`` pipeline through
  :func:`closedloop.local.pipelines.run_pipeline` (``SubprocessRunner``: one Python
  process per task, artifacts as Parquet/joblib/JSON files between them);
* ``in-process``: :func:`train_in_process`, a plain function doing the same steps with
  the pure functions of ``closedloop.ml`` in one process (ingest, infer schema,
  validate, clean, split, fit features, train N candidates scored on an inner
  validation split, select, train final, evaluate, explain, fit the drift detector,
  gate, register, promote), rendering the same reports.

Every measurement runs in a fresh process (this script re-invokes itself), so peak
memory never mixes: the in-process run reports its own ``RUSAGE_SELF`` peak RSS; the
kfp.local run reports the driver's ``RUSAGE_SELF`` and, with ``RUSAGE_CHILDREN``, the
largest task subprocess (tasks run one after another, each waited for). Wall time is
measured around the whole child process (interpreter start and imports included, for
both). Each variant registers into its own registry prefix under its own model name,
so neither gates against the other. Each measurement stops after ``--timeout`` seconds.

Run from the repository root (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_training.py [--rows 100000 1000000] [--candidates 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

TARGET = "is_fraud"
# The training pipeline's defaults (pipelines/training.py), kept here so that the
# in-process variant does not need to import kfp to read them.
DEFAULT_KINDS = "xgboost,random_forest,logistic_regression"
TEST_SIZE = 0.2
VALID_FRACTION = 0.2
MAX_MISSING_RATE = 0.2
MAX_DUPLICATE_RATE = 0.05
PRIMARY_METRIC = "roc_auc"
MIN_PRIMARY_METRIC = 0.7
MIN_IMPROVEMENT = 0.0
BUCKET = "closedloop"

KFP = "kfp.local"
INPROCESS = "in-process"
VARIANTS = {KFP: "kfp", INPROCESS: "inprocess"}

# The steps in pipeline order, named as the pipeline's tasks; the in-process run times
# its phases under the same names so the breakdown lines up.
STEPS = (
    "ingest-data",
    "validate-data",
    "clean-data",
    "split-data",
    "engineer-features",
    "propose-candidates",
    "train-candidate",
    "select-best-candidate",
    "train-model",
    "evaluate-model",
    "explain-model",
    "fit-drift-detector",
    "gate-model",
    "register-model",
    "promote-model",
    "deploy-model",
)


def say(text: str) -> None:
    """Progress line on the terminal (the real stdout, even under kfp.local's redirect)."""
    stream = sys.__stdout__ or sys.stdout
    print(text, file=stream, flush=True)


def max_rss_mb(who: int) -> float:
    """Peak resident set size in MiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1024.0


# -- the in-process variant -----------------------------------------------------------
def train_in_process(
    data_uri: str,
    registry_uri: str,
    model_name: str,
    workdir: Path,
    *,
    n_candidates: int,
    kinds: str,
    seed: int = 0,
    target: str = TARGET,
    phase: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
) -> dict[str, Any]:
    """The training pipeline's steps in one process, with the functions its components call.

    Intermediate results stay in memory; what the components would write as UI
    artifacts (validation report, cleaning record, leaderboard, evaluation report,
    explanation chart, gate verdict) is rendered and written to *workdir* all the same.

    Returns:
        The registered version, the gate's verdict, the chosen model kind and its metrics.
    """
    import joblib
    import numpy as np
    from sklearn.pipeline import Pipeline

    from closedloop.drift.detector import fit_detector, save_detector_dir
    from closedloop.ml.clean import CleanOptions, clean_dataset
    from closedloop.ml.evaluate import evaluate_model
    from closedloop.ml.explain import explain_global
    from closedloop.ml.features import make_features
    from closedloop.ml.gate import GatePolicy, gate
    from closedloop.ml.ingest import ingest
    from closedloop.ml.schema import InputSchema, infer_schema
    from closedloop.ml.split import split_dataset
    from closedloop.ml.train import (
        encode_target,
        feature_frame,
        make_estimator,
        predict_scores,
    )
    from closedloop.ml.tune import (
        CandidateResult,
        candidate_configs,
        score_candidate,
        score_metric_name,
        select_best,
    )
    from closedloop.ml.validate import QualityThresholds, validate_dataset
    from closedloop.registry import Lineage, Registry, code_version, layout
    from closedloop.storage import Store

    step = phase or (lambda _name: contextlib.nullcontext())
    reports = workdir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    store = Store()
    registry = Registry(store, registry_uri)

    def fit_on(features: Any, rows: Any, schema: InputSchema, config: Any) -> Pipeline:
        estimator = make_estimator(config, schema)
        estimator.fit(
            features.transform(feature_frame(rows, schema)),
            encode_target(rows[schema.target], schema),
        )
        return Pipeline([("features", features), ("model", estimator)])

    with step("ingest-data"):
        raw = ingest(data_uri, store=store)
        frame, source, digest = raw.frame, raw.source, raw.sha256
        del raw
    with step("validate-data"):
        if target not in frame.columns:
            raise ValueError(f"target column {target!r} is not in {data_uri}")
        schema = infer_schema(frame, target)
        report = validate_dataset(
            frame,
            schema,
            QualityThresholds(
                max_missing_rate=MAX_MISSING_RATE, max_duplicate_rate=MAX_DUPLICATE_RATE
            ),
        )
        (reports / "validation.html").write_text(report.to_html())
        report.to_metrics()
        if not report.passed:
            raise ValueError(f"data validation failed for {data_uri}: {report.summary()}")
    with step("clean-data"):
        cleaned, record = clean_dataset(frame, schema, CleanOptions())
        (reports / "cleaning.json").write_text(json.dumps(record.to_dict(), default=str))
        del frame
    with step("split-data"):
        train, holdout = split_dataset(
            cleaned, target, test_size=TEST_SIZE, strategy="stratified", seed=seed
        )
        del cleaned
    with step("engineer-features"):
        features = make_features(schema, engineer=True).fit(feature_frame(train, schema))
    with step("propose-candidates"):
        configs = candidate_configs(
            n_candidates, seed, [k.strip() for k in kinds.split(",") if k.strip()]
        )
    with step("train-candidate"):
        fit_rows, valid_rows = split_dataset(train, target, test_size=VALID_FRACTION, seed=seed)
        results = [
            CandidateResult(
                config=config,
                score=score_candidate(
                    fit_on(features, fit_rows, schema, config), valid_rows, schema
                ),
                metric=score_metric_name(schema),
            )
            for config in configs
        ]
        del fit_rows, valid_rows
    with step("select-best-candidate"):
        best = select_best(results)
        board = "\n".join(
            f"| {r.config.kind} | {r.score:.4f} | {json.dumps(dict(r.config.params), sort_keys=True)} |"
            for r in sorted(results, key=lambda r: -r.score)
        )
        (reports / "leaderboard.md").write_text(board + "\n")
    with step("train-model"):
        model = fit_on(features, train, schema, best.config)
    with step("evaluate-model"):
        evaluation = evaluate_model(model, holdout, schema)
        (reports / "evaluation.html").write_text(evaluation.to_html())
    with step("explain-model"):
        explanation = explain_global(model, holdout, schema, max_rows=2000, seed=seed)
        (reports / "explanation.md").write_text(explanation.to_markdown())
        (reports / "explanation.html").write_text(explanation.to_html())
    with step("fit-drift-detector"):
        detector = fit_detector(train, schema, p_val=0.05, max_reference_rows=5000, seed=seed)
    with step("gate-model"):
        challenger = predict_scores(model, holdout, schema)
        pointer = registry.champion(model_name)
        champion_scores = None
        if pointer is not None:
            with tempfile.TemporaryDirectory() as tmp:
                local = registry.fetch(model_name, pointer.version, tmp)
                champion_schema = InputSchema.from_json(
                    (local.path / layout.SCHEMA_FILE).read_text()
                )
                champion = joblib.load(local.path / layout.MODEL_FILE)
                champion_scores = predict_scores(champion, holdout, champion_schema)
        policy = GatePolicy(
            min_metric={PRIMARY_METRIC: MIN_PRIMARY_METRIC},
            primary_metric=PRIMARY_METRIC,
            min_improvement=MIN_IMPROVEMENT,
            first_model="accept_if_thresholds",
            seed=seed,
        )
        decision = gate(policy, encode_target(holdout[target], schema), challenger, champion_scores)
        (reports / "gate.md").write_text(decision.to_markdown())
    with step("register-model"), tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        joblib.dump(model, root / layout.MODEL_FILE)
        (root / layout.SCHEMA_FILE).write_text(schema.to_json())
        save_detector_dir(detector, root / layout.DETECTOR_DIR)
        detector.reference.to_parquet(root / layout.REFERENCE_FILE, index=False)
        (root / layout.EXPLANATION_FILE).write_text(
            json.dumps(explanation.to_dict(), indent=2, sort_keys=True, default=str)
        )
        (root / layout.METRICS_FILE).write_text(
            json.dumps(evaluation.to_dict(), indent=2, sort_keys=True, default=str)
        )
        lineage = Lineage(
            dataset_uri=source,
            dataset_sha256=digest,
            parameters={
                "model_config": best.config.to_dict(),
                "seed": seed,
                "engineer_features": True,
                "gate_passed": decision.passed,
                "gate_reason": decision.reason,
            },
            code_version=code_version(),
            parent_version=pointer.version if pointer else None,
            run_id="bench-training-in-process",
        )
        manifest = registry.register(model_name, root, lineage, evaluation.metrics)
    if decision.passed:
        with step("promote-model"):
            registry.promote(model_name, manifest.version, decision.reason)
    return {
        "version": manifest.version,
        "gate_passed": bool(decision.passed),
        "kind": best.config.kind,
        "roc_auc": float(np.float64(evaluation.metrics.get("roc_auc", float("nan")))),
        "train_rows": len(train),
    }


# -- one measurement, in its own process ----------------------------------------------
def measure_in_process(args: argparse.Namespace) -> dict[str, Any]:
    label = f"[{INPROCESS} rows={args.label_rows}]"
    started = time.perf_counter()
    phases: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(name: str) -> Any:
        say(f"  {label} {time.perf_counter() - started:7.1f}s  {name} …")
        t0 = time.perf_counter()
        yield
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0

    outcome = train_in_process(
        args.data_uri,
        args.registry_uri,
        args.model_name,
        Path(args.workdir),
        n_candidates=args.candidates,
        kinds=args.kinds,
        seed=args.seed,
        phase=phase,
    )
    elapsed = time.perf_counter() - started
    return {
        "work_seconds": elapsed,
        "self_max_rss_mb": max_rss_mb(resource.RUSAGE_SELF),
        "children_max_rss_mb": max_rss_mb(resource.RUSAGE_CHILDREN),
        "steps": phases,
        **outcome,
    }


class TreeRssSampler:
    """Samples the summed RSS of this process and all its descendants (from ``/proc``).

    kfp.local runs the ``ParallelFor`` candidates two at a time beside the driver, so
    the run's footprint at a moment is the sum over live processes; ``ru_maxrss`` only
    gives each process's own peak. Sampling can miss a spike shorter than the interval.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak_mb = max(self.peak_mb, self.sample_mb())
            self._stop.wait(self.interval)

    def sample_mb(self) -> float:
        parent_of: dict[int, int] = {}
        rss_of: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue  # the process ended meanwhile
            pid = int(entry.name)
            parent_of[pid] = int(fields[1])  # field 4, ppid
            rss_of[pid] = int(fields[21])  # field 24, rss in pages
        tree, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            parent = frontier.pop()
            for pid, ppid in parent_of.items():
                if ppid == parent and pid not in tree:
                    tree.add(pid)
                    frontier.append(pid)
        return sum(rss_of.get(pid, 0) for pid in tree) * self._page / 2**20


def step_spans(events: list[tuple[str, str, float]], run_end: float) -> dict[str, Any]:
    """Seconds per step from kfp.local's task events: ``(step, status, unix time)``.

    A step runs from its first task's start to its last task's end, so the two
    candidates running side by side count once (the span of the block). kfp.local 2.17
    logs the end of only one of the tasks of a ``ParallelFor``; a step with fewer ends
    than starts is measured up to the next step's start instead, and listed under
    ``approximate``.
    """
    steps: dict[str, float] = {}
    counts: dict[str, int] = {}
    approximate: list[str] = []
    for name in dict.fromkeys(n for n, status, _ in events if status == "started"):
        starts = [at for n, status, at in events if n == name and status == "started"]
        ends = [at for n, status, at in events if n == name and status in ("succeeded", "failed")]
        counts[name] = len(starts)
        if len(ends) >= len(starts):
            end = max(ends)
        else:
            later = [
                at
                for n, status, at in events
                if n != name and status == "started" and at >= max(starts)
            ]
            end = min(later, default=run_end)
            approximate.append(name)
        steps[name] = end - min(starts)
    return {"steps": steps, "step_tasks": counts, "approximate_steps": approximate}


def measure_kfp(args: argparse.Namespace) -> dict[str, Any]:
    from closedloop.local.pipelines import PipelineRunError, TaskEvent, run_pipeline

    label = f"[{KFP} rows={args.label_rows}]"
    started = time.perf_counter()
    events: list[tuple[str, str, float]] = []

    def progress(event: TaskEvent) -> None:
        elapsed = time.perf_counter() - started
        name = next((s for s in STEPS if event.task.startswith(s)), event.task)
        events.append((name, event.status, event.at))
        if event.status == "started":
            say(f"  {label} {elapsed:7.1f}s  {event.task} …")
        elif event.status == "failed":
            say(f"  {label} {elapsed:7.1f}s  {event.task} FAILED")
        elif event.status == "skipped":
            say(f"  {label} {elapsed:7.1f}s  {event.task} skipped")

    arguments = {
        "data_uri": args.data_uri,
        "target": TARGET,
        "model_name": args.model_name,
        "registry_uri": args.registry_uri,
        "n_candidates": args.candidates,
        "model_kinds": args.kinds,
        "seed": args.seed,
        "deploy_backend": "none",
    }
    try:
        with TreeRssSampler() as sampler:
            run = run_pipeline("training", arguments, Path(args.workdir), on_event=progress)
    except PipelineRunError as exc:
        raise SystemExit(f"{label} {exc}") from exc
    elapsed = time.perf_counter() - started
    # Read the peaks before anything else is imported or allocated here.
    self_rss = max_rss_mb(resource.RUSAGE_SELF)
    children_rss = max_rss_mb(resource.RUSAGE_CHILDREN)

    from closedloop.registry import Registry
    from closedloop.storage import Store

    registry = Registry(Store(), args.registry_uri)
    versions = registry.versions(args.model_name)
    champion = registry.champion(args.model_name)
    manifest = registry.manifest(args.model_name, versions[-1]) if versions else None
    return {
        "work_seconds": elapsed,
        "self_max_rss_mb": self_rss,
        "children_max_rss_mb": children_rss,
        "tree_peak_rss_mb": sampler.peak_mb,
        **step_spans(events, time.time()),
        "tasks": len(run.tasks_succeeded),
        "log_file": str(run.log_file),
        "version": manifest.version if manifest else "",
        "gate_passed": champion is not None
        and manifest is not None
        and champion.version == manifest.version,
        "kind": manifest.lineage.parameters["model_config"]["kind"] if manifest else "",
        "roc_auc": float(manifest.metrics.get("roc_auc", float("nan")))
        if manifest
        else float("nan"),
    }


def child_main(args: argparse.Namespace) -> None:
    result = measure_kfp(args) if args.measure == "kfp" else measure_in_process(args)
    Path(args.result_file).write_text(json.dumps(result, indent=2, sort_keys=True))


# -- the orchestrating process ----------------------------------------------------------
def run_measurement(
    variant: str,
    rows: int,
    data_uri: str,
    work: Path,
    env: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Run one variant in a fresh process; return its result, or ``{"status": ...}``."""
    name = VARIANTS[variant]
    workdir = work / f"{name}-{rows}"
    workdir.mkdir(parents=True, exist_ok=True)
    result_file = workdir / "result.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--measure",
        name,
        "--data-uri",
        data_uri,
        "--registry-uri",
        f"s3://{BUCKET}/bench/{name}-{rows}/registry",
        "--model-name",
        f"bench-{name}-{rows}",
        "--workdir",
        str(workdir),
        "--result-file",
        str(result_file),
        "--label-rows",
        str(rows),
        "--candidates",
        str(args.candidates),
        "--kinds",
        args.kinds,
        "--seed",
        str(args.seed),
    ]
    say(f"[rows={rows}] {variant}: starting (time limit {args.timeout:.0f}s)")
    started = time.perf_counter()
    # A session of its own, so a timeout can stop the child and every task it started.
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    status = "ok"
    try:
        code = proc.wait(timeout=args.timeout)
        if code != 0:
            status = f"failed (exit {code})"
    except subprocess.TimeoutExpired:
        status = "timeout"
    finally:
        if proc.poll() is None:
            stop_group(proc)
    wall = time.perf_counter() - started
    if status == "ok" and not result_file.exists():
        status = "failed (no result)"
    say(f"[rows={rows}] {variant}: {status} after {wall:.1f}s")
    if status != "ok":
        return {"status": status, "wall_seconds": wall}
    return {
        "status": status,
        "wall_seconds": wall,
        **json.loads(result_file.read_text()),
    }


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, then SIGKILL it after a short wait."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def benchmark(args: argparse.Namespace) -> dict[int, dict[str, dict[str, Any]]]:
    import io

    from closedloop.data.generate import generate_transactions
    from closedloop.local.s3 import LocalS3

    results: dict[int, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="closedloop-bench-training-") as tmp:
        work = Path(tmp)
        say(f"starting SeaweedFS in {work / 's3'} …")
        s3 = LocalS3(work / "s3", buckets=(BUCKET,))
        try:
            s3.start()
            store = s3.store()
            env = {
                **os.environ,
                **s3.settings().to_env(),
                "CLOSEDLOOP_HOME": str(work / "home"),
            }
            for rows in args.rows:
                say(f"[rows={rows}] generating and uploading {rows} transactions …")
                frame = generate_transactions(rows, seed=args.seed)
                buffer = io.BytesIO()
                frame.to_parquet(buffer, index=False)
                del frame
                data_uri = f"s3://{BUCKET}/bench/data/rows={rows}/transactions.parquet"
                store.write_bytes(data_uri, buffer.getvalue())
                say(f"[rows={rows}] uploaded {buffer.tell() / 2**20:.1f} MiB to {data_uri}")
                del buffer
                results[rows] = {
                    variant: run_measurement(variant, rows, data_uri, work, env, args)
                    for variant in (KFP, INPROCESS)
                }
        finally:
            say("stopping SeaweedFS …")
            s3.stop()
    return results


# -- the report ---------------------------------------------------------------------------
def _cell(result: dict[str, Any], key: str, fmt: str) -> str:
    if result.get("status") != "ok":
        return str(result.get("status", "?")).split(" ")[0]
    value = result.get(key)
    return format(value, fmt) if isinstance(value, int | float) else "-"


def _ratio(a: dict[str, Any], b: dict[str, Any], key_a: str, key_b: str) -> str:
    if a.get("status") != "ok" or b.get("status") != "ok" or not b.get(key_b):
        return "-"
    return f"{a[key_a] / b[key_b]:.2f}x"


def print_report(results: dict[int, dict[str, dict[str, Any]]], args: argparse.Namespace) -> None:
    print()
    print(
        f"training pipeline: {args.candidates} candidate(s) of {args.kinds}, seed {args.seed}; "
        f"{os.cpu_count()} CPUs; time limit {args.timeout:.0f}s per measurement"
    )
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average at the end (1, 5, 15 min): {load} - other work on the machine skews it")

    print("\nwall time, seconds")
    print("  wall : the whole child process, interpreter start and imports included")
    print("  work : inside that process, the call to run_pipeline / train_in_process")
    header = (
        f"{'rows':>9s} | {'kfp.local wall':>14s} {'work':>7s} | "
        f"{'in-process wall':>15s} {'work':>7s} | {'kfp.local / in-process':>22s}"
    )
    print(header)
    print("-" * len(header))
    for rows, by_variant in results.items():
        k, p = by_variant[KFP], by_variant[INPROCESS]
        print(
            f"{rows:9d} | {_cell(k, 'wall_seconds', '.1f'):>14s} "
            f"{_cell(k, 'work_seconds', '.1f'):>7s} | "
            f"{_cell(p, 'wall_seconds', '.1f'):>15s} {_cell(p, 'work_seconds', '.1f'):>7s} | "
            f"{_ratio(k, p, 'wall_seconds', 'wall_seconds'):>22s}"
        )

    print("\npeak RSS, MiB (SeaweedFS, shared by both, is not counted)")
    print("  kfp driver : the kfp.local process itself (RUSAGE_SELF)")
    print("  kfp task   : the largest single task subprocess (RUSAGE_CHILDREN)")
    print(
        "  kfp total  : driver + every live task at once, sampled from /proc every 0.25s "
        "(candidates run two at a time)"
    )
    print("  in-process : the one process doing every step (RUSAGE_SELF)")
    header = (
        f"{'rows':>9s} | {'kfp driver':>10s} {'kfp task':>9s} {'kfp total':>9s} | "
        f"{'in-process':>10s} | {'task / in-process':>17s} {'total / in-process':>18s}"
    )
    print(header)
    print("-" * len(header))
    for rows, by_variant in results.items():
        k, p = by_variant[KFP], by_variant[INPROCESS]
        print(
            f"{rows:9d} | {_cell(k, 'self_max_rss_mb', '.0f'):>10s} "
            f"{_cell(k, 'children_max_rss_mb', '.0f'):>9s} "
            f"{_cell(k, 'tree_peak_rss_mb', '.0f'):>9s} | "
            f"{_cell(p, 'self_max_rss_mb', '.0f'):>10s} | "
            f"{_ratio(k, p, 'children_max_rss_mb', 'self_max_rss_mb'):>17s} "
            f"{_ratio(k, p, 'tree_peak_rss_mb', 'self_max_rss_mb'):>18s}"
        )

    print("\noutcome (the variants should agree: same best candidate, same holdout ROC AUC)")
    for rows, by_variant in results.items():
        for variant, r in by_variant.items():
            if r.get("status") != "ok":
                print(f"  {rows:>9d} {variant:10s} {r.get('status')}")
                continue
            verdict = "promoted" if r.get("gate_passed") else "not promoted"
            print(
                f"  {rows:>9d} {variant:10s} {r.get('version', '?')} {verdict}, "
                f"{r.get('kind', '?')}, roc_auc {r.get('roc_auc', float('nan')):.4f}"
            )

    print("\nseconds per step")
    print("  kfp.local : task start to end as kfp.local logs it (a subprocess each); the")
    print("              candidates run side by side, so train-candidate is the block's span;")
    print("              '~': kfp.local 2.17 logs the end of only one parallel task, so that")
    print("              step is measured up to the next task's start")
    print("  in-process: the same step in the one process; train-candidate sums the candidates")
    for rows, by_variant in results.items():
        k, p = by_variant[KFP], by_variant[INPROCESS]
        if k.get("status") != "ok" and p.get("status") != "ok":
            continue
        ks, ps, n = k.get("steps", {}), p.get("steps", {}), k.get("step_tasks", {})
        print(f"\n  rows={rows}")
        print(f"  {'step':28s} {'kfp.local':>10s} {'in-process':>11s}")
        for name in STEPS:
            if name in ks or name in ps:
                a = f"{ks[name]:.1f}" if name in ks else "-"
                if name in k.get("approximate_steps", ()):
                    a = "~" + a
                b = f"{ps[name]:.1f}" if name in ps else "-"
                # kfp.local may drop a parallel task's start line: count candidates from args.
                count = args.candidates if name == "train-candidate" else n.get(name, 1)
                label = f"{name} (x{count})" if count > 1 else name
                print(f"  {label:28s} {a:>10s} {b:>11s}")
        if k.get("status") == "ok":
            between = k["work_seconds"] - sum(ks.values())
            print(f"  {'(kfp driver, between tasks)':28s} {between:>10.1f} {'-':>11s}")
        if p.get("status") == "ok":
            before = p["work_seconds"] - sum(ps.values())
            print(f"  {'(in-process, imports)':28s} {'-':>10s} {before:>11.1f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000],
        help="row counts to run",
    )
    parser.add_argument("--candidates", type=int, default=2, help="candidate configurations")
    parser.add_argument(
        "--kinds",
        default=DEFAULT_KINDS,
        help="model kinds to search (the pipeline's default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, splits and search")
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="time limit per measurement, seconds",
    )
    # Hidden: one measurement in this (fresh) process, started by the orchestrating run.
    hidden = argparse.SUPPRESS
    parser.add_argument("--measure", choices=("kfp", "inprocess"), help=hidden)
    parser.add_argument("--data-uri", help=hidden)
    parser.add_argument("--registry-uri", help=hidden)
    parser.add_argument("--model-name", help=hidden)
    parser.add_argument("--workdir", help=hidden)
    parser.add_argument("--result-file", help=hidden)
    parser.add_argument("--label-rows", default="?", help=hidden)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.measure:
        child_main(args)
        return
    results = benchmark(args)
    print_report(results, args)


if __name__ == "__main__":
    main()
