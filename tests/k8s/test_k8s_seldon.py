"""The SeldonDeployment builder: CRD schema, Pod Security, shape, rollout, golden file."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from closedloop.deploy import seldon
from closedloop.deploy.seldon import (
    Autoscaling,
    Challenger,
    ResourceSpec,
    SeldonDeploymentConfig,
    ServingImages,
    build_seldon_deployment,
)

CONFIG = SeldonDeploymentConfig(model_version="v1")
VARIANTS = {
    "base": seldon.BASE_CONFIG,
    "single": CONFIG,
    "canary": seldon.rollout(CONFIG, "v2", mode="canary", traffic_percent=20),
    "shadow": seldon.rollout(CONFIG, "v2", mode="shadow", traffic_percent=100),
}


def _containers(predictor: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = predictor["componentSpecs"][0]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {env["name"]: env for env in container["env"]}


# (c) builder output against the CRD, (d) restricted profile -----------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_built_resource_matches_the_crd(variant: str, validate_seldon: Any) -> None:
    assert validate_seldon(build_seldon_deployment(VARIANTS[variant])) == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_built_pods_meet_the_restricted_profile(variant: str, k8s: SimpleNamespace) -> None:
    doc = build_seldon_deployment(VARIANTS[variant])
    specs = list(k8s.pod_specs(doc))
    assert len(specs) == len(doc["spec"]["predictors"])
    for where, spec, _ in specs:
        assert k8s.restricted_violations(spec, where, container_level=True) == []


def test_schema_check_rejects_unknown_and_too_new_fields(validate_seldon: Any) -> None:
    doc = build_seldon_deployment(CONFIG)
    typo = copy.deepcopy(doc)
    typo["spec"]["predictors"][0]["graph"]["loger"] = {"mode": "request"}
    assert any("loger" in error for error in validate_seldon(typo))
    # preStop.sleep is newer than the CRD's PodSpec: the API server would prune it,
    # leaving an empty handler. The strict schema catches that.
    sleep = copy.deepcopy(doc)
    model = sleep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]
    model["lifecycle"]["preStop"] = {"sleep": {"seconds": 10}}
    assert any("sleep" in error for error in validate_seldon(sleep))
    wrong_metric = copy.deepcopy(doc)
    hpa = wrong_metric["spec"]["predictors"][0]["componentSpecs"][0]["hpaSpec"]
    hpa["metricsv2"][0]["resource"]["targetAverageUtilization"] = 70
    assert validate_seldon(wrong_metric) != []


def test_every_typed_model_parameter_matches_the_crd(validate_seldon: Any) -> None:
    """The graph takes the whole typed list, non-string types included, as the CRD says."""
    from closedloop.serving.parameters import seldon_parameters

    doc = build_seldon_deployment(CONFIG)
    typed = seldon_parameters(
        {
            "registry_uri": CONFIG.registry_uri,
            "model_name": CONFIG.model_name,
            "version": "v1",
            "poll_seconds": 2.5,
            "max_rows": 500,
            "max_request_bytes": 1 << 20,
        }
    )
    assert {p["type"] for p in typed} == {"STRING", "DOUBLE", "INT"}
    doc["spec"]["predictors"][0]["graph"]["parameters"] = typed
    assert validate_seldon(doc) == []
    doc["spec"]["predictors"][0]["graph"]["parameters"][3]["value"] = 2.5  # not a string
    assert validate_seldon(doc) != []


# (h) one source of truth ----------------------------------------------------------------------


def test_committed_base_manifest_is_the_generator_output(k8s: SimpleNamespace) -> None:
    committed = (k8s.repo / "manifests" / "base" / "seldondeployment.yaml").read_text()
    assert committed == seldon.render_base_manifest(), (
        "manifests/base/seldondeployment.yaml is stale: run "
        "`python -m closedloop.deploy.seldon > manifests/base/seldondeployment.yaml`"
    )


def test_base_manifest_ignores_image_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOSEDLOOP_SERVING_IMAGE", "registry.example/serving:dev")
    text = seldon.render_base_manifest()
    assert "registry.example" not in text
    assert seldon.images.DEFAULT_SERVING_IMAGE in text


def test_rendered_base_equals_builder_output_modulo_kustomize_labels(
    rendered: dict[str, list[dict]],
) -> None:
    (sdep,) = [d for d in rendered["base"] if d["kind"] == "SeldonDeployment"]
    built = build_seldon_deployment(seldon.BASE_CONFIG)
    assert sdep["spec"] == built["spec"]
    assert sdep["metadata"]["annotations"] == built["metadata"]["annotations"]
    assert built["metadata"]["labels"].items() <= sdep["metadata"]["labels"].items()


# shape ----------------------------------------------------------------------------------------


def test_model_container_runs_the_wrapper_with_our_class() -> None:
    doc = build_seldon_deployment(CONFIG)
    (predictor,) = doc["spec"]["predictors"]
    containers = _containers(predictor)
    model = containers[predictor["graph"]["name"]]  # container name == graph node name
    env = _env(model)
    assert env["MODEL_NAME"]["value"] == "closedloop.serving.model.ClosedLoopModel"
    assert env["SERVICE_TYPE"]["value"] == "MODEL"
    assert env["OMP_NUM_THREADS"]["value"] == "1"
    assert int(env["GUNICORN_WORKERS"]["value"]) == CONFIG.gunicorn_workers
    parameters = json.loads(env["PREDICTIVE_UNIT_PARAMETERS"]["value"])
    assert parameters == predictor["graph"]["parameters"]
    assert {p["name"]: p["value"] for p in parameters} == {
        "registry_uri": "s3://closedloop/registry",
        "model_name": "tabular-classifier",
        "version": "v1",
    }
    assert all(p["type"] == "STRING" for p in parameters)
    assert model["readinessProbe"]["httpGet"] == {
        "path": "/health/status",
        "port": 9000,
        "scheme": "HTTP",
    }
    assert model["livenessProbe"]["httpGet"]["path"] == "/health/ping"
    assert model["lifecycle"]["preStop"]["exec"]["command"] == ["/bin/sleep", "10"]
    assert {p["name"]: p["containerPort"] for p in model["ports"]} == {
        "http": 9000,
        "grpc": 5000,
        "metrics": 6000,
    }


def test_request_logger_posts_to_the_sidecar() -> None:
    doc = build_seldon_deployment(CONFIG)
    (predictor,) = doc["spec"]["predictors"]
    # "all": feedback events, which fill the labelled archive, are sent only in response/all modes.
    assert predictor["graph"]["logger"] == {"mode": "all", "url": "http://localhost:8080/"}
    sidecar = _containers(predictor)[seldon.SIDECAR_CONTAINER]
    args = sidecar["args"]
    assert args[:2] == ["sidecar", "serve"]
    flags = dict(zip(args[2::2], args[3::2], strict=True))
    assert flags["--host"] == "127.0.0.1"
    assert flags["--port"] == "8080"
    assert flags["--model-version"] == "v1"
    assert flags["--registry-uri"] == CONFIG.registry_uri
    assert flags["--policy"] == "/etc/closedloop/policy/policy.json"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["port"] == CONFIG.sidecar_metrics_port
    sidecar_sleep = int(sidecar["lifecycle"]["preStop"]["exec"]["command"][1])
    assert sidecar_sleep > CONFIG.drain_seconds
    grace = predictor["componentSpecs"][0]["spec"]["terminationGracePeriodSeconds"]
    assert grace > sidecar_sleep


def test_autoscaling_disruption_budget_and_executor_resources() -> None:
    config = SeldonDeploymentConfig(autoscaling=Autoscaling(2, 6, 60))
    (predictor,) = build_seldon_deployment(config)["spec"]["predictors"]
    hpa = predictor["componentSpecs"][0]["hpaSpec"]
    assert hpa["minReplicas"] == 2 and hpa["maxReplicas"] == 6
    assert hpa["metricsv2"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 60},
            },
        }
    ]
    assert predictor["componentSpecs"][0]["pdbSpec"] == {"maxUnavailable": 1}
    assert set(predictor["svcOrchSpec"]["resources"]) == {"requests", "limits"}


def test_s3_credentials_only_through_secret_refs() -> None:
    doc = build_seldon_deployment(CONFIG)
    text = json.dumps(doc)
    for container in _containers(doc["spec"]["predictors"][0]).values():
        env = _env(container)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env[name]
            assert env[name]["valueFrom"]["secretKeyRef"] == {
                "name": "closedloop-s3-credentials",
                "key": name,
            }
        assert env["CLOSEDLOOP_S3_ENDPOINT"]["valueFrom"]["configMapKeyRef"]["optional"] is True
    assert "stringData" not in text and '"data"' not in text


def test_model_version_in_labels_and_annotations() -> None:
    doc = build_seldon_deployment(VARIANTS["canary"])
    metadata = doc["metadata"]
    assert metadata["labels"][seldon.LABEL_MODEL_VERSION] == "v1"
    assert metadata["annotations"][seldon.LABEL_MODEL_VERSION] == "v1"
    assert metadata["annotations"][seldon.ANNOTATION_CHALLENGER_VERSION] == "v2"
    assert metadata["annotations"][seldon.ANNOTATION_ROLLOUT] == "canary"
    for predictor in doc["spec"]["predictors"]:
        version = predictor["labels"]["version"]
        pod_labels = predictor["componentSpecs"][0]["metadata"]["labels"]
        assert pod_labels[seldon.LABEL_MODEL_VERSION] == version
        assert predictor["labels"][seldon.LABEL_MODEL_VERSION] == version
        flags = _containers(predictor)[seldon.SIDECAR_CONTAINER]["args"]
        assert flags[flags.index("--model-version") + 1] == version
        parameters = predictor["graph"]["parameters"]
        assert {p["name"]: p["value"] for p in parameters}["version"] == version


# rollout --------------------------------------------------------------------------------------


def test_canary_splits_traffic() -> None:
    main, canary = build_seldon_deployment(VARIANTS["canary"])["spec"]["predictors"]
    assert (main["name"], main["traffic"], main["labels"]["version"]) == ("main", 80, "v1")
    assert (canary["name"], canary["traffic"], canary["labels"]["version"]) == ("canary", 20, "v2")
    assert "shadow" not in canary


def test_shadow_mirrors_without_taking_traffic() -> None:
    main, shadow = build_seldon_deployment(VARIANTS["shadow"])["spec"]["predictors"]
    assert main["traffic"] == 100
    assert shadow["shadow"] is True and shadow["name"] == "shadow"
    assert shadow["labels"]["version"] == "v2"


def test_promote_and_abort_are_pure() -> None:
    canary = VARIANTS["canary"]
    promoted = seldon.promote(canary)
    assert promoted.model_version == "v2" and promoted.challenger is None
    assert canary.challenger == Challenger("v2", "canary", 20)  # unchanged
    assert seldon.abort_rollout(canary) == CONFIG
    with pytest.raises(ValueError, match="no challenger"):
        seldon.promote(CONFIG)


# validation at build time ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Closed_Loop"}, "DNS label"),
        ({"model_version": "v1/beta"}, "label value"),
        ({"registry_uri": "/tmp/registry"}, "s3://"),
        ({"sidecar_port": 9000}, "must differ"),
        ({"sidecar_port": 80}, "unprivileged"),
        ({"gunicorn_workers": 0}, "gunicorn_workers"),
        ({"challenger": Challenger("v1")}, "already served"),
        ({"trigger_url": "closedloop-trigger:8090"}, "http"),
    ],
)
def test_config_rejects_bad_values(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SeldonDeploymentConfig(**{"model_version": "v1", **changes})


def test_parts_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="exceeds its limit"):
        ResourceSpec("2", "1Gi", "1", "2Gi")
    with pytest.raises(ValueError, match="not a resource quantity"):
        ResourceSpec("one", "1Gi", "1", "2Gi")
    with pytest.raises(ValueError, match="max_replicas"):
        Autoscaling(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match=r"1\.\.99"):
        Challenger("v2", "canary", 100)
    with pytest.raises(ValueError, match="image reference"):
        ServingImages(serving="bad image")
    assert seldon.parse_quantity("1536Mi") == 1536 * 2**20
    assert seldon.parse_quantity("250m") * 4 == 1


def test_importing_the_builder_and_deployer_needs_no_kubernetes_client() -> None:
    code = (
        "import sys, closedloop.deploy.seldon, closedloop.deploy.kubernetes as k;"
        "from closedloop.deploy.seldon import build_seldon_deployment, SeldonDeploymentConfig;"
        "build_seldon_deployment(SeldonDeploymentConfig());"
        "k.KubernetesDeployer('closedloop');"
        "assert 'kubernetes' not in sys.modules, 'kubernetes imported eagerly';"
        "assert 'kfp' not in sys.modules, 'kfp imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
