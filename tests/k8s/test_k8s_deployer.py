"""KubernetesDeployer: create-or-patch, waiting, rollback and API error mapping.

These tests run against ``FakeCustomObjectsApi`` below, a hand-written fake of
``kubernetes.client.CustomObjectsApi``: no Kubernetes API server (nor Docker, nor a
cluster) can run on the machines these tests run on. The fake keeps objects in memory,
applies JSON merge patches, records every call, raises scripted ``ApiException``s (the
real class from the ``kubernetes`` package), and plays the Seldon operator by reporting
a scripted ``status.state`` on each read. A real cluster is exercised by tests/e2e when
``KUBECONFIG`` points at one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

from closedloop.deploy import DeployError
from closedloop.deploy.kubernetes import (
    DeployForbidden,
    DeploymentConflict,
    DeploymentInvalid,
    DeploymentNotFound,
    DeploymentUnavailable,
    KubernetesDeployer,
    merge_patch,
)
from closedloop.deploy.seldon import (
    ANNOTATION_CHALLENGER_VERSION,
    LABEL_MODEL_VERSION,
    SeldonDeploymentConfig,
    build_seldon_deployment,
    promote,
    rollout,
)
from closedloop.errors import ClosedLoopError

NAMESPACE = "closedloop"
V1 = SeldonDeploymentConfig(model_version="v1")
V2 = SeldonDeploymentConfig(model_version="v2")

# A scripted operator report: a state, or (state, how many generations behind it is).
Report = str | tuple[str, int]


def api_error(status: int, phrase: str, **status_body: Any) -> ApiException:
    error = ApiException(status=status, reason=phrase)
    if status_body:
        error.body = json.dumps({"kind": "Status", "code": status, **status_body})
    return error


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies ``application/merge-patch+json``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


class FakeCustomObjectsApi:
    """A fake CustomObjectsApi: no Kubernetes API server can run here (see module doc).

    Args:
        states: Per served model version, the states the "operator" reports on
            successive reads; the last one repeats.
        errors: Per method (``get``, ``create``, ``patch``), outcomes of successive calls:
            an exception to raise, or None to proceed normally.
    """

    def __init__(
        self,
        *,
        states: dict[str, list[Report]] | None = None,
        errors: dict[str, Sequence[BaseException | None]] | None = None,
    ) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.states = {version: list(script) for version, script in (states or {}).items()}
        self.errors = {method: list(script) for method, script in (errors or {}).items()}
        self._resource_version = 100

    def seed(self, manifest: dict[str, Any], **extra_metadata: dict[str, str]) -> dict[str, Any]:
        obj = copy.deepcopy(manifest)
        for field, values in extra_metadata.items():
            obj["metadata"].setdefault(field, {}).update(values)
        obj["metadata"].update(generation=1, resourceVersion=self._bump())
        obj["status"] = {"state": "Available", "observedGeneration": 1}
        self.objects[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return copy.deepcopy(obj)

    def _bump(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _record(self, method: str, **kwargs: Any) -> None:
        assert kwargs.pop("group") == "machinelearning.seldon.io"
        assert kwargs.pop("version") == "v1"
        assert kwargs.pop("plural") == "seldondeployments"
        self.calls.append((method, copy.deepcopy(kwargs)))
        script = self.errors.get(method)
        if script:
            outcome = script.pop(0)
            if outcome is not None:
                raise outcome

    def _not_found(self, name: str) -> ApiException:
        return api_error(
            404,
            "Not Found",
            reason="NotFound",
            message=f'seldondeployments.machinelearning.seldon.io "{name}" not found',
            details={
                "name": name,
                "group": "machinelearning.seldon.io",
                "kind": "seldondeployments",
            },
        )

    def _report(self, obj: dict[str, Any]) -> None:
        version = obj["metadata"]["labels"][LABEL_MODEL_VERSION]
        script = self.states.setdefault(version, ["Available"])
        report = script.pop(0) if len(script) > 1 else script[0]
        state, behind = (report, 0) if isinstance(report, str) else report
        obj["status"] = {
            "state": state,
            "observedGeneration": obj["metadata"]["generation"] - behind,
            "description": f"operator says {state}",
            "address": {"url": f"http://{obj['metadata']['name']}-main.{NAMESPACE}:8000"},
        }

    def get_namespaced_custom_object(self, **kwargs: Any) -> dict[str, Any]:
        self._record("get", **kwargs)
        obj = self.objects.get((kwargs["namespace"], kwargs["name"]))
        if obj is None:
            raise self._not_found(kwargs["name"])
        self._report(obj)
        return copy.deepcopy(obj)

    def create_namespaced_custom_object(self, **kwargs: Any) -> dict[str, Any]:
        self._record("create", **kwargs)
        body = copy.deepcopy(kwargs["body"])
        key = (kwargs["namespace"], body["metadata"]["name"])
        if key in self.objects:
            raise api_error(409, "Conflict", reason="AlreadyExists", message="already exists")
        body["metadata"].update(generation=1, resourceVersion=self._bump())
        self.objects[key] = body
        return copy.deepcopy(body)

    def patch_namespaced_custom_object(self, **kwargs: Any) -> dict[str, Any]:
        self._record("patch", **kwargs)
        key = (kwargs["namespace"], kwargs["name"])
        if key not in self.objects:
            raise self._not_found(kwargs["name"])
        obj = self.objects[key]
        patch = copy.deepcopy(kwargs["body"])
        expected = patch.get("metadata", {}).pop("resourceVersion", None)
        if expected is not None and expected != obj["metadata"]["resourceVersion"]:
            raise api_error(409, "Conflict", reason="Conflict", message="object has been modified")
        updated = apply_merge_patch(obj, patch)
        if updated["spec"] != obj["spec"]:
            updated["metadata"]["generation"] += 1
        updated["metadata"]["resourceVersion"] = self._bump()
        self.objects[key] = updated
        return copy.deepcopy(updated)

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]

    def stored(self, name: str = "closedloop") -> dict[str, Any]:
        return self.objects[(NAMESPACE, name)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def deployer(
    api: FakeCustomObjectsApi, clock: FakeClock, timeout: float = 60.0
) -> KubernetesDeployer:
    return KubernetesDeployer(
        NAMESPACE,
        api=api,
        timeout_seconds=timeout,
        poll_interval_seconds=5.0,
        clock=clock,
        sleep=clock.sleep,
    )


# create or patch, then wait -------------------------------------------------------------------


def test_creates_when_absent_and_waits_until_available() -> None:
    api = FakeCustomObjectsApi(states={"v1": ["Creating", "Creating", "Available"]})
    clock = FakeClock()
    result = deployer(api, clock).deploy(V1)
    assert api.methods() == ["get", "create", "get", "get", "get"]
    assert result.created is True
    assert result.model_version == "v1" and result.generation == 1
    assert result.address == "http://closedloop-main.closedloop:8000"
    assert clock.sleeps == [5.0, 5.0]
    assert api.calls[1][1]["body"] == build_seldon_deployment(V1)


def test_patches_when_present_keeping_foreign_metadata() -> None:
    api = FakeCustomObjectsApi(states={"v2": ["Creating", "Available"]})
    seeded = api.seed(
        build_seldon_deployment(rollout(V1, "v2")),
        labels={"team": "fraud"},
        annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}"},
    )
    result = deployer(api, FakeClock()).deploy(V2)
    assert api.methods() == ["get", "patch", "get", "get"]
    patch = api.calls[1][1]["body"]
    assert patch["metadata"]["resourceVersion"] == seeded["metadata"]["resourceVersion"]
    stored = api.stored()
    assert stored["spec"] == build_seldon_deployment(V2)["spec"]
    assert stored["metadata"]["labels"]["team"] == "fraud"
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]
    # the finished rollout's annotation is ours, so it goes
    assert ANNOTATION_CHALLENGER_VERSION not in stored["metadata"]["annotations"]
    assert result.created is False and result.model_version == "v2" and result.generation == 2


def test_a_stale_available_status_is_not_trusted() -> None:
    api = FakeCustomObjectsApi(states={"v2": [("Available", 1), ("Available", 1), "Available"]})
    api.seed(build_seldon_deployment(V1))
    result = deployer(api, FakeClock()).deploy(V2)
    assert api.methods() == ["get", "patch", "get", "get", "get"]
    assert result.generation == 2


def test_promote_after_canary_is_one_patch() -> None:
    canary = rollout(V1, "v2", traffic_percent=25)
    api = FakeCustomObjectsApi()
    api.seed(build_seldon_deployment(canary))
    deployer(api, FakeClock()).deploy(promote(canary))
    (predictor,) = api.stored()["spec"]["predictors"]
    assert predictor["labels"]["version"] == "v2" and predictor["traffic"] == 100


# failure and rollback -------------------------------------------------------------------------


def test_failed_rollout_rolls_back_to_the_previous_spec() -> None:
    api = FakeCustomObjectsApi(states={"v2": ["Creating", "Failed"]})
    seeded = api.seed(build_seldon_deployment(V1))
    with pytest.raises(DeploymentUnavailable) as caught:
        deployer(api, FakeClock()).deploy(V2)
    message = str(caught.value)
    assert "operator says Failed" in message and "Rolled back" in message and "v1" in message
    assert isinstance(caught.value.__cause__, DeploymentUnavailable)
    assert api.methods() == ["get", "patch", "get", "get", "patch"]
    stored = api.stored()
    assert stored["spec"] == seeded["spec"]
    assert stored["metadata"]["labels"] == seeded["metadata"]["labels"]
    assert stored["metadata"]["annotations"] == seeded["metadata"]["annotations"]
    rollback = api.calls[-1][1]["body"]
    assert "resourceVersion" not in rollback.get("metadata", {}), "a rollback must not lose a race"


def test_waiting_is_bounded_and_then_rolls_back() -> None:
    api = FakeCustomObjectsApi(states={"v2": ["Creating"]})
    api.seed(build_seldon_deployment(V1))
    clock = FakeClock()
    with pytest.raises(DeploymentUnavailable, match=r"not Available within 30 s; last state"):
        deployer(api, clock, timeout=30.0).deploy(V2)
    assert clock.now == pytest.approx(30.0)
    assert api.methods().count("get") == 8  # the first read, then one per 5 s poll
    assert api.methods()[-1] == "patch"
    assert api.stored()["metadata"]["labels"][LABEL_MODEL_VERSION] == "v1"


def test_a_failed_first_deploy_has_nothing_to_roll_back() -> None:
    api = FakeCustomObjectsApi(states={"v1": ["Failed"]})
    with pytest.raises(DeploymentUnavailable, match="no previous spec to roll back to"):
        deployer(api, FakeClock()).deploy(V1)
    assert "patch" not in api.methods()


def test_a_failed_rollback_reports_both_failures() -> None:
    forbidden = api_error(403, "Forbidden", message="patch is forbidden")
    api = FakeCustomObjectsApi(states={"v2": ["Failed"]}, errors={"patch": [None, forbidden]})
    api.seed(build_seldon_deployment(V1))
    with pytest.raises(DeployError) as caught:
        deployer(api, FakeClock()).deploy(V2)
    assert not isinstance(caught.value, DeploymentUnavailable)
    message = str(caught.value)
    assert "operator says Failed" in message and "Rolling back" in message
    assert "patch is forbidden" in message
    assert isinstance(caught.value.__cause__, DeployForbidden)


# API errors ------------------------------------------------------------------------------------

CRD_MISSING = api_error(404, "Not Found")
CRD_MISSING.body = "404 page not found"


@pytest.mark.parametrize(
    ("method", "error", "expected", "fragment"),
    [
        (
            "create",
            api_error(409, "Conflict", message="already exists"),
            DeploymentConflict,
            "created by someone else",
        ),
        (
            "patch",
            api_error(409, "Conflict", message="the object has been modified"),
            DeploymentConflict,
            "changed since it was read",
        ),
        (
            "create",
            CRD_MISSING,
            DeploymentNotFound,
            "CRD seldondeployments.machinelearning.seldon.io",
        ),
        (
            "get",
            api_error(403, "Forbidden", message="cannot get resource"),
            DeployForbidden,
            "get, list, watch, create and patch",
        ),
        (
            "patch",
            api_error(
                422, "Unprocessable Entity", message="spec.predictors: traffic must sum to 100"
            ),
            DeploymentInvalid,
            "traffic must sum to 100",
        ),
        ("get", api_error(500, "Internal Server Error"), DeployError, "HTTP 500"),
    ],
)
def test_api_errors_map_to_clear_exceptions(
    method: str, error: ApiException, expected: type[DeployError], fragment: str
) -> None:
    api = FakeCustomObjectsApi(errors={method: [error]})
    if method == "patch":
        api.seed(build_seldon_deployment(V1))
    with pytest.raises(expected) as caught:
        deployer(api, FakeClock()).deploy(V2)
    assert type(caught.value) is expected
    message = str(caught.value)
    assert fragment in message and "closedloop" in message and "\n" not in message
    assert caught.value.__cause__ is error
    assert isinstance(caught.value, ClosedLoopError)


def test_a_missing_namespace_is_reported_as_not_found() -> None:
    missing = api_error(
        404,
        "Not Found",
        message='namespaces "closedloop" not found',
        details={"kind": "namespaces"},
    )
    api = FakeCustomObjectsApi(errors={"get": [missing]})
    with pytest.raises(DeploymentNotFound, match='namespaces "closedloop" not found'):
        deployer(api, FakeClock()).deploy(V1)
    assert api.methods() == ["get"]


def test_an_unreachable_api_server_is_a_deploy_error() -> None:
    api = FakeCustomObjectsApi(errors={"get": [MaxRetryError(None, "/apis", "refused")]})
    with pytest.raises(DeployError, match="cannot reach the Kubernetes API server"):
        deployer(api, FakeClock()).deploy(V1)


def test_namespace_mismatch_is_refused_before_any_call() -> None:
    api = FakeCustomObjectsApi()
    other = SeldonDeploymentConfig(namespace="elsewhere")
    with pytest.raises(DeployError, match="differs from the deployer"):
        deployer(api, FakeClock()).deploy(other)
    with pytest.raises(DeployError, match="this deployer manages"):
        deployer(api, FakeClock()).apply(build_seldon_deployment(other))
    assert api.calls == []


# the merge patch --------------------------------------------------------------------------------


def test_merge_patch_round_trips() -> None:
    current = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "gone": True}
    target = {"a": 1, "b": {"c": 5}, "e": [2], "new": {"x": 1}}
    patch = merge_patch(current, target)
    assert patch == {"gone": None, "b": {"d": None, "c": 5}, "e": [2], "new": {"x": 1}}
    assert apply_merge_patch(current, patch) == target
    assert merge_patch(target, target) == {}
