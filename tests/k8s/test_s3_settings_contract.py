"""The S3 settings contract: what the manifests create is what the pipeline steps read.

``kfp.kubernetes.use_config_map_as_env`` maps a ConfigMap **key** to an env var, and
with ``optional=True`` a missing key silently leaves the variable unset (then boto3
calls AWS with another store's credentials). So every overlay's rendered ConfigMap is
cross-checked against every compiled pipeline's ``configMapAsEnv``, key by key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from closedloop.storage.settings import (
    S3_SECRET,
    S3_SECRET_KEYS,
    S3_SETTINGS_CONFIG_MAP,
    S3_SETTINGS_KEYS,
    S3Settings,
    S3SettingsMissingError,
)

REPO = Path(__file__).parents[2]
COMPILED = sorted((REPO / "pipelines" / "compiled").glob("*.yaml"))


def _executors(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    platform = next(d for d in docs if "platforms" in d)
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("overlay", ["base", "overlays/dev", "overlays/prod"])
def test_every_key_a_pipeline_step_reads_is_in_the_overlays_configmap(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    config_map = _one(rendered[overlay], "ConfigMap", S3_SETTINGS_CONFIG_MAP)
    keys = set(config_map["data"])
    assert keys == set(S3_SETTINGS_KEYS)
    assert COMPILED
    for path in COMPILED:
        for name, executor in _executors(path).items():
            (mapped,) = executor["configMapAsEnv"]
            assert mapped["configMapName"] == S3_SETTINGS_CONFIG_MAP
            pairs = {(k["configMapKey"], k["envVar"]) for k in mapped["keyToEnv"]}
            assert pairs == set(S3_SETTINGS_KEYS.items()), f"{path.name} {name}"
            assert {k for k, _ in pairs} <= keys, f"{path.name} {name} reads keys {overlay} lacks"
            (secret,) = executor["secretAsEnv"]
            assert secret["secretName"] == S3_SECRET
            assert {(k["secretKey"], k["envVar"]) for k in secret["keyToEnv"]} == set(
                S3_SECRET_KEYS.items()
            )


def test_a_step_without_the_configmap_fails_at_once_instead_of_calling_aws() -> None:
    in_pod = {
        "KFP_POD_NAME": "training-abc",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    with pytest.raises(S3SettingsMissingError, match=S3_SETTINGS_CONFIG_MAP):
        S3Settings.from_env(in_pod)
    # The ConfigMap present with an empty endpoint is an explicit choice of AWS S3.
    aws = S3Settings.from_env(
        {**in_pod, "CLOSEDLOOP_S3_ENDPOINT": "", "AWS_DEFAULT_REGION": "eu-west-1"}
    )
    assert aws.endpoint_url is None and aws.region == "eu-west-1"
    # Outside a KFP pod (local mode, tests) nothing changes.
    assert S3Settings.from_env({}).endpoint_url is None
