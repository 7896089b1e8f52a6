"""The local deploy backend's logic that needs no running model server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from closedloop.deploy.base import Deployer
from closedloop.deploy.local import (
    MICROSERVICE,
    SERVING_VENV_ENV,
    LocalDeployer,
    LocalSeldonServer,
    LocalServerError,
    ServerPorts,
    find_microservice,
    model_parameters,
)
from closedloop.local.s3 import LocalS3
from closedloop.registry import Registry
from closedloop.storage import S3Settings

from .conftest import TrainedModel, register


def test_local_deployer_implements_the_deployer_protocol() -> None:
    deployer = LocalDeployer("s3://closedloop/registry")
    assert isinstance(deployer, Deployer)
    with pytest.raises(LocalServerError, match="nothing is deployed"):
        deployer.status()
    deployer.teardown()


def test_find_microservice_prefers_the_configured_environment(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    executable = tmp_path / "bin" / MICROSERVICE
    executable.write_text("#!/bin/sh\n")
    assert find_microservice({SERVING_VENV_ENV: str(tmp_path)}) == executable
    with pytest.raises(LocalServerError, match="has no bin/seldon-core-microservice"):
        find_microservice({SERVING_VENV_ENV: str(tmp_path / "nowhere")})


def test_server_environment_is_what_seldon_would_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere/with/kfp")
    server = LocalSeldonServer(
        model_parameters("s3://b/registry", "fraud", "v2", max_rows=10),
        s3=S3Settings(endpoint_url="http://127.0.0.1:1", access_key="a", secret_key="s"),
        workers=3,
    )
    ports = ServerPorts.allocate()
    assert len({ports.http, ports.grpc, ports.metrics}) == 3
    env = server.environment(ports, tmp_path)
    assert env["MODEL_NAME"] == "closedloop.serving.model.ClosedLoopModel"
    assert env["SERVICE_TYPE"] == "MODEL"
    assert json.loads(env["PREDICTIVE_UNIT_PARAMETERS"]) == [
        {"name": "registry_uri", "value": "s3://b/registry", "type": "STRING"},
        {"name": "model_name", "value": "fraud", "type": "STRING"},
        {"name": "version", "value": "v2", "type": "STRING"},
        {"name": "max_rows", "value": "10", "type": "INT"},
    ]
    assert env["GUNICORN_WORKERS"] == "3" and env["OMP_NUM_THREADS"] == "1"
    assert env["XDG_RUNTIME_DIR"] == str(tmp_path / "run")
    assert env["CLOSEDLOOP_S3_ENDPOINT"] == "http://127.0.0.1:1"
    assert env["PREDICTIVE_UNIT_METRICS_ENDPOINT"] == "/prometheus"
    assert "PYTHONPATH" not in env


@pytest.mark.slow
def test_a_missing_pinned_version_stops_nothing(
    s3_server: LocalS3, registry: Registry, model_v1: TrainedModel
) -> None:
    register(registry, "fraud-pinned", model_v1)
    deployer = LocalDeployer(registry.root, s3=s3_server.settings())
    with pytest.raises(LocalServerError, match="fraud-pinned has no version 'v7'"):
        deployer.deploy("fraud-pinned", "v7")
    assert deployer.server is None
