"""End to end on a real cluster: drifted traffic in, a retrained and served model out.

Skipped unless a cluster is configured: ``KUBECONFIG`` names a cluster with the Seldon
Core v1 CRD, where the dev overlay (``manifests/overlays/dev``) is applied with a
champion registered and served, and ``KF_PIPELINES_ENDPOINT`` reaches the Kubeflow
Pipelines API. ``scripts/e2e-kind.sh`` builds all of that on a local kind cluster and
then runs this file (see docs/e2e-kind.md).

Nothing is faked. kubectl port-forwards to the predictor service the Seldon operator
creates (``<sdep>-<predictor>``, here ``closedloop-main``, on the executor's REST port
8000) and to the dev S3 store; ``kfp.Client`` reads the runs; closedloop's registry API
reads the champion pointer. The test asserts the whole loop:

1. before: the champion pointer, the SeldonDeployment's ``closedloop.io/model-version``
   label and annotation, and the served version (``meta.tags.model_version``);
2. in-distribution, then drifted traffic (covariate shift plus concept drift, which
   costs the champion quality), each batch followed by its labels as feedback that names
   the prediction by its ``Seldon-Puid``, so the quality-first policy sees the loss;
3. the retraining run this traffic caused: a run of the trigger's experiment named
   ``retrain-<model>-…`` that did not exist when the test started;
4. that run reaches SUCCEEDED;
5. the champion pointer moved to a new version whose parent is the old champion;
6. the SeldonDeployment was rolled out to it: label, annotation and graph parameter
   name it, the operator's Deployments are rolled out, ``status.state`` is Available;
7. predictions through ``svc/closedloop-main`` answer with the new version.

Every wait is bounded. The budgets (seconds) can be raised for slow machines with
``CLOSEDLOOP_E2E_TRIGGER_TIMEOUT`` (drifted traffic until the run appears),
``CLOSEDLOOP_E2E_RUN_TIMEOUT`` (the run), ``CLOSEDLOOP_E2E_ROLLOUT_TIMEOUT`` and
``CLOSEDLOOP_E2E_SERVE_TIMEOUT``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
NAMESPACE = os.environ.get("CLOSEDLOOP_E2E_NAMESPACE", "closedloop")
SDEP = os.environ.get("CLOSEDLOOP_E2E_SDEP", "closedloop")
SDEP_RESOURCE = f"seldondeployments.machinelearning.seldon.io/{SDEP}"
TRIGGER_DEPLOYMENT = "closedloop-trigger"
S3_SERVICE = "closedloop-s3"
S3_PORT = 8333
DEFAULT_EXPERIMENT = "closedloop-retraining"

BATCH_ROWS = 50
IN_DISTRIBUTION_ROWS = 2_000
MAX_DRIFTED_ROWS = 100_000
CHECK_RUNS_EVERY_BATCHES = 20
CLOCK_SKEW_SECONDS = 120.0
"""Tolerance between this machine's clock and the KFP API server's ``created_at``."""
TERMINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})


def _budget(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


TRIGGER_TIMEOUT = _budget("CLOSEDLOOP_E2E_TRIGGER_TIMEOUT", 1800)
RUN_TIMEOUT = _budget("CLOSEDLOOP_E2E_RUN_TIMEOUT", 3600)
ROLLOUT_TIMEOUT = _budget("CLOSEDLOOP_E2E_ROLLOUT_TIMEOUT", 900)
SERVE_TIMEOUT = _budget("CLOSEDLOOP_E2E_SERVE_TIMEOUT", 300)
TOTAL_TIMEOUT = int(TRIGGER_TIMEOUT + RUN_TIMEOUT + 2 * ROLLOUT_TIMEOUT + SERVE_TIMEOUT + 900)


def _cluster_ready() -> str | None:
    """Return why the cluster test cannot run here, or None when it can."""
    if not os.environ.get("KUBECONFIG"):
        return "KUBECONFIG is not set (scripts/e2e-kind.sh sets up a kind cluster and runs this)"
    if not os.environ.get("KF_PIPELINES_ENDPOINT"):
        return "KF_PIPELINES_ENDPOINT is not set"
    if not KUBECTL:
        return "kubectl not found"
    try:
        crd = subprocess.run(
            [
                KUBECTL,
                "get",
                "crd",
                "seldondeployments.machinelearning.seldon.io",
                "--request-timeout=20s",
            ],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the cluster did not answer: {exc}"
    if crd.returncode != 0:
        return "the Seldon Core CRD is not installed (or the cluster is unreachable)"
    return None


NOT_READY = _cluster_ready()

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(NOT_READY is not None, reason=NOT_READY or ""),
    pytest.mark.timeout(TOTAL_TIMEOUT),
]


# -- kubectl ---------------------------------------------------------------------------
def kubectl(*args: str, timeout: float = 120) -> str:
    """Run kubectl; fail the test with its stderr when it fails."""
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def kubectl_json(*args: str) -> dict[str, Any]:
    """Run kubectl with ``-o json`` and parse its output."""
    return json.loads(kubectl(*args, "-o", "json"))


def read_sdep() -> dict[str, Any]:
    """The live SeldonDeployment."""
    return kubectl_json("-n", NAMESPACE, "get", SDEP_RESOURCE)


@contextlib.contextmanager
def port_forward(target: str, remote_port: int, timeout: float = 60) -> Iterator[str]:
    """Forward a free local port to ``target`` (e.g. ``svc/closedloop-main``); yield its URL."""
    assert KUBECTL is not None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [KUBECTL, "-n", NAMESPACE, "port-forward", target, f"{local}:{remote_port}"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"kubectl port-forward {target} exited: {log.read().decode()}")
                try:
                    socket.create_connection(("127.0.0.1", local), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"port-forward to {target} not listening after {timeout:.0f}s")
                    time.sleep(0.5)
            yield f"http://127.0.0.1:{local}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def wait_for(
    what: str, timeout: float, probe: Callable[[], tuple[bool, str]], every: float = 5
) -> str:
    """Call ``probe`` until it returns ``(True, _)``; fail with its last detail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, detail = probe()
        if done:
            return detail
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s ({detail})")
        time.sleep(every)


# -- what the cluster is set up with ------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """Names read from the live objects, so the test follows the manifests."""

    model_name: str
    registry_uri: str
    experiment: str
    run_prefix: str
    service: str


def read_setup(sdep: dict[str, Any]) -> Setup:
    """Model, registry, the trigger's experiment and the predictor service, as deployed."""
    from closedloop.deploy.kubernetes import predictor_service
    from closedloop.deploy.seldon import ANNOTATION_REGISTRY_URI, LABEL_MODEL_NAME

    annotations = sdep["metadata"].get("annotations") or {}
    model_name = annotations[LABEL_MODEL_NAME]
    trigger = kubectl_json("-n", NAMESPACE, "get", "deployment", TRIGGER_DEPLOYMENT)
    args = trigger["spec"]["template"]["spec"]["containers"][0].get("args") or []
    experiment = (
        args[args.index("--experiment") + 1] if "--experiment" in args else DEFAULT_EXPERIMENT
    )
    return Setup(
        model_name=model_name,
        registry_uri=annotations[ANNOTATION_REGISTRY_URI],
        experiment=experiment,
        # closedloop.trigger.service: retrain-<model>-<number>-<alarm id>
        run_prefix=f"retrain-{model_name}-",
        service=predictor_service(sdep),
    )


@contextlib.contextmanager
def registry(registry_uri: str) -> Iterator[Any]:
    """closedloop's registry on the dev S3 store, through a port-forward, with its Secret."""
    from closedloop.registry import Registry
    from closedloop.storage import S3Settings, Store
    from closedloop.storage.settings import (
        S3_SECRET,
        S3_SECRET_KEYS,
        S3_SETTINGS_CONFIG_MAP,
    )

    secret = kubectl_json("-n", NAMESPACE, "get", "secret", S3_SECRET)["data"]
    keys = {env: base64.b64decode(secret[key]).decode() for key, env in S3_SECRET_KEYS.items()}
    settings = kubectl_json("-n", NAMESPACE, "get", "configmap", S3_SETTINGS_CONFIG_MAP)
    region = (settings.get("data") or {}).get("region") or "us-east-1"
    with port_forward(f"svc/{S3_SERVICE}", S3_PORT) as endpoint:
        store = Store(
            S3Settings(
                endpoint_url=endpoint,
                access_key=keys["AWS_ACCESS_KEY_ID"],
                secret_key=keys["AWS_SECRET_ACCESS_KEY"],
                region=region,
                max_attempts=3,
            )
        )
        yield Registry(store, registry_uri)


def rollout_state(version: str | None) -> tuple[bool, str]:
    """Whether the SeldonDeployment serves ``version`` (any, if None) and is rolled out."""
    from closedloop.deploy.rollout import (
        SELDON_ID_LABEL,
        main_version,
        rollout_progress,
        served_versions,
    )

    sdep = read_sdep()
    served = main_version(sdep)
    state = (sdep.get("status") or {}).get("state")
    deployments = kubectl_json(
        "-n", NAMESPACE, "get", "deployments", "-l", f"{SELDON_ID_LABEL}={SDEP}"
    )["items"]
    progress = rollout_progress(deployments, served_versions(sdep))
    if progress.state == "failed":
        pytest.fail(f"SeldonDeployment {SDEP} failed to roll out {served}: {progress.detail}")
    detail = f"serves {served}, state {state}, Deployments: {progress.detail}"
    done = (
        (version is None or served == version) and progress.state == "done" and state == "Available"
    )
    return done, detail


def version_marks(sdep: dict[str, Any]) -> tuple[str | None, str | None, str]:
    """The model-version label, annotation and served graph parameter of the SeldonDeployment."""
    from closedloop.deploy.rollout import main_version
    from closedloop.deploy.seldon import LABEL_MODEL_VERSION

    metadata = sdep["metadata"]
    return (
        (metadata.get("labels") or {}).get(LABEL_MODEL_VERSION),
        (metadata.get("annotations") or {}).get(LABEL_MODEL_VERSION),
        main_version(sdep),
    )


# -- traffic ------------------------------------------------------------------------------
def json_rows(frame: Any) -> list[list[Any]]:
    """Rows as JSON values (timestamps in ISO format, numpy scalars as Python ones)."""
    import numpy as np
    import pandas as pd

    def cell(value: Any) -> Any:
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        if isinstance(value, np.generic):
            return value.item()
        return value

    return [[cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]


def exchange(session: Any, url: str, names: list[str], target: str, batch: Any) -> str:
    """Predict one batch, send its labels as feedback; return the version that answered."""
    from closedloop.serving.request_logger import PUID_HEADER

    request = {"data": {"names": names, "ndarray": json_rows(batch[names])}}
    response = session.post(f"{url}/api/v1.0/predictions", json=request, timeout=30)
    assert response.status_code == 200, f"prediction: {response.status_code} {response.text}"
    body = response.json()
    version = str(body["meta"]["tags"]["model_version"])
    # The executor returns the prediction's puid in a header; the sidecar joins the
    # feedback to the logged response by the ``meta.puid`` the feedback echoes.
    puid = body["meta"].get("puid") or response.headers.get(PUID_HEADER)
    assert puid, f"no {PUID_HEADER} on the response: feedback could not name its prediction"
    body["meta"]["puid"] = puid
    truth = [[int(v)] for v in batch[target]]
    feedback = session.post(
        f"{url}/api/v1.0/feedback",
        json={"request": request, "response": body, "truth": {"data": {"ndarray": truth}}},
        timeout=30,
    )
    assert feedback.status_code == 200, f"feedback: {feedback.status_code} {feedback.text}"
    return version


class Traffic:
    """Exchanges through a port-forward to the predictor service, reopened when it drops.

    ``kubectl port-forward`` can lose its stream on a long run; a connection error
    reopens it (at most ``MAX_REOPENS`` times) and repeats the exchange, which at worst
    predicts one batch twice.
    """

    MAX_REOPENS = 5

    def __init__(self, service: str) -> None:
        self.service = service
        self.reopens = 0
        self._stack = contextlib.ExitStack()
        self._open()

    def _open(self) -> None:
        import requests

        self._stack = contextlib.ExitStack()
        self.url = self._stack.enter_context(port_forward(f"svc/{self.service}", 8000))
        self.session = self._stack.enter_context(requests.Session())

    def exchange(self, names: list[str], target: str, batch: Any) -> str:
        """:func:`exchange` one batch, reopening the port-forward on a connection error."""
        import requests

        while True:
            try:
                return exchange(self.session, self.url, names, target, batch)
            except requests.ConnectionError:
                if self.reopens >= self.MAX_REOPENS:
                    raise
                self.reopens += 1
                self._stack.close()
                self._open()

    def close(self) -> None:
        """Stop the port-forward."""
        self._stack.close()


def batches(rows: int, seed: int, drifted: bool) -> Iterator[Any]:
    """Generated transactions in batches of ``BATCH_ROWS``, fresh seeds every 5000 rows."""
    from closedloop.data.generate import generate_transactions

    knobs = {"covariate_shift": 1.0, "concept_drift": 1.0} if drifted else {}
    sent = 0
    while sent < rows:
        frame = generate_transactions(min(5_000, rows - sent), seed=seed, **knobs)
        seed += 1
        for start in range(0, len(frame), BATCH_ROWS):
            yield frame.iloc[start : start + BATCH_ROWS]
        sent += len(frame)


# -- Kubeflow Pipelines ------------------------------------------------------------------
def run_created_at(run: Any) -> float:
    """A run's creation time as Unix seconds (0 when unknown)."""
    created = getattr(run, "created_at", None)
    if created is None:
        return 0.0
    if created.tzinfo is None:  # the API speaks UTC
        created = created.replace(tzinfo=UTC)
    return created.timestamp()


def experiment_runs(client: Any, experiment: str) -> list[Any]:
    """The newest runs of the experiment, newest first ([] while it does not exist)."""
    try:
        experiment_id = client.get_experiment(experiment_name=experiment).experiment_id
    except ValueError:  # kfp: no experiment of that name yet (the trigger creates it)
        return []
    response = client.list_runs(
        experiment_id=experiment_id, page_size=100, sort_by="created_at desc"
    )
    return list(response.runs or [])


# -- the test ----------------------------------------------------------------------------
def test_drift_retrains_promotes_and_rolls_out_a_new_version() -> None:
    """Drifted, labelled traffic leads to a new champion that svc/closedloop-main serves."""
    import kfp
    import requests

    from closedloop.ml.schema import InputSchema
    from closedloop.registry.layout import SCHEMA_FILE

    started = time.time()
    client = kfp.Client(host=os.environ["KF_PIPELINES_ENDPOINT"])

    # 1. Before: what serves, what the registry calls champion, which runs exist.
    wait_for(f"SeldonDeployment {SDEP} rolled out", ROLLOUT_TIMEOUT, lambda: rollout_state(None))
    sdep = read_sdep()
    setup = read_setup(sdep)
    assert setup.service == f"{SDEP}-main", setup.service
    ports = kubectl_json("-n", NAMESPACE, "get", "service", setup.service)["spec"]["ports"]
    assert 8000 in {p["port"] for p in ports}, f"svc/{setup.service} has no port 8000: {ports}"
    label_before, annotation_before, served_before = version_marks(sdep)
    with registry(setup.registry_uri) as reg:
        champion_before = reg.champion(setup.model_name)
        assert champion_before is not None, (
            f"no champion of {setup.model_name} in {setup.registry_uri}: register one first "
            "(scripts/e2e-kind.sh does, through the training pipeline)"
        )
        schema = InputSchema.from_json(
            reg.read_file(setup.model_name, champion_before.version, SCHEMA_FILE).decode()
        )
    assert served_before in (champion_before.version, "champion"), (
        f"{SDEP} serves {served_before}, the registry's champion is {champion_before.version}"
    )
    names, target = list(schema.feature_names), schema.target
    known_runs = {r.run_id for r in experiment_runs(client, setup.experiment)}

    def new_retraining_runs() -> list[Any]:
        return sorted(
            (
                r
                for r in experiment_runs(client, setup.experiment)
                if r.run_id not in known_runs
                and (r.display_name or "").startswith(setup.run_prefix)
                and run_created_at(r) >= started - CLOCK_SKEW_SECONDS
            ),
            key=run_created_at,
        )

    # 2. Traffic with feedback: in-distribution, then drifted until the trigger fires.
    found: list[Any] = []
    drifted_rows = 0
    traffic = Traffic(setup.service)
    try:
        for batch in batches(IN_DISTRIBUTION_ROWS, seed=1_000, drifted=False):
            version = traffic.exchange(names, target, batch)
            assert version == champion_before.version, (
                f"in-distribution traffic answered by {version}, "
                f"the champion is {champion_before.version}"
            )
        deadline = time.monotonic() + TRIGGER_TIMEOUT
        for i, batch in enumerate(batches(MAX_DRIFTED_ROWS, seed=2_000, drifted=True)):
            traffic.exchange(names, target, batch)
            drifted_rows += len(batch)
            if (i + 1) % CHECK_RUNS_EVERY_BATCHES == 0:
                found = new_retraining_runs()
                if found or time.monotonic() > deadline:
                    break
    finally:
        traffic.close()
    # 3. The run this traffic caused.
    found = found or new_retraining_runs()
    if not found:
        pytest.fail(
            f"no run named {setup.run_prefix}* in experiment {setup.experiment} after "
            f"{drifted_rows} drifted, labelled rows: check the sidecar's metrics (:9102) and "
            f"the trigger's audit records (cooldown, daily cap, a run already in flight)"
        )
    run = found[0]
    print(f"{drifted_rows} drifted rows started run {run.display_name} ({run.run_id})")

    # 4. It succeeds.
    def run_finished() -> tuple[bool, str]:
        state = str(client.get_run(run.run_id).state or "")
        return state in TERMINAL_STATES, state

    state = wait_for(f"run {run.display_name}", RUN_TIMEOUT, run_finished, every=15)
    details = client.get_run(run.run_id)
    assert state == "SUCCEEDED", (
        f"run {run.display_name} ({run.run_id}) ended {state}: {details.error}"
    )

    # 5. The champion pointer moved, to a version trained against the old champion.
    with registry(setup.registry_uri) as reg:
        champion_after = reg.champion(setup.model_name)
        assert champion_after is not None
        assert champion_after.version != champion_before.version, (
            f"run {run.display_name} succeeded but the champion is still "
            f"{champion_before.version}: the gate rejected the challenger (its decision is "
            f"in the run's gate-model step) or the rollout was rolled back"
        )
        assert champion_after.updated_at >= started - CLOCK_SKEW_SECONDS
        lineage = reg.manifest(setup.model_name, champion_after.version).lineage
    new_version = champion_after.version
    print(f"champion {champion_before.version} -> {new_version}")
    assert champion_after.previous == champion_before.version
    assert lineage.parent_version == champion_before.version, lineage

    # 6. The SeldonDeployment was rolled out to it.
    wait_for(
        f"SeldonDeployment {SDEP} on {new_version}",
        ROLLOUT_TIMEOUT,
        lambda: rollout_state(new_version),
    )
    label_after, annotation_after, served_after = version_marks(read_sdep())
    assert served_after == new_version
    assert label_after == new_version and label_after != label_before, (label_before, label_after)
    assert annotation_after == new_version and annotation_after != annotation_before, (
        annotation_before,
        annotation_after,
    )

    # 7. Predictions through the predictor service carry the new version. A fresh
    # port-forward each round: one is bound to the pod it picked when it started.
    serving = next(batches(BATCH_ROWS, seed=3_000, drifted=True))
    request = {"data": {"names": names, "ndarray": json_rows(serving[names])}}

    def answers_with_new_version() -> tuple[bool, str]:
        seen: list[str] = []
        with port_forward(f"svc/{setup.service}", 8000) as url, requests.Session() as session:
            for _ in range(5):
                response = session.post(f"{url}/api/v1.0/predictions", json=request, timeout=30)
                if response.status_code != 200:
                    return False, f"HTTP {response.status_code}: {response.text[:200]}"
                seen.append(str(response.json()["meta"]["tags"].get("model_version")))
        return all(v == new_version for v in seen), f"answered by {seen}"

    wait_for(
        f"svc/{setup.service} answering with {new_version}",
        SERVE_TIMEOUT,
        answers_with_new_version,
    )
