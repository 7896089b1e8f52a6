"""End to end on a real cluster: apply the dev overlay, serve, drift, see a retraining run.

Skipped unless ``KUBECONFIG`` points at a cluster with the Seldon Core v1 CRD installed,
the closedloop images pushed where the overlay points, a champion registered in the
overlay's S3 store, and ``KF_PIPELINES_ENDPOINT`` set (see docs/kubernetes.md). Nothing
here is faked: it drives kubectl and the cluster's own endpoints through port-forwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
NAMESPACE = "closedloop"


def _cluster_ready() -> str | None:
    if not os.environ.get("KUBECONFIG"):
        return "KUBECONFIG is not set"
    if not KUBECTL:
        return "kubectl not found"
    crd = subprocess.run(
        [KUBECTL, "get", "crd", "seldondeployments.machinelearning.seldon.io"],
        capture_output=True,
        timeout=60,
    )
    if crd.returncode != 0:
        return "the Seldon Core CRD is not installed"
    if not os.environ.get("KF_PIPELINES_ENDPOINT"):
        return "KF_PIPELINES_ENDPOINT is not set"
    return None


pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(bool(_cluster_ready()), reason=_cluster_ready() or ""),
]


def kubectl(*args: str, timeout: float = 300) -> str:
    return subprocess.run(
        [KUBECTL, *args], check=True, capture_output=True, text=True, timeout=timeout
    ).stdout


@pytest.fixture(scope="module")
def applied() -> Iterator[None]:
    kubectl("apply", "-k", str(ROOT / "manifests" / "overlays" / "dev"))
    kubectl("-n", NAMESPACE, "wait", "--for=jsonpath={.status.state}=Available",
            "sdep/closedloop", "--timeout=600s", timeout=660)  # fmt: skip
    yield


def port_forward(target: str, port: int) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
    proc = subprocess.Popen([KUBECTL, "-n", NAMESPACE, "port-forward", target, f"{local}:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(3)
    return proc, local


def test_served_model_answers_and_drift_starts_a_retraining_run(applied: None) -> None:
    import requests

    from closedloop.data.generate import generate_transactions

    proc, port = port_forward("svc/closedloop-default", 8000)
    try:
        names = None
        url = f"http://127.0.0.1:{port}/api/v1.0/predictions"
        for phase, kwargs in (
            ("in-distribution", {}),
            ("drifted", {"covariate_shift": 1.0, "concept_drift": 1.0}),
        ):
            frame = generate_transactions(4000, seed=7, **kwargs)
            names = [c for c in frame.columns if c != "is_fraud"]
            for start in range(0, len(frame), 50):  # bounded: 80 requests a phase
                batch = frame.iloc[start : start + 50]
                rows = json.loads(batch[names].to_json(orient="values", date_format="iso"))
                response = requests.post(
                    url, json={"data": {"names": names, "ndarray": rows}}, timeout=30
                )
                assert response.status_code == 200, (phase, response.text)
                tags = response.json()["meta"]["tags"]
                assert tags["model_version"].startswith("v")
                truth = [[int(v)] for v in batch["is_fraud"]]
                requests.post(f"http://127.0.0.1:{port}/api/v1.0/feedback", timeout=30,
                              json={"request": {"data": {"names": names, "ndarray": rows}},
                                    "response": response.json(), "truth": {"data": {"ndarray": truth}}})  # fmt: skip
    finally:
        proc.terminate()
    import kfp

    client = kfp.Client(host=os.environ["KF_PIPELINES_ENDPOINT"])
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        runs = client.list_runs(page_size=50, sort_by="created_at desc").runs or []
        if any(r.display_name.startswith("retrain-") for r in runs):
            return
        time.sleep(15)
    pytest.fail("no retraining run started within 15 minutes of drifted traffic")
