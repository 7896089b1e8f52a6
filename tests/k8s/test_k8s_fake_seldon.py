"""Contract tests: ``fake_seldon`` behaves as the API server, the client and the operator do.

One test per behaviour listed in ``fake_seldon``'s docstring, which names the upstream
source each follows. Where the real thing can run here (the ``kubernetes`` Python
client, with its HTTP pool replaced by a recorder), the test runs it.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import urllib3
from fake_seldon import (
    FakeCluster,
    PatchFailed,
    Rollout,
    apply_json_patch,
    apply_merge_patch,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from closedloop.deploy import kubernetes as deploy_k8s
from closedloop.deploy.seldon import SeldonDeploymentConfig, build_seldon_deployment

V1 = build_seldon_deployment(SeldonDeploymentConfig(model_version="v1"))
V2 = build_seldon_deployment(SeldonDeploymentConfig(model_version="v2"))
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def prod_overlay(k8s: Any) -> dict[str, Any]:
    docs = k8s.kustomize(k8s.repo / "manifests" / "overlays" / "prod")
    return next(d for d in docs if d["kind"] == "SeldonDeployment")


def model_env(sdep: dict[str, Any]) -> dict[str, str]:
    container = sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


# -- the real python client -------------------------------------------------------------


@pytest.fixture()
def recorded() -> tuple[client.ApiClient, list[dict[str, Any]]]:
    """A real ``ApiClient`` whose HTTP pool records requests and answers ``{}``."""
    api_client = client.ApiClient(client.Configuration(host="http://k8s.invalid"))
    requests: list[dict[str, Any]] = []

    def request(method: str, url: str, **kwargs: Any) -> urllib3.HTTPResponse:
        requests.append({"method": method, "url": url, **kwargs})
        return urllib3.HTTPResponse(
            body=b'{"items": []}', status=200, headers={"Content-Type": "application/json"}
        )

    api_client.rest_client.pool_manager.request = request
    return api_client, requests


def test_client_patch_method_sends_merge_patch_whatever_the_body(recorded: Any) -> None:
    api_client, requests = recorded
    operations = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}]
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "machinelearning.seldon.io",
        "v1",
        "closedloop",
        "seldondeployments",
        "closedloop",
        operations,
    )
    assert requests[-1]["headers"]["Content-Type"] == MERGE
    # ... so the fake's patch method treats a list as the API server treats it then:
    cluster = FakeCluster()
    cluster.seed(V1)
    with pytest.raises(ApiException) as caught:
        cluster.custom.patch_namespaced_custom_object(
            "machinelearning.seldon.io",
            "v1",
            "closedloop",
            "seldondeployments",
            "closedloop",
            operations,
        )
    assert caught.value.status == 422 and "cannot unmarshal array" in caught.value.body


def test_deployer_sends_json_patch_through_call_api(recorded: Any) -> None:
    api_client, requests = recorded
    deployer = deploy_k8s.KubernetesDeployer(
        "closedloop", api=client.CustomObjectsApi(api_client), apps_api=client.AppsV1Api(api_client)
    )
    operations = [{"op": "replace", "path": "/metadata/labels/a", "value": "b"}]
    deployer._json_patch("closedloop", operations)
    patch = requests[-1]
    assert patch["method"] == "PATCH"
    assert patch["url"].endswith(
        "/apis/machinelearning.seldon.io/v1/namespaces/closedloop/seldondeployments/closedloop"
    )
    assert patch["headers"]["Content-Type"] == JSON_PATCH
    assert json.loads(patch["body"]) == operations
    assert deployer.list_deployments("closedloop") == []
    listed = requests[-1]
    assert listed["url"].endswith("/apis/apps/v1/namespaces/closedloop/deployments")
    assert ("labelSelector", "seldon-deployment-id=closedloop") in listed["fields"]


def test_fake_call_api_honours_the_content_type() -> None:
    cluster = FakeCluster()
    cluster.seed(V1)
    path = "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}"
    params = {
        "group": "machinelearning.seldon.io",
        "version": "v1",
        "namespace": "closedloop",
        "plural": "seldondeployments",
        "name": "closedloop",
    }
    ops = [{"op": "add", "path": "/metadata/labels/team", "value": "fraud"}]
    out = cluster.custom.api_client.call_api(
        path, "PATCH", params, header_params={"Content-Type": JSON_PATCH}, body=ops
    )
    assert out["metadata"]["labels"]["team"] == "fraud"
    out = cluster.custom.api_client.call_api(
        path,
        "PATCH",
        params,
        header_params={"Content-Type": MERGE},
        body={"metadata": {"labels": {"team": None}}},
    )
    assert "team" not in out["metadata"]["labels"]


# -- JSON merge patch replaces lists whole ------------------------------------------------


def test_merge_patch_semantics() -> None:
    current = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "gone": True}
    patch = {"gone": None, "b": {"d": None, "c": 5}, "e": [2], "new": {"x": 1}}
    assert apply_merge_patch(current, patch) == {"a": 1, "b": {"c": 5}, "e": [2], "new": {"x": 1}}


def test_a_merge_patch_of_predictors_drops_the_overlay(k8s: Any) -> None:
    """Why rollouts use a JSON Patch: a merge patch of ``predictors`` replaces the list."""
    cluster = FakeCluster()
    seeded = cluster.seed(prod_overlay(k8s))
    component = seeded["spec"]["predictors"][0]["componentSpecs"][0]
    assert (component["hpaSpec"]["minReplicas"], model_env(seeded)["GUNICORN_WORKERS"]) == (2, "2")
    cluster.patch("closedloop", {"spec": {"predictors": V2["spec"]["predictors"]}}, MERGE)
    stored = cluster.stored()
    component = stored["spec"]["predictors"][0]["componentSpecs"][0]
    assert component["hpaSpec"]["minReplicas"] == 1 and component["hpaSpec"]["maxReplicas"] == 3
    assert model_env(stored)["GUNICORN_WORKERS"] == "1"
    assert component["spec"]["containers"][0]["resources"]["limits"]["memory"] == "1Gi"


# -- JSON Patch and its test operation ----------------------------------------------------


def test_json_patch_semantics() -> None:
    doc = {"a": {"b": [1, 2, 3]}, "c": "x"}
    ops = [
        {"op": "test", "path": "/c", "value": "x"},
        {"op": "replace", "path": "/a/b/1", "value": 20},
        {"op": "remove", "path": "/a/b/0"},
        {"op": "add", "path": "/a/b/-", "value": 4},
        {"op": "add", "path": "/a/k~1e", "value": True},
    ]
    assert apply_json_patch(doc, ops) == {"a": {"b": [20, 3, 4], "k/e": True}, "c": "x"}
    assert doc == {"a": {"b": [1, 2, 3]}, "c": "x"}
    with pytest.raises(PatchFailed, match="missing"):
        apply_json_patch(doc, [{"op": "replace", "path": "/nope/x", "value": 1}])


def test_a_failed_test_operation_is_a_422_and_writes_nothing() -> None:
    cluster = FakeCluster()
    seeded = cluster.seed(V1)
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "stale"},
        {"op": "replace", "path": "/metadata/labels/closedloop.io~1model-version", "value": "v2"},
    ]
    with pytest.raises(ApiException) as caught:
        cluster.patch("closedloop", ops, JSON_PATCH)
    assert caught.value.status == 422
    assert "testing value /metadata/resourceVersion failed: test failed" in caught.value.body
    assert deploy_k8s._is_precondition_failure(caught.value)
    assert cluster.stored() == seeded
    invalid = ApiException(status=422, reason="Unprocessable Entity")
    invalid.body = json.dumps({"message": "spec.predictors[0].traffic: Invalid value"})
    assert not deploy_k8s._is_precondition_failure(invalid)


def test_json_patch_on_a_path_that_moved_is_a_precondition_failure() -> None:
    cluster = FakeCluster()
    cluster.seed(V1)
    with pytest.raises(ApiException) as caught:
        cluster.patch(
            "closedloop",
            [{"op": "replace", "path": "/spec/predictors/3/traffic", "value": 1}],
            JSON_PATCH,
        )
    assert caught.value.status == 422 and deploy_k8s._is_precondition_failure(caught.value)


# -- resourceVersion, generation, status subresource --------------------------------------


def test_resource_version_changes_on_every_write_status_included() -> None:
    cluster = FakeCluster()
    created = cluster.create(V1)
    versions = [created["metadata"]["resourceVersion"]]
    cluster.step()  # the operator writes status
    versions.append(cluster.stored()["metadata"]["resourceVersion"])
    cluster.patch(
        "closedloop", [{"op": "add", "path": "/metadata/labels/x", "value": "y"}], JSON_PATCH
    )
    versions.append(cluster.stored()["metadata"]["resourceVersion"])
    assert len(set(versions)) == 3
    assert cluster.stored()["metadata"]["generation"] == 1, "metadata is not spec"
    cluster.patch(
        "closedloop", [{"op": "add", "path": "/metadata/labels/x", "value": "y"}], JSON_PATCH
    )
    assert cluster.stored()["metadata"]["resourceVersion"] == versions[-1], "no change, no write"
    cluster.patch("closedloop", {"spec": V2["spec"], "status": {"state": "Bogus"}}, MERGE)
    assert cluster.stored()["metadata"]["generation"] == 2
    assert cluster.stored()["status"]["state"] != "Bogus", "status is a subresource"


def test_a_merge_patch_with_a_stale_resource_version_is_a_409() -> None:
    cluster = FakeCluster()
    cluster.seed(V1)
    with pytest.raises(ApiException) as caught:
        cluster.patch(
            "closedloop", {"metadata": {"resourceVersion": "1"}, "spec": V2["spec"]}, MERGE
        )
    assert caught.value.status == 409


# -- the operator -------------------------------------------------------------------------------


def test_the_operator_never_writes_observed_generation() -> None:
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=2)})
    cluster.seed(V1)
    cluster.patch("closedloop", {"spec": V2["spec"]}, MERGE)
    stale = cluster.stored()
    assert stale["metadata"]["generation"] == 2
    assert stale["status"]["state"] == "Available", "still the previous spec's state"
    for _ in range(3):
        cluster.step()
        assert "observedGeneration" not in cluster.stored()["status"]
    assert cluster.stored()["status"]["state"] == "Available"


def test_operator_owned_deployments_carry_the_version_from_graph_parameters() -> None:
    cluster = FakeCluster()
    manifest = copy.deepcopy(V1)
    container = manifest["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]
    for env in container["env"]:
        if env["name"] == "PREDICTIVE_UNIT_PARAMETERS":
            env["value"] = "[]"  # the operator's value from the graph wins (addModelEnvs)
    cluster.seed(manifest)
    (name,) = cluster.deployments
    assert name == "closedloop-main-0-model-drift-detector"
    deployment = cluster.deployments[name].obj
    assert deployment["metadata"]["labels"]["seldon-deployment-id"] == "closedloop"
    model = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in model["env"]}
    assert env["PREDICTOR_ID"] == "main"
    assert {"name": "version", "value": "v1", "type": "STRING"} in json.loads(
        env["PREDICTIVE_UNIT_PARAMETERS"]
    )


def test_deployments_converge_only_after_some_steps() -> None:
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=3)})
    cluster.seed(V1)
    cluster.patch("closedloop", {"spec": V2["spec"]}, MERGE)
    states = []
    for _ in range(3):
        cluster.step()
        (state,) = cluster.deployments.values()
        status = state.obj["status"]
        states.append(
            (
                status["updatedReplicas"],
                status["availableReplicas"],
                cluster.stored()["status"]["state"],
            )
        )
    assert states == [(1, 2, "Creating"), (1, 2, "Creating"), (2, 2, "Available")]


def test_a_rollout_that_never_converges_exceeds_its_progress_deadline() -> None:
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=None, deadline_after=2)})
    cluster.seed(V1)
    cluster.patch("closedloop", {"spec": V2["spec"]}, MERGE)
    cluster.step()
    cluster.step()
    (state,) = cluster.deployments.values()
    progressing = next(c for c in state.obj["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert cluster.stored()["status"]["state"] == "Failed"


def test_predictor_service_and_address() -> None:
    cluster = FakeCluster()
    cluster.create(V1)
    cluster.step()
    assert cluster.services == {"closedloop-main": 8000}
    assert "address" not in cluster.stored()["status"], "set only once the service is found"
    cluster.step()
    assert cluster.stored()["status"]["address"]["url"] == (
        "http://closedloop-main.closedloop.svc.cluster.local:8000/api/v1.0/predictions"
    )
    assert (
        deploy_k8s.service_url(cluster.stored(), "closedloop")
        == "http://closedloop-main.closedloop.svc.cluster.local:8000"
    )
