"""closedloop.deploy.rollout: the narrow patch and the rollout-done rule, as pure functions."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fake_seldon import apply_json_patch

from closedloop.deploy.rollout import (
    deployment_progress,
    narrow_patch,
    pointer,
    rollout_progress,
    served_versions,
    version_fields,
)
from closedloop.deploy.seldon import SeldonDeploymentConfig, build_seldon_deployment, rollout

V1 = SeldonDeploymentConfig(model_version="v1")


def live(config: SeldonDeploymentConfig) -> dict[str, Any]:
    obj = build_seldon_deployment(config)
    obj["metadata"]["resourceVersion"] = "7"
    return obj


def test_pointer_escapes() -> None:
    assert pointer("metadata", "labels", "closedloop.io/model-version") == (
        "/metadata/labels/closedloop.io~1model-version"
    )
    assert pointer("a~b", 0) == "/a~0b/0"


def test_every_version_field_of_the_builder_is_found() -> None:
    obj = live(V1)
    fields = version_fields(obj, 0, "v2")
    assert len(fields) == 8 and {f.value for f in fields if "env" not in f.path} == {"v1"}
    patched = apply_json_patch(
        obj, narrow_patch(obj, live(SeldonDeploymentConfig(model_version="v2")), guard="values")
    )
    assert json.dumps(patched).count('"v1"') == 0
    assert all(f.value == f.new_value for f in version_fields(patched, 0, "v2"))


@pytest.mark.parametrize(
    "target",
    [
        SeldonDeploymentConfig(model_version="v2"),
        rollout(V1, "v2", traffic_percent=30),
        rollout(V1, "v3", mode="shadow", traffic_percent=100),
    ],
    ids=["version", "canary", "shadow"],
)
def test_narrow_patch_reaches_the_targets_versions(target: SeldonDeploymentConfig) -> None:
    obj = live(V1)
    wanted = build_seldon_deployment(target)
    ops = narrow_patch(obj, wanted, guard="resourceVersion")
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    patched = apply_json_patch(obj, ops)
    assert served_versions(patched) == served_versions(wanted)
    assert [p["traffic"] for p in patched["spec"]["predictors"]] == [
        p["traffic"] for p in wanted["spec"]["predictors"]
    ]
    assert narrow_patch(patched, wanted, guard="resourceVersion") == []


def test_narrow_patch_is_empty_when_nothing_changes() -> None:
    assert narrow_patch(live(V1), live(V1), guard="resourceVersion") == []


def deployment(**status: Any) -> dict[str, Any]:
    params = json.dumps(
        [{"name": "version", "value": status.pop("version", "v2"), "type": "STRING"}]
    )
    env = [
        {"name": "PREDICTIVE_UNIT_PARAMETERS", "value": params},
        {"name": "PREDICTOR_ID", "value": "main"},
    ]
    return {
        "metadata": {
            "name": "closedloop-main-0-model-drift-detector",
            "generation": status.pop("generation", 3),
        },
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [{"name": "model", "env": env}]}},
        },
        "status": {"observedGeneration": 3, **status},
    }


@pytest.mark.parametrize(
    ("dep", "state", "fragment"),
    [
        (
            deployment(version="v1", updatedReplicas=2, replicas=2, availableReplicas=2),
            "waiting",
            "still starts version v1",
        ),
        (
            deployment(generation=4, updatedReplicas=2, replicas=2, availableReplicas=2),
            "waiting",
            "not observed",
        ),
        (
            deployment(updatedReplicas=1, replicas=3, availableReplicas=2),
            "waiting",
            "1 of 2 replicas updated",
        ),
        (
            deployment(updatedReplicas=2, replicas=3, availableReplicas=2),
            "waiting",
            "old replicas pending",
        ),
        (
            deployment(updatedReplicas=2, replicas=2, availableReplicas=1),
            "waiting",
            "1 of 2 updated replicas available",
        ),
        (
            deployment(
                updatedReplicas=1,
                replicas=3,
                availableReplicas=2,
                conditions=[
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
                ],
            ),
            "failed",
            "progress deadline exceeded",
        ),
        (
            deployment(updatedReplicas=2, replicas=2, availableReplicas=2),
            "done",
            "2 replicas serve v2",
        ),
    ],
)
def test_deployment_progress_follows_kubectl_rollout_status(
    dep: dict[str, Any], state: str, fragment: str
) -> None:
    progress = deployment_progress(dep, "v2")
    assert (progress.state, fragment in progress.detail) == (state, True), progress.detail


def test_a_predictor_without_its_deployment_is_not_done() -> None:
    done = deployment(updatedReplicas=2, replicas=2, availableReplicas=2)
    assert rollout_progress([done], {"main": "v2"}).state == "done"
    assert rollout_progress([], {"main": "v2"}).state == "waiting"
    progress = rollout_progress([done], {"main": "v2", "canary": "v3"})
    assert progress.state == "waiting" and "no Deployment for predictor canary" in progress.detail
    other = copy.deepcopy(done)
    other["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] = "canary"
    assert rollout_progress([done, other], {"main": "v2"}).state == "done"
