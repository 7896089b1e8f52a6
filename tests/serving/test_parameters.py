"""The model server's predictive-unit parameters: one declaration, typed as Seldon types them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from closedloop.deploy.local import LocalSeldonServer, ServerPorts, model_parameters
from closedloop.deploy.seldon import SeldonDeploymentConfig, predictive_unit_parameters
from closedloop.serving.parameters import (
    MODEL_PARAMETERS,
    SELDON_TYPES,
    ParameterSpec,
    parse_parameter,
    seldon_parameters,
)

from .conftest import SERVING_PYTHON, serving_environment_or_skip

EVERY = {
    "registry_uri": "s3://b/registry",
    "model_name": "fraud",
    "version": "v3",
    "poll_seconds": 0.5,
    "max_rows": 250,
    "max_request_bytes": 4096,
    "request_logger_url": "http://127.0.0.1:8080/",
    "request_logger_mode": "request",
}
EXPECTED_TYPES = {
    "registry_uri": "STRING",
    "model_name": "STRING",
    "version": "STRING",
    "poll_seconds": "DOUBLE",
    "max_rows": "INT",
    "max_request_bytes": "INT",
    "request_logger_url": "STRING",
    "request_logger_mode": "STRING",
}


def seldon_parse(entries: list[dict[str, str]]) -> dict[str, Any]:
    """What ``seldon_core.microservice.parse_parameters`` (1.19) does, for the dev env."""
    convert = {"INT": int, "FLOAT": float, "DOUBLE": float, "STRING": str}
    truth = {"y": True, "yes": True, "t": True, "true": True, "on": True, "1": True}
    truth |= {"n": False, "no": False, "f": False, "false": False, "off": False, "0": False}
    return {
        e["name"]: truth[e["value"].lower()]
        if e["type"] == "BOOL"
        else convert[e["type"]](e["value"])
        for e in entries
    }


def test_every_parameter_is_declared_once_with_a_seldon_type() -> None:
    assert [spec.name for spec in MODEL_PARAMETERS] == list(EVERY)
    assert {spec.name: spec.type for spec in MODEL_PARAMETERS} == EXPECTED_TYPES
    assert all(spec.type in SELDON_TYPES and spec.help for spec in MODEL_PARAMETERS)


def test_the_typed_list_round_trips_through_seldons_conversion() -> None:
    entries = seldon_parameters(EVERY)
    # The CRD declares name, type and value as strings.
    assert all(isinstance(v, str) for e in entries for v in e.values())
    assert [(e["name"], e["type"]) for e in entries] == list(EXPECTED_TYPES.items())
    parsed = seldon_parse(entries)
    assert parsed == EVERY
    assert type(parsed["max_rows"]) is int and type(parsed["poll_seconds"]) is float
    # The model class reads what Seldon hands it, and a string of an older deployment,
    # as the same value.
    for name, value in parsed.items():
        assert parse_parameter(name, value) == value == parse_parameter(name, str(value))


def test_bool_parameters_are_written_as_strtobool_reads_them() -> None:
    flag = ParameterSpec("explain", "BOOL", False, "a flag")
    for value, expected in [(True, True), ("yes", True), ("0", False), (False, False)]:
        entry = flag.entry(value)
        assert entry["value"] in ("true", "false")
        assert seldon_parse([entry]) == {"explain": expected}
    with pytest.raises(ValueError, match="must be true or false"):
        flag.entry("maybe")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("max_rows", 1.5, "must be an integer >= 1"),
        ("max_rows", "ten", "is not an integer"),
        ("max_rows", True, "is not an integer"),
        ("max_request_bytes", 10, "must be an integer >= 1024"),
        ("poll_seconds", -1, "must be a number >= 0"),
        ("poll_seconds", "inf", "must be a number >= 0"),
        ("max_batch", 1, "takes no parameter 'max_batch'"),
    ],
)
def test_values_that_do_not_fit_are_refused_when_built(name: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seldon_parameters({name: value})
    with pytest.raises(ValueError, match=message):
        parse_parameter(name, value)


def local_list(parameters: dict[str, Any], tmp_path: Path) -> list[dict[str, str]]:
    env = LocalSeldonServer(parameters).environment(ServerPorts(1, 2, 3), tmp_path)
    return json.loads(env["PREDICTIVE_UNIT_PARAMETERS"])


def test_both_deployers_send_the_same_typed_list(tmp_path: Path) -> None:
    config = SeldonDeploymentConfig(model_version="v3", registry_uri="s3://bucket/registry")
    cluster = predictive_unit_parameters(config, "v3")
    local = local_list(model_parameters(config.registry_uri, config.model_name, "v3"), tmp_path)
    assert local == cluster
    local = local_list(model_parameters("s3://b/r", "fraud", max_rows=10, poll_seconds=2), tmp_path)
    assert {"name": "max_rows", "value": "10", "type": "INT"} in local
    assert {"name": "poll_seconds", "value": "2.0", "type": "DOUBLE"} in local
    with pytest.raises(ValueError, match="max_rows"):
        model_parameters("s3://b/r", "fraud", max_rows=0)


def test_another_model_class_gets_its_parameters_as_strings(tmp_path: Path) -> None:
    server = LocalSeldonServer({"booster_path": "/m.json", "nthread": 1}, interface="m.Booster")
    env = server.environment(ServerPorts(1, 2, 3), tmp_path)
    assert json.loads(env["PREDICTIVE_UNIT_PARAMETERS"]) == [
        {"name": "booster_path", "value": "/m.json", "type": "STRING"},
        {"name": "nthread", "value": "1", "type": "STRING"},
    ]


ROUND_TRIP = """
import json, sys
from seldon_core.microservice import parse_parameters
from closedloop.serving.model import ClosedLoopModel
from closedloop.serving.parameters import ParameterSpec
entries = json.loads(sys.argv[1])
model = ClosedLoopModel(**parse_parameters(entries))
flag = parse_parameters([ParameterSpec("flag", "BOOL", False, "").entry(True)])
print(json.dumps({
    "poll_seconds": model.poll_seconds, "max_rows": model.max_rows,
    "max_request_bytes": model.max_request_bytes, "version": model.version,
    "mode": model.request_logger_mode, "flag": flag["flag"],
    "types": [type(model.max_rows).__name__, type(model.poll_seconds).__name__],
}))
"""


@pytest.mark.slow
@pytest.mark.serving
def test_seldons_own_parse_parameters_builds_the_model_from_the_list() -> None:
    serving_environment_or_skip()
    # No request_logger_url: the model would start a sender thread.
    entries = seldon_parameters({k: v for k, v in EVERY.items() if k != "request_logger_url"})
    done = subprocess.run(
        [str(SERVING_PYTHON), "-c", ROUND_TRIP, json.dumps(entries)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "poll_seconds": 0.5,
        "max_rows": 250,
        "max_request_bytes": 4096,
        "version": "v3",
        "mode": "request",
        "flag": True,
        "types": ["int", "float"],
    }
