"""`closedloop submit` against a stand-in Kubeflow Pipelines API.

No KFP API server can run on this machine (it needs Kubernetes, MySQL and object
storage), so the success and 401 paths talk to a small HTTP server that answers the
four v2beta1 endpoints kfp.Client uses. That stand-in is a fake, and only it is: the
compiler, the client and the CLI are real. Against a real cluster, see tests/e2e.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_kfp_api import FakeKfp, fake_kfp

CLI = str(Path(sys.executable).with_name("closedloop"))


@pytest.fixture()
def kfp_api() -> Iterator[str]:
    with fake_kfp() as host:
        yield host


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KF_PIPELINES_ENDPOINT"}
    return subprocess.run(
        [CLI, "submit", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_submit_compiles_and_creates_a_run(kfp_api: str) -> None:
    result = run(
        "training",
        "--host",
        kfp_api,
        "--param",
        "data_uri=s3://data/train.csv",
        "--param",
        "n_candidates=3",
    )
    assert result.returncode == 0, result.stderr
    assert f"{kfp_api}/#/runs/details/run-42" in result.stdout
    (body,) = FakeKfp.runs
    assert body["experiment_id"] == "exp-1"
    # With platform settings (the S3 Secret), KFP nests the spec beside platform_spec.
    spec = body["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "closedloop-training"
    assert "closedloop-s3-credentials" in json.dumps(spec["platform_spec"])
    assert body["runtime_config"]["parameters"] == {
        "data_uri": "s3://data/train.csv",
        "n_candidates": 3,
    }


def test_cron_creates_a_recurring_retraining_run(kfp_api: str) -> None:
    result = run(
        "retraining", "--host", kfp_api, "--cron", "0 0 3 * * *",
        "--param", "reference_uri=s3://closedloop/data/reference.parquet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "recurring run (0 0 3 * * *) job-7" in result.stdout
    (body,) = FakeKfp.runs
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert body["max_concurrency"] == "1" or body["max_concurrency"] == 1
    assert (
        body["runtime_config"]["parameters"]["reference_uri"]
        == "s3://closedloop/data/reference.parquet"
    )


def test_auth_failure_is_one_line(kfp_api: str) -> None:
    FakeKfp.status = 401
    result = run("training", "--host", kfp_api, "--param", "data_uri=s3://d/x")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and "--token" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("training",), "no KFP host"),
        (("nope", "--host", "http://127.0.0.1:9"), "unknown pipeline 'nope'"),
        (
            ("training", "--host", "http://127.0.0.1:9", "--param", "n_candidates=many"),
            "expects integer",
        ),
        (
            ("training", "--host", "http://127.0.0.1:9", "--param", "bogus=1"),
            "has no parameter 'bogus'",
        ),
        (
            ("training", "--host", "http://127.0.0.1:9", "--param", "data_uri=s3://d/x"),
            "cannot reach Kubeflow Pipelines",
        ),
        (
            ("training", "--host", "http://127.0.0.1:9", "--image-pull-secret", "Reg_Cred"),
            "is not a Secret name",
        ),
        (
            ("training", "--host", "http://127.0.0.1:9", "--component-image", "a b:1"),
            "is not an image reference",
        ),
    ],
)
def test_bad_invocations_are_one_line_errors(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def _tasks(spec: dict) -> list[dict]:
    root = spec["root"]["dag"]["tasks"]
    nested = [
        t
        for c in spec.get("components", {}).values()
        for t in c.get("dag", {}).get("tasks", {}).values()
    ]
    return [*root.values(), *nested]


def test_the_run_follows_the_deployments_image_and_pull_secrets(kfp_api: str) -> None:
    image = "registry.example/closedloop-component:3f2a9c1"
    result = run(
        "retraining", "--host", kfp_api, "--param", "reference_uri=s3://c/ref.parquet",
        "--component-image", image, "--image-pull-secret", "regcred",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (body,) = FakeKfp.runs
    spec = body["pipeline_spec"]
    executors = spec["pipeline_spec"]["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {image}
    platform = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(platform) == set(executors)
    assert all(c["imagePullSecret"][0]["secretName"] == "regcred" for c in platform.values())


def test_no_cache_runs_every_step_afresh_and_cache_keeps_the_compiled_settings(
    kfp_api: str,
) -> None:
    assert (
        run("training", "--host", kfp_api, "--param", "data_uri=s3://d/x", "--no-cache").returncode
        == 0
    )
    assert (
        run("training", "--host", kfp_api, "--param", "data_uri=s3://d/x", "--cache").returncode
        == 0
    )
    fresh, compiled = (r["pipeline_spec"]["pipeline_spec"] for r in FakeKfp.runs)
    assert all(not t.get("cachingOptions", {}).get("enableCache") for t in _tasks(fresh))
    # --cache keeps side effects uncached: kfp's enable_caching=True would cache them all.
    flags = {
        t["taskInfo"]["name"]: t.get("cachingOptions", {}).get("enableCache", False)
        for t in _tasks(compiled)
    }
    assert flags["register-model"] is False and flags["deploy-model"] is False
