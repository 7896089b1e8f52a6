"""KubernetesDeployer: create, narrow JSON Patch, waiting on the real rollout, rollback.

These tests run against ``fake_seldon``: an in-memory API server, Seldon operator and
Deployment controller that behave as their upstream sources do (see that module's
docstring and the contract tests in ``test_k8s_fake_seldon.py``). No Kubernetes API
server can run where these tests run; tests/e2e exercises a real cluster when
``KUBECONFIG`` points at one.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import fake_seldon
import pytest
from fake_seldon import FakeClock, FakeCluster, Rollout, api_error
from urllib3.exceptions import MaxRetryError

from closedloop.deploy import DeployError
from closedloop.deploy.kubernetes import (
    DeployForbidden,
    DeploymentConflict,
    DeploymentInvalid,
    DeploymentNotFound,
    DeploymentUnavailable,
    KubernetesDeployer,
    SeldonDeployer,
    VersionAlreadyFailed,
    service_url,
)
from closedloop.deploy.promotion import roll_out_then_promote
from closedloop.deploy.rollout import (
    ANNOTATION_FAILED_VERSION,
    ANNOTATION_PREVIOUS_VERSION,
    served_versions,
)
from closedloop.deploy.seldon import (
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
SERVICE = "http://closedloop-main.closedloop.svc.cluster.local:8000"


def deployer(
    cluster: FakeCluster, clock: FakeClock | None = None, timeout: float = 60.0
) -> KubernetesDeployer:
    clock = clock or FakeClock(cluster)
    return KubernetesDeployer(
        NAMESPACE,
        api=cluster.custom,
        apps_api=cluster.apps,
        timeout_seconds=timeout,
        poll_interval_seconds=5.0,
        clock=clock,
        sleep=clock.sleep,
    )


def deployment_versions(cluster: FakeCluster) -> dict[str, str | None]:
    return {name: fake_seldon._template_version(s.obj) for name, s in cluster.deployments.items()}


def prod_overlay(k8s: Any) -> dict[str, Any]:
    """The SeldonDeployment as `kubectl apply -k manifests/overlays/prod` creates it."""
    docs = k8s.kustomize(k8s.repo / "manifests" / "overlays" / "prod")
    return next(d for d in docs if d["kind"] == "SeldonDeployment")


def without_versions(sdep: dict[str, Any]) -> dict[str, Any]:
    """``sdep`` minus status, resourceVersion, generation and every field carrying a version."""
    out = copy.deepcopy(sdep)
    out.pop("status", None)
    for key in ("resourceVersion", "generation"):
        out["metadata"].pop(key, None)
    for kind in ("labels", "annotations"):
        for key in (LABEL_MODEL_VERSION, ANNOTATION_PREVIOUS_VERSION, ANNOTATION_FAILED_VERSION):
            out["metadata"].get(kind, {}).pop(key, None)
    for predictor in out["spec"]["predictors"]:
        predictor["labels"].pop("version"), predictor["labels"].pop(LABEL_MODEL_VERSION)
        for parameter in predictor["graph"]["parameters"]:
            if parameter["name"] == "version":
                parameter["value"] = "*"
        for component in predictor["componentSpecs"]:
            component["metadata"]["labels"].pop(LABEL_MODEL_VERSION)
            for container in component["spec"]["containers"]:
                for env in container.get("env", []):
                    if env["name"] == "PREDICTIVE_UNIT_PARAMETERS":
                        env["value"] = "*"
                args = container.get("args", [])
                if "--model-version" in args:
                    args[args.index("--model-version") + 1] = "*"
    return out


# 1. the rollout wait waits on the real rollout ----------------------------------------


def test_waits_for_the_operator_owned_deployments_not_the_stale_status() -> None:
    # Right after the patch the SeldonDeployment still says Available (the operator
    # writes no observedGeneration); only the Deployments tell the truth.
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=4)})
    cluster.seed(build_seldon_deployment(V1))
    assert cluster.stored()["status"]["state"] == "Available"
    assert "observedGeneration" not in cluster.stored()["status"]
    clock = FakeClock(cluster)
    result = deployer(cluster, clock).deploy(V2)
    assert cluster.verbs().count("list") == 5
    assert clock.sleeps == [5.0, 5.0, 5.0, 5.0]
    assert result.served_version == "v2" and result.succeeded
    (deployment,) = (s.obj for s in cluster.deployments.values())
    assert fake_seldon._template_version(deployment) == "v2"
    assert deployment["status"]["availableReplicas"] == deployment["spec"]["replicas"] == 2


def test_first_deploy_creates_from_the_builder_and_waits() -> None:
    cluster = FakeCluster(rollouts={"v1": Rollout(converge_after=2)})
    result = deployer(cluster).deploy(V1)
    assert cluster.verbs() == ["get", "create", "list", "list", "list", "get"]
    assert cluster.calls[1][1] == build_seldon_deployment(V1)
    assert result.created and result.previous_version is None and result.served_version == "v1"


def test_a_rollout_that_never_converges_times_out_and_rolls_back() -> None:
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=None)})
    cluster.seed(build_seldon_deployment(V1))
    clock = FakeClock(cluster)
    with pytest.raises(DeploymentUnavailable, match=r"did not roll out within 30 s") as caught:
        deployer(cluster, clock, timeout=30.0).deploy(V2)
    assert clock.now == pytest.approx(30.0)
    assert "Rolled back to the previous version v1" in str(caught.value)
    result = caught.value.result
    assert result is not None and result.rolled_back and result.served_version == "v1"
    assert served_versions(cluster.stored()) == {"main": "v1"}
    assert cluster.stored()["metadata"]["annotations"][ANNOTATION_FAILED_VERSION] == "v2"


def test_progress_deadline_exceeded_rolls_back_before_the_timeout() -> None:
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=None, deadline_after=2)})
    cluster.seed(build_seldon_deployment(V1))
    clock = FakeClock(cluster)
    with pytest.raises(DeploymentUnavailable, match="has timed out progressing"):
        deployer(cluster, clock, timeout=600.0).deploy(V2)
    assert clock.now == pytest.approx(10.0)
    assert served_versions(cluster.stored()) == {"main": "v1"}
    cluster.step()
    assert set(deployment_versions(cluster).values()) == {"v1"}


def test_a_failed_first_deploy_has_nothing_to_roll_back_and_is_marked() -> None:
    cluster = FakeCluster(rollouts={"v1": Rollout(converge_after=None, deadline_after=1)})
    with pytest.raises(
        DeploymentUnavailable, match="no previous version to roll back to"
    ) as caught:
        deployer(cluster).deploy(V1)
    assert caught.value.result is not None and caught.value.result.served_version is None
    assert cluster.stored()["metadata"]["annotations"][ANNOTATION_FAILED_VERSION] == "v1"


# 2. later deploys send a narrow JSON Patch --------------------------------------------


def test_later_rollouts_send_a_narrow_json_patch_that_keeps_the_overlay(k8s: Any) -> None:
    cluster = FakeCluster()
    seeded = cluster.seed(prod_overlay(k8s))
    deployer(cluster).deploy(V2)
    (patch,) = cluster.patches()
    assert patch["content_type"] == "application/json-patch+json"
    operations = patch["body"]
    assert operations[0] == {
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": seeded["metadata"]["resourceVersion"],
    }
    replaced = {op["path"] for op in operations if op["op"] == "replace"}
    assert replaced == {
        "/metadata/labels/closedloop.io~1model-version",
        "/metadata/annotations/closedloop.io~1model-version",
        "/spec/predictors/0/labels/version",
        "/spec/predictors/0/labels/closedloop.io~1model-version",
        "/spec/predictors/0/graph/parameters/2/value",
        "/spec/predictors/0/componentSpecs/0/metadata/labels/closedloop.io~1model-version",
        "/spec/predictors/0/componentSpecs/0/spec/containers/0/env/2/value",
        "/spec/predictors/0/componentSpecs/0/spec/containers/1/args/15",
    }
    assert {op["op"] for op in operations} == {"test", "replace", "add"}
    stored = cluster.stored()
    assert served_versions(stored) == {"main": "v2"}
    assert without_versions(stored) == without_versions(seeded)
    # what the overlay set, spelled out
    component = stored["spec"]["predictors"][0]["componentSpecs"][0]
    assert component["hpaSpec"]["minReplicas"] == 2 and component["hpaSpec"]["maxReplicas"] == 10
    model, sidecar = component["spec"]["containers"]
    assert {e["name"]: e.get("value") for e in model["env"]}["GUNICORN_WORKERS"] == "2"
    assert model["resources"]["limits"]["memory"] == "3Gi"
    assert (
        model["image"]
        == seeded["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["image"]
    )
    assert stored["metadata"]["labels"]["closedloop.io/environment"] == "prod"
    assert json.loads(
        {e["name"]: e.get("value") for e in model["env"]}["PREDICTIVE_UNIT_PARAMETERS"]
    )[2] == {
        "name": "version",
        "value": "v2",
        "type": "STRING",
    }
    assert sidecar["args"][sidecar["args"].index("--model-version") + 1] == "v2"


def test_rollback_is_the_same_narrow_patch_and_keeps_the_overlay(k8s: Any) -> None:
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=None, deadline_after=2)})
    seeded = cluster.seed(prod_overlay(k8s))
    with pytest.raises(DeploymentUnavailable):
        deployer(cluster).deploy(V2)
    forward, back = cluster.patches()
    assert back["content_type"] == "application/json-patch+json"
    assert not any(op["path"] == "/metadata/resourceVersion" for op in back["body"]), (
        "a rollback must survive the operator's status writes"
    )
    assert {op["path"] for op in back["body"] if op["op"] == "replace"} == {
        op["path"] for op in forward["body"] if op["op"] == "replace"
    }
    stored = cluster.stored()
    assert served_versions(stored) == served_versions(seeded) == {"main": "champion"}
    assert without_versions(stored) == without_versions(seeded)
    assert stored["metadata"]["labels"][LABEL_MODEL_VERSION] == "champion"


def test_a_write_between_read_and_patch_is_re_read_and_retried() -> None:
    cluster = FakeCluster()
    cluster.seed(build_seldon_deployment(V1))
    moved = api_error(
        422,
        "Unprocessable Entity",
        message="testing value /metadata/resourceVersion failed: test failed",
    )
    cluster.errors["patch"] = [moved, None]
    result = deployer(cluster).deploy(V2)
    assert cluster.verbs()[:4] == ["get", "patch", "get", "patch"]
    assert result.served_version == "v2"


def test_a_patch_that_keeps_losing_the_race_gives_up_clearly() -> None:
    cluster = FakeCluster()
    cluster.seed(build_seldon_deployment(V1))
    conflict = api_error(409, "Conflict", message="the object has been modified")
    cluster.errors["patch"] = [conflict, conflict, conflict]
    with pytest.raises(DeploymentConflict, match="kept changing under 3 patch attempts"):
        deployer(cluster).deploy(V2)
    assert cluster.verbs().count("patch") == 3
    assert served_versions(cluster.stored()) == {"main": "v1"}


def test_a_validation_422_is_not_retried() -> None:
    cluster = FakeCluster()
    cluster.seed(build_seldon_deployment(V1))
    rejected = api_error(
        422, "Unprocessable Entity", message="admission webhook denied: spec.predictors: invalid"
    )
    cluster.errors["patch"] = [rejected]
    with pytest.raises(DeploymentInvalid, match="admission webhook denied"):
        deployer(cluster).deploy(V2)
    assert cluster.verbs().count("patch") == 1


def test_canary_start_and_promote_touch_only_predictors_and_versions() -> None:
    cluster = FakeCluster()
    cluster.seed(build_seldon_deployment(V1))
    canary = rollout(V1, "v2", traffic_percent=25)
    deployer(cluster).deploy(canary)
    stored = cluster.stored()
    assert served_versions(stored) == {"main": "v1", "canary": "v2"}
    assert [p["traffic"] for p in stored["spec"]["predictors"]] == [75, 25]
    deployer(cluster).deploy(promote(canary))
    (predictor,) = cluster.stored()["spec"]["predictors"]
    assert predictor["labels"]["version"] == "v2" and predictor["traffic"] == 100
    assert "closedloop.io/challenger-version" not in cluster.stored()["metadata"]["annotations"]
    cluster.step()
    assert set(deployment_versions(cluster).values()) == {"v2"}


# 3. the service URL ---------------------------------------------------------------------


def test_the_url_is_the_operators_address_not_a_guessed_service() -> None:
    cluster = FakeCluster()
    cluster.seed(build_seldon_deployment(V1))
    info = SeldonDeployer(V1, deployer(cluster)).deploy("tabular-classifier", "v2")
    assert info.url == SERVICE
    assert "closedloop-main" in cluster.services


def test_without_an_address_the_url_is_the_predictor_service() -> None:
    built = build_seldon_deployment(V1)
    assert service_url(built, NAMESPACE) == SERVICE
    long = copy.deepcopy(built)
    long["metadata"]["name"] = "x" * 60
    assert service_url(long, NAMESPACE).startswith("http://seldon-")


def test_status_reports_the_rollout_not_the_stale_state() -> None:
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=None)})
    cluster.seed(build_seldon_deployment(V1))
    cluster.custom.api_client.call_api(
        "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
        "PATCH",
        path_params={
            "group": "machinelearning.seldon.io",
            "version": "v1",
            "namespace": NAMESPACE,
            "plural": "seldondeployments",
            "name": "closedloop",
        },
        header_params={"Content-Type": "application/merge-patch+json"},
        body={"spec": build_seldon_deployment(V2)["spec"]},
    )
    info = SeldonDeployer(V1, deployer(cluster)).status()
    assert info.serving_version == "v2" and info.ready is False
    assert info.url == SERVICE


# 4. registry pointer and retries ------------------------------------------------------------


class FakeRegistry:
    def __init__(self) -> None:
        self.promoted: list[tuple[str, str, str]] = []

    def promote(self, model_name: str, version: str, reason: str) -> None:
        self.promoted.append((model_name, version, reason))


def test_the_champion_moves_only_after_the_rollout_succeeded() -> None:
    cluster = FakeCluster(rollouts={"v3": Rollout(converge_after=None, deadline_after=1)})
    cluster.seed(build_seldon_deployment(V1))
    registry = FakeRegistry()
    seldon = SeldonDeployer(V1, deployer(cluster))
    result = roll_out_then_promote(seldon, registry, "tabular-classifier", "v2", "gate passed")
    assert result.served_version == "v2" and result.previous_version == "v1"
    assert registry.promoted == [("tabular-classifier", "v2", "gate passed")]
    with pytest.raises(DeploymentUnavailable) as caught:
        roll_out_then_promote(seldon, registry, "tabular-classifier", "v3", "gate passed")
    assert caught.value.result is not None and caught.value.result.rolled_back
    assert caught.value.result.served_version == "v2"
    assert len(registry.promoted) == 1


def test_a_retry_of_a_failed_rollout_fails_fast_without_writing() -> None:
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=None)})
    cluster.seed(build_seldon_deployment(V1))
    with pytest.raises(DeploymentUnavailable):
        deployer(cluster, timeout=30.0).deploy(V2)
    cluster.calls.clear()
    clock = FakeClock(cluster)
    with pytest.raises(VersionAlreadyFailed, match="v2 already failed to roll out") as caught:
        deployer(cluster, clock).deploy(V2)
    assert cluster.verbs() == ["get"] and clock.now == 0.0
    assert "retry_failed=True" in str(caught.value)


def test_retry_failed_rolls_the_version_out_again_and_clears_the_mark() -> None:
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=None, deadline_after=1)})
    cluster.seed(build_seldon_deployment(V1))
    with pytest.raises(DeploymentUnavailable):
        deployer(cluster).deploy(V2)
    cluster.rollouts["v2"] = Rollout(converge_after=1)
    cluster.step()  # the operator applies the rollback before anyone retries
    result = deployer(cluster).deploy(V2, retry_failed=True)
    assert result.served_version == "v2"
    assert ANNOTATION_FAILED_VERSION not in cluster.stored()["metadata"]["annotations"]


def test_retry_failed_after_a_failed_first_deploy_clears_the_mark_and_waits() -> None:
    cluster = FakeCluster(rollouts={"v1": Rollout(converge_after=None, deadline_after=1)})
    with pytest.raises(DeploymentUnavailable):
        deployer(cluster).deploy(V1)
    with pytest.raises(VersionAlreadyFailed):
        deployer(cluster).deploy(V1)
    cluster.rollouts["v1"] = Rollout(converge_after=1)  # say, the missing Secret was created
    cluster.step()  # and the pods came up
    result = deployer(cluster).deploy(V1, retry_failed=True)
    assert result.served_version == "v1" and result.changed is False
    assert ANNOTATION_FAILED_VERSION not in cluster.stored()["metadata"]["annotations"]


def test_a_resumed_rollout_is_waited_on_not_patched_again() -> None:
    # The step was killed after its patch; the retry finds the target already asked for.
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=3)})
    cluster.seed(build_seldon_deployment(V1))
    live = cluster.stored()
    live["spec"] = build_seldon_deployment(V2)["spec"]
    live["metadata"]["annotations"][ANNOTATION_PREVIOUS_VERSION] = "v1"
    result = deployer(cluster).deploy(V2)
    assert "patch" not in cluster.verbs() and cluster.verbs().count("list") == 4
    assert result.served_version == "v2" and result.changed is False


def test_a_resumed_rollout_that_fails_rolls_back_to_the_recorded_version() -> None:
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=None, deadline_after=1)})
    seeded = cluster.seed(build_seldon_deployment(V1))
    target = build_seldon_deployment(V2)
    live = cluster.stored()
    live["spec"] = target["spec"]
    live["metadata"]["annotations"][ANNOTATION_PREVIOUS_VERSION] = "v1"
    with pytest.raises(DeploymentUnavailable, match="Rolled back to the previous version v1"):
        deployer(cluster).deploy(V2)
    assert (cluster.verbs().count("patch"), served_versions(cluster.stored())) == (
        1,
        {"main": "v1"},
    )
    assert without_versions(cluster.stored())["spec"] == without_versions(seeded)["spec"]


def test_a_rollback_does_not_undo_someone_elses_deploy() -> None:
    cluster = FakeCluster(rollouts={"v2": Rollout(converge_after=None, deadline_after=2)})
    cluster.seed(build_seldon_deployment(V1))
    original = cluster.apps.list_namespaced_deployment

    def meanwhile(namespace: str, **kwargs: Any) -> Any:
        live = cluster.stored()
        if served_versions(live) == {"main": "v2"}:
            for parameter in live["spec"]["predictors"][0]["graph"]["parameters"]:
                if parameter["name"] == "version":
                    parameter["value"] = "v9"
        return original(namespace, **kwargs)

    cluster.apps.list_namespaced_deployment = meanwhile  # type: ignore[method-assign]
    with pytest.raises(DeployError, match=r"now serves .*v9.* left as it is"):
        deployer(cluster).deploy(V2)
    assert served_versions(cluster.stored()) == {"main": "v9"}


def test_another_model_is_refused() -> None:
    cluster = FakeCluster()
    cluster.seed(build_seldon_deployment(V1))
    other = SeldonDeploymentConfig(model_name="other-model", model_version="v2")
    with pytest.raises(DeployError, match="serves model 'tabular-classifier', not 'other-model'"):
        deployer(cluster).deploy(other)
    assert "patch" not in cluster.verbs()


# API errors ------------------------------------------------------------------------------

CRD_MISSING = api_error(404, "Not Found")
CRD_MISSING.body = "404 page not found"


@pytest.mark.parametrize(
    ("verb", "error", "expected", "fragment"),
    [
        (
            "create",
            api_error(409, "Conflict", message="already exists"),
            DeploymentConflict,
            "created by someone else",
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
            "list on deployments.apps",
        ),
        (
            "list",
            api_error(403, "Forbidden", message="cannot list deployments"),
            DeployForbidden,
            "cannot list deployments",
        ),
        ("get", api_error(500, "Internal Server Error"), DeployError, "HTTP 500"),
    ],
)
def test_api_errors_map_to_clear_exceptions(
    verb: str, error: Exception, expected: type[DeployError], fragment: str
) -> None:
    cluster = FakeCluster(errors={verb: [error]})
    with pytest.raises(expected) as caught:
        deployer(cluster).deploy(V1)
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
    cluster = FakeCluster(errors={"get": [missing]})
    with pytest.raises(DeploymentNotFound, match='namespaces "closedloop" not found'):
        deployer(cluster).deploy(V1)
    assert cluster.verbs() == ["get"]


def test_an_unreachable_api_server_is_a_deploy_error() -> None:
    cluster = FakeCluster(errors={"get": [MaxRetryError(None, "/apis", "refused")]})
    with pytest.raises(DeployError, match="cannot reach the Kubernetes API server"):
        deployer(cluster).deploy(V1)


def test_namespace_mismatch_is_refused_before_any_call() -> None:
    cluster = FakeCluster()
    other = SeldonDeploymentConfig(namespace="elsewhere")
    with pytest.raises(DeployError, match="differs from the deployer"):
        deployer(cluster).deploy(other)
    with pytest.raises(DeployError, match="this deployer manages"):
        deployer(cluster).apply(build_seldon_deployment(other))
    assert cluster.calls == []
