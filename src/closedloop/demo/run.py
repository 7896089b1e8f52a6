"""``closedloop demo``: the whole loop on one machine, from raw data to a recovered model.

1. start a real S3 server (SeaweedFS) and generate training data;
2. run the training pipeline under ``kfp.local``: v1 is gated (first model) and promoted;
3. start the retrain trigger (local backend: the retraining pipeline under ``kfp.local``),
   the drift sidecar, and the Seldon model server serving ``champion`` with its local
   request logger pointed at the sidecar;
4. replay traffic with ground-truth feedback: in-distribution, then a covariate shift,
   then covariate shift plus concept drift;
5. the sidecar joins each label to its prediction and tests each window's quality
   against v1's holdout; the covariate shift alone is an alert, not a run; when quality
   drops, the trigger starts one retraining run, the gate promotes v2 on the most
   recent labelled slice, the server swaps to it under traffic, the sidecar
   re-baselines on v2's detector and baseline, and quality recovers;
6. write an HTML report — on every outcome: when the loop did not recover it says why
   — and stop every process (also on Ctrl-C).

``tests/benchmarks/demo_pass_rate.py`` runs the demo over seeds and prints the pass rate.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from closedloop.demo.report import Event, write_report
from closedloop.demo.traffic import Exchange, Phase, TrafficDriver
from closedloop.errors import ClosedLoopError

BUCKET = "closedloop"
REGISTRY = f"s3://{BUCKET}/registry"
REFERENCE = f"s3://{BUCKET}/data/reference.parquet"
ARCHIVE = f"s3://{BUCKET}/feedback"
TRIGGER_STATE = f"s3://{BUCKET}/trigger"


class DemoError(ClosedLoopError):
    """The demo could not complete a step; the message says which."""


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and policy of the demo, chosen to finish in a few minutes on 2 cores."""

    model_name: str = "fraud"
    train_rows: int = 20_000
    n_candidates: int = 2
    seed: int = 0
    batch_rows: int = 25
    rows_per_second: float = 200.0
    in_distribution_rows: int = 6_000
    # Shorter than a window: the retraining window starts at the first drifted window,
    # and its rows should mostly carry the new concept.
    covariate_rows: int = 300
    drifted_max_rows: int = 200_000
    after_swap_rows: int = 3_000
    retrain_timeout_seconds: float = 600.0
    # Windows of 2000 rows, and three degraded in a row before firing: by then the
    # archive holds ~6000 rows of the new concept (fraud is ~2% of it), enough for a
    # time-ordered holdout on which the gate's bootstrap is not at the mercy of a dozen
    # positives. Windows close only when full (min_window_rows = window_size).
    window_size: int = 2_000
    window_max_age_seconds: float = 60.0
    p_value: float = 0.01
    effect_size_threshold: float = 0.1
    min_quality_drop: float = 0.05
    quality_p_value: float = 0.01
    k: int = 3
    n: int = 3
    min_recent_rows: int = 5_000
    max_reference_rows: int = 20_000
    # Short enough that a rejected run is retried on more data within the demo.
    cooldown_seconds: float = 120.0
    daily_cap: int = 3

    def policy(self) -> dict[str, object]:
        """The drift policy file's content (quality first: input drift alone is an alert)."""
        return {
            "window_size": self.window_size,
            "window_max_age_seconds": self.window_max_age_seconds,
            "min_window_rows": self.window_size,
            "quality_metric": "roc_auc",
            "min_quality_drop": self.min_quality_drop,
            "quality_p_value": self.quality_p_value,
            "min_labelled_rows": 200,
            "p_value": self.p_value,
            "effect_size_threshold": self.effect_size_threshold,
            "fire_on_input_drift": False,
            "label_delay_seconds": 600.0,
            "k": self.k,
            "n": self.n,
            "min_samples": self.k * self.window_size,
            "cooldown_seconds": self.cooldown_seconds,
            "daily_cap": self.daily_cap,
        }


@dataclass(frozen=True)
class DemoResult:
    """What the demo showed."""

    report: Path
    versions_served: tuple[str, ...]
    failed_requests: int
    retraining_runs: int
    promoted: str | None


Say = Callable[[str], None]


def follow_trigger_quietly(follow: Callable[[], None]) -> None:
    """Read the trigger's last audit records for the report; a failure here changes nothing."""
    try:
        follow()
    except DemoError:
        return


def run_demo(workdir: Path, config: DemoConfig | None = None, say: Say = print) -> DemoResult:
    """Run the closed loop end to end in *workdir*; return what it showed."""
    import os

    import pandas as pd

    from closedloop.data.generate import DEFAULT_TARGET, generate_transactions
    from closedloop.demo.monitor import WindowWatcher
    from closedloop.deploy.local import LocalSeldonServer, model_parameters
    from closedloop.local.pipelines import run_pipeline
    from closedloop.local.process import Service
    from closedloop.local.s3 import LocalS3, free_port
    from closedloop.registry import Registry
    from closedloop.serving.loading import read_version_schema
    from closedloop.trigger.state import TriggerStore

    config = config or DemoConfig()
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    events: list[Event] = []
    services: list[Service] = []
    sidecars: list[Service] = []
    rebaselines: list[threading.Thread] = []
    server: LocalSeldonServer | None = None
    watcher: WindowWatcher | None = None
    driver: TrafficDriver | None = None

    def mark(kind: str, label: str) -> None:
        events.append(Event(time.time(), label, kind))
        say(f"[{kind}] {label}")

    s3 = LocalS3(workdir / "s3", buckets=(BUCKET,))
    s3.start()
    try:
        settings = s3.settings()
        os.environ.update(settings.to_env())
        store = s3.store()
        registry = Registry(store, REGISTRY)
        mark("note", f"local S3 at {s3.endpoint}")

        frame = generate_transactions(config.train_rows, seed=config.seed)
        local_data = workdir / "reference.parquet"
        frame.to_parquet(local_data, index=False)
        store.publish(REFERENCE, path=str(local_data))
        mark("note", f"generated {len(frame)} training rows at {REFERENCE}")

        def progress(event: object) -> None:
            status = getattr(event, "status", "")
            if status in ("succeeded", "failed"):
                say(f"    {getattr(event, 'task', '')}: {status}")

        say("training v1 with kfp.local …")
        run_pipeline(
            "training",
            {
                "data_uri": REFERENCE,
                "model_name": config.model_name,
                "registry_uri": REGISTRY,
                "n_candidates": config.n_candidates,
                "seed": config.seed,
            },
            workdir / "runs",
            on_event=progress,
        )
        champion = registry.champion(config.model_name)
        if champion is None:
            raise DemoError("the training pipeline did not promote a first model; see the run log")
        mark("promotion", f"{champion.version} promoted ({champion.reason})")
        _, schema = read_version_schema(registry, config.model_name, champion.version)

        policy = workdir / "policy.json"
        policy.write_text(json.dumps(config.policy(), indent=2))
        trigger_port, trigger_ops, server_port = free_port(), free_port(), free_port()
        services.append(
            Service(
                "retrain trigger",
                [
                    "trigger",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(trigger_port),
                    "--metrics-host",
                    "127.0.0.1",
                    "--metrics-port",
                    str(trigger_ops),
                    "--policy",
                    str(policy),
                    "--registry-uri",
                    REGISTRY,
                    "--state-uri",
                    TRIGGER_STATE,
                    "--backend",
                    "local",
                    "--pipeline",
                    "retraining",
                    "--local-root",
                    str(workdir / "trigger-runs"),
                    "--pipeline-arg",
                    f"reference_uri={REFERENCE}",
                    "--pipeline-arg",
                    f"max_reference_rows={config.max_reference_rows}",
                    "--pipeline-arg",
                    f"min_recent_rows={config.min_recent_rows}",
                    "--pipeline-arg",
                    f"n_candidates={config.n_candidates}",
                    "--pipeline-arg",
                    f"seed={config.seed}",
                    # Local model servers follow the champion pointer; the deploy step
                    # then waits until the model server answers with v2.
                    "--pipeline-arg",
                    "deploy_backend=local",
                    "--pipeline-arg",
                    f"deploy_endpoint=http://127.0.0.1:{server_port}",
                ],
                workdir / "logs" / "trigger.log",
                f"http://127.0.0.1:{trigger_ops}/healthz",
            ).start()
        )
        mark("note", f"retrain trigger on 127.0.0.1:{trigger_port} (local kfp backend)")

        sidecar_port, sidecar_ops = free_port(), free_port()

        def sidecar(version: str) -> Service:
            return Service(
                f"drift sidecar ({version})",
                [
                    "sidecar",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(sidecar_port),
                    "--metrics-host",
                    "127.0.0.1",
                    "--metrics-port",
                    str(sidecar_ops),
                    "--registry-uri",
                    REGISTRY,
                    "--model-name",
                    config.model_name,
                    "--model-version",
                    version,
                    "--policy",
                    str(policy),
                    "--trigger-url",
                    f"http://127.0.0.1:{trigger_port}/",
                    "--state-dir",
                    str(workdir / "sidecar-state"),
                ],
                workdir / "logs" / "sidecar.log",
                f"http://127.0.0.1:{sidecar_ops}/healthz",
            )

        sidecars = [sidecar(champion.version).start()]
        watcher = WindowWatcher(f"http://127.0.0.1:{sidecar_ops}/metrics").start()
        mark("note", f"drift sidecar on 127.0.0.1:{sidecar_port}")

        server = LocalSeldonServer(
            model_parameters(
                REGISTRY,
                config.model_name,
                "champion",
                poll_seconds=2.0,
                request_logger_url=f"http://127.0.0.1:{sidecar_port}/",
            ),
            s3=settings,
            http_port=server_port,
            workers=1,
            state_dir=workdir / "model-server",
        ).start()
        mark("note", f"model server on {server.url} serving champion")

        driver = TrafficDriver(
            server.url,
            schema.feature_names,
            DEFAULT_TARGET,
            config.batch_rows,
            config.rows_per_second,
            config.seed + 100,
        )
        served: list[str] = [champion.version]

        def rebaseline(version: str) -> None:
            # In a cluster the deploy step rolls the pods, sidecar included; here the
            # sidecar is restarted on the new version so it loads that version's detector.
            sidecars[-1].stop()
            sidecars.append(sidecar(version).start())
            mark("note", f"drift sidecar re-baselined on {version}'s detector")

        def on_batch(exchange: Exchange) -> None:
            if exchange.ok and exchange.version and exchange.version != served[-1]:
                served.append(exchange.version)
                assert driver is not None
                mark(
                    "swap",
                    f"model server answers with {exchange.version}; failed requests so far: {driver.log.failed}",
                )
                thread = threading.Thread(target=rebaseline, args=(exchange.version,), daemon=True)
                rebaselines.append(thread)
                thread.start()

        phases = [
            Phase("in-distribution", config.in_distribution_rows),
            Phase("covariate shift", config.covariate_rows, covariate_shift=1.0),
            Phase(
                "covariate shift + concept drift",
                config.drifted_max_rows,
                covariate_shift=1.0,
                concept_drift=1.0,
            ),
        ]
        for phase in phases[:2]:
            mark("phase", f"{phase.name}: {phase.rows} rows")
            driver.run_phase(phase, on_batch)
        drifted = phases[2]
        mark(
            "phase",
            f"{drifted.name}: until the retrained model serves, then {config.after_swap_rows} rows",
        )
        trigger_state = TriggerStore(store, TRIGGER_STATE)
        seen_audit: set[str] = set()
        rejections: list[str] = []

        def follow_trigger() -> None:
            for record in trigger_state.audit_records(config.model_name):
                key = json.dumps(record, sort_keys=True, default=str)
                if key in seen_audit:
                    continue
                seen_audit.add(key)
                kind, outcome = str(record.get("kind", "")), str(record.get("outcome", ""))
                detail = str(record.get("detail") or record.get("reason") or "")
                if kind == "decision" and outcome == "fired":
                    events.append(Event(float(record["at"]), f"trigger fired: {detail}", "alarm"))
                    say(f"[alarm] trigger fired: {detail}")
                elif kind == "run":
                    events.append(
                        Event(
                            float(record["at"]),
                            f"retraining run {outcome}: {record.get('run_name', '')}",
                            "run",
                        )
                    )
                    say(f"[run] retraining run {outcome}: {record.get('run_name', '')}")
                    if outcome == "succeeded":
                        pointer = registry.champion(config.model_name)
                        if pointer is None or pointer.version == champion.version:
                            # The trigger re-arms after its cooldown while quality stays
                            # degraded, and the next run reads more data.
                            latest = registry.versions(config.model_name)[-1]
                            verdict = registry.manifest(
                                config.model_name, latest
                            ).lineage.parameters.get("gate_reason")
                            rejections.append(f"{latest}: {verdict}")
                            mark("note", f"the gate rejected {latest}: {verdict}")
                    if outcome == "failed":
                        raise DemoError(
                            f"the retraining run {record.get('run_name', '')} failed: see "
                            f"{workdir / 'logs' / 'trigger.log'} and {workdir / 'trigger-runs'}"
                        )

        deadline = time.monotonic() + config.retrain_timeout_seconds
        last_poll = 0.0

        def swapped() -> bool:
            nonlocal last_poll
            if time.monotonic() - last_poll > 2.0:
                last_poll = time.monotonic()
                follow_trigger()
            if time.monotonic() > deadline:
                why = (
                    f"the gate rejected every retrained model ({'; '.join(rejections)})"
                    if rejections
                    else "no retraining run finished"
                )
                raise DemoError(
                    f"no retrained model was served within {config.retrain_timeout_seconds:.0f}s: "
                    f"{why}; see {workdir / 'logs'} and {workdir / 'trigger-runs'}"
                )
            return len(served) > 1

        def report_of(outcome: str) -> Path:
            assert driver is not None and watcher is not None
            return write_report(
                workdir / "report.html",
                driver.log,
                list(watcher.windows),
                events,
                config.p_value,
                title=f"closedloop demo: {config.model_name} (seed {config.seed})",
                outcome=outcome,
            )

        try:
            driver.run_until(
                drifted,
                swapped,
                max_rows=config.drifted_max_rows,
                on_batch=on_batch,
                max_seconds=config.retrain_timeout_seconds,
            )
        except DemoError as exc:
            follow_trigger_quietly(follow_trigger)
            path = report_of(
                f"the loop did not recover: {exc} Traffic: {driver.log.rows} rows in "
                f"{len(driver.log.exchanges)} requests; versions registered: "
                f"{', '.join(registry.versions(config.model_name))}."
            )
            raise DemoError(f"{exc} (report: {path})") from exc
        pointer = registry.champion(config.model_name)
        if pointer is not None and pointer.version != champion.version:
            mark("promotion", f"{pointer.version} promoted ({pointer.reason})")
        driver.run_phase(
            Phase(
                "after retraining", config.after_swap_rows, covariate_shift=1.0, concept_drift=1.0
            ),
            on_batch,
        )
        follow_trigger()
        runs = sum(1 for e in events if e.kind == "run" and "submitted" in e.label)
        report = report_of(
            f"recovered: {champion.version} → {pointer.version if pointer else '?'} "
            f"after {runs} retraining run(s)"
            + (f"; rejected first: {'; '.join(rejections)}" if rejections else "")
        )
        (workdir / "config.json").write_text(json.dumps(asdict(config), indent=2))
        pd.DataFrame([asdict(e) for e in events]).to_csv(workdir / "events.csv", index=False)
        return DemoResult(
            report,
            tuple(driver.log.versions()),
            driver.log.failed,
            runs,
            pointer.version if pointer else None,
        )
    finally:
        if driver is not None:
            driver.close()
        if watcher is not None:
            watcher.stop()
        if server is not None:
            server.stop()
        for thread in rebaselines:
            thread.join(timeout=120)
        for service in [*sidecars, *reversed(services)]:
            service.stop()
        s3.stop()
