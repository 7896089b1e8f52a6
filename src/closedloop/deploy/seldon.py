"""A typed builder for the Seldon Core v1 ``SeldonDeployment`` that serves a model version.

The resource is assembled from frozen dataclasses, never from text templates, and is
returned as plain JSON-compatible data. The same function produces the resource the
Kubernetes deploy backend applies and the one committed as
``manifests/base/seldondeployment.yaml`` (:func:`render_base_manifest`), so the two
cannot drift apart.

One pod per replica holds three containers: the model server (Seldon's python wrapper
running :data:`MODEL_CLASS`), the drift-detector sidecar, and the Seldon executor that
the operator injects. The executor's request logger posts every request as a CloudEvent
to the sidecar on ``localhost``.

Two facts about the Seldon Core v1 operator (1.19) shape the security settings:

* it replaces the pod-level ``securityContext`` with its own (SeldonIO/seldon-core#4711),
  so every setting the restricted Pod Security profile asks for is repeated on each
  container we define;
* the executor container it injects sets neither ``capabilities.drop: [ALL]`` nor a
  seccomp profile (SeldonIO/seldon-core#5481), which is why the namespace enforces the
  ``baseline`` profile and only warns and audits on ``restricted``.

Regenerate the committed manifest with ``python -m closedloop.deploy.seldon``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

from closedloop import images
from closedloop.serving.parameters import seldon_parameters
from closedloop.storage.settings import (
    S3_SECRET,
    S3_SECRET_KEYS,
    S3_SETTINGS_CONFIG_MAP,
    S3_SETTINGS_KEYS,
)

GROUP = "machinelearning.seldon.io"
VERSION = "v1"
PLURAL = "seldondeployments"
KIND = "SeldonDeployment"
API_VERSION = f"{GROUP}/{VERSION}"

MODEL_CLASS = "closedloop.serving.model.ClosedLoopModel"
"""Import path of the Seldon user-model class the serving image runs."""

MODEL_CONTAINER = "model"
"""Name of the model container; Seldon requires it to equal the graph node name."""
SIDECAR_CONTAINER = "drift-detector"

MODEL_HTTP_PORT = 9000
MODEL_GRPC_PORT = 5000
MODEL_METRICS_PORT = 6000

RUN_AS_USER = 10001
"""Numeric UID (and GID) of the non-root user baked into every image."""

POLICY_DIR = "/etc/closedloop/policy"
POLICY_FILE = "policy.json"
"""Key of the drift-policy ConfigMap the sidecar and the trigger both read."""
SIDECAR_STATE_DIR = "/var/lib/closedloop/sidecar"

LABEL_PREFIX = "closedloop.io/"
LABEL_MODEL_NAME = LABEL_PREFIX + "model-name"
LABEL_MODEL_VERSION = LABEL_PREFIX + "model-version"
LABEL_S3_CLIENT = LABEL_PREFIX + "s3-client"
ANNOTATION_REGISTRY_URI = LABEL_PREFIX + "registry-uri"
ANNOTATION_MODEL_CLASS = LABEL_PREFIX + "model-class"
ANNOTATION_CHALLENGER_VERSION = LABEL_PREFIX + "challenger-version"
ANNOTATION_ROLLOUT = LABEL_PREFIX + "rollout"
ANNOTATION_CHALLENGER_TRAFFIC = LABEL_PREFIX + "challenger-traffic-percent"

COMPONENT_LABEL_VALUE = "model-server"
"""``app.kubernetes.io/component`` of the serving pods (NetworkPolicies select on it)."""

CHAMPION = "champion"
"""Version alias the model server and the sidecar resolve through the registry's
champion pointer once, at start-up; used by the committed base manifest."""

PredictorRole = Literal["main", "canary", "shadow"]
RolloutMode = Literal["canary", "shadow"]
PullPolicy = Literal["IfNotPresent", "Always", "Never"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[numkMGTPE])?$"
)
_SUFFIX_FACTOR = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def _check_dns_label(what: str, value: str) -> None:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} must be a DNS label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )


def _check_label_value(what: str, value: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(
            f"{what} {value!r} must be a Kubernetes label value: letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit, at most 63 characters"
        )


def _check_port(what: str, port: int) -> None:
    if not 1024 <= port <= 65535:
        raise ValueError(f"{what} {port} must be an unprivileged port in 1024..65535")


def parse_quantity(quantity: str) -> Decimal:
    """Parse a Kubernetes resource quantity such as ``500m``, ``2`` or ``1Gi``.

    Args:
        quantity: The quantity as written in a manifest (no sign, no exponent form).

    Returns:
        Its value in base units (cores or bytes).

    Raises:
        ValueError: If ``quantity`` is not a quantity this builder accepts.
    """
    match = _QUANTITY.match(quantity)
    if match is None:
        raise ValueError(f"{quantity!r} is not a resource quantity such as '500m', '2' or '1Gi'")
    return Decimal(match["number"]) * _SUFFIX_FACTOR[match["suffix"] or ""]


@dataclass(frozen=True)
class ResourceSpec:
    """CPU and memory requests and limits of one container.

    Attributes:
        cpu_request: Guaranteed CPU, e.g. ``"500m"``; the HPA's utilization is measured
            against it.
        memory_request: Guaranteed memory, e.g. ``"512Mi"``.
        cpu_limit: CPU ceiling.
        memory_limit: Memory ceiling; the container is killed above it.
    """

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def __post_init__(self) -> None:
        for kind, request, limit in (
            ("cpu", self.cpu_request, self.cpu_limit),
            ("memory", self.memory_request, self.memory_limit),
        ):
            if parse_quantity(request) <= 0:
                raise ValueError(f"{kind} request {request!r} must be positive")
            if parse_quantity(request) > parse_quantity(limit):
                raise ValueError(f"{kind} request {request!r} exceeds its limit {limit!r}")

    def to_dict(self) -> dict[str, dict[str, str]]:
        """Return the Kubernetes ``ResourceRequirements`` object."""
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


@dataclass(frozen=True)
class ServingImages:
    """Images of the two containers we define (the executor's comes from the operator).

    Attributes:
        serving: Model-server image (Seldon python wrapper + the package).
        monitor: Drift-detector sidecar image.
        pull_policy: ``imagePullPolicy`` of both containers.
    """

    serving: str = field(default_factory=lambda: images.SERVING_IMAGE)
    monitor: str = field(default_factory=lambda: images.MONITOR_IMAGE)
    pull_policy: PullPolicy = "IfNotPresent"

    def __post_init__(self) -> None:
        for what, ref in (("serving image", self.serving), ("monitor image", self.monitor)):
            if not ref or any(ch.isspace() for ch in ref):
                raise ValueError(f"{what} {ref!r} is not an image reference")


@dataclass(frozen=True)
class Autoscaling:
    """Horizontal pod autoscaling of each predictor on CPU utilization.

    Attributes:
        min_replicas: Lower bound of replicas.
        max_replicas: Upper bound of replicas.
        cpu_utilization: Target average CPU utilization, in percent of the requests.
    """

    min_replicas: int = 1
    max_replicas: int = 3
    cpu_utilization: int = 70

    def __post_init__(self) -> None:
        if self.min_replicas < 1:
            raise ValueError(f"min_replicas must be >= 1, got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas {self.max_replicas} is below min_replicas {self.min_replicas}"
            )
        if not 1 <= self.cpu_utilization <= 100:
            raise ValueError(f"cpu_utilization must be in 1..100, got {self.cpu_utilization}")


@dataclass(frozen=True)
class S3Access:
    """Where the pods find the S3 endpoint and credentials; no value is ever inlined.

    Attributes:
        credentials_secret: Secret with keys ``AWS_ACCESS_KEY_ID`` and
            ``AWS_SECRET_ACCESS_KEY``, created by the user; read via ``secretKeyRef``.
        settings_config_map: ConfigMap with optional keys ``endpoint`` (empty for AWS)
            and ``region``.
    """

    credentials_secret: str = S3_SECRET
    settings_config_map: str = S3_SETTINGS_CONFIG_MAP

    def __post_init__(self) -> None:
        _check_dns_label("credentials_secret", self.credentials_secret)
        _check_dns_label("settings_config_map", self.settings_config_map)


@dataclass(frozen=True)
class Challenger:
    """A second model version served next to the champion.

    Attributes:
        version: Registered version of the challenger.
        mode: ``canary`` sends it ``traffic_percent`` of the requests; ``shadow`` mirrors
            requests to it and discards its answers.
        traffic_percent: Share of traffic (canary, 1..99) or of mirrored requests
            (shadow, 1..100). Splitting needs an ingress that honours Seldon's
            ``traffic`` (Istio or Ambassador).
    """

    version: str
    mode: RolloutMode = "canary"
    traffic_percent: int = 10

    def __post_init__(self) -> None:
        _check_label_value("challenger version", self.version)
        if self.mode not in ("canary", "shadow"):
            raise ValueError(f"mode must be 'canary' or 'shadow', got {self.mode!r}")
        upper = 99 if self.mode == "canary" else 100
        if not 1 <= self.traffic_percent <= upper:
            raise ValueError(
                f"{self.mode} traffic_percent must be in 1..{upper}, got {self.traffic_percent}"
            )


@dataclass(frozen=True)
class SeldonDeploymentConfig:
    """Everything that varies between two SeldonDeployments of this project.

    Attributes:
        name: Name of the SeldonDeployment (a DNS label).
        namespace: Namespace it lives in.
        model_name: Registered model name, passed to the model server and the sidecar.
        model_version: Registered version served by the main predictor, or
            :data:`CHAMPION` to follow the registry's champion pointer at start-up.
        registry_uri: Root of the model registry, ``s3://bucket/prefix``.
        images: Container images.
        autoscaling: HPA bounds and target.
        model_resources: Requests and limits of the model server.
        sidecar_resources: Requests and limits of the drift-detector sidecar.
        executor_resources: Requests and limits of the Seldon executor (``svcOrchSpec``).
        gunicorn_workers: Model-server worker processes (each single-threaded for OpenMP).
        sidecar_port: Port the sidecar receives request-logger CloudEvents on,
            bound to 127.0.0.1 (only the executor in the same pod posts to it).
        sidecar_metrics_port: Port of the sidecar's ``/metrics`` and ``/healthz``.
        trigger_url: URL the sidecar sends drift CloudEvents to.
        s3: Secret and ConfigMap names for S3 access.
        drift_policy_config_map: ConfigMap holding :data:`POLICY_FILE`.
        service_account: ServiceAccount of the serving pods (no API token is mounted).
        drain_seconds: ``preStop`` sleep of the model server, so in-flight requests
            finish before it gets SIGTERM; the sidecar waits 5 s longer to receive the
            last logged requests.
        challenger: Optional canary or shadow predictor.
    """

    name: str = "closedloop"
    namespace: str = "closedloop"
    model_name: str = "tabular-classifier"
    model_version: str = CHAMPION
    registry_uri: str = "s3://closedloop/registry"
    images: ServingImages = field(default_factory=ServingImages)
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    model_resources: ResourceSpec = field(
        default_factory=lambda: ResourceSpec("500m", "512Mi", "1", "1Gi")
    )
    sidecar_resources: ResourceSpec = field(
        default_factory=lambda: ResourceSpec("250m", "768Mi", "1", "1536Mi")
    )
    executor_resources: ResourceSpec = field(
        default_factory=lambda: ResourceSpec("100m", "128Mi", "500m", "256Mi")
    )
    gunicorn_workers: int = 1
    sidecar_port: int = 8080
    sidecar_metrics_port: int = 9102
    trigger_url: str = "http://closedloop-trigger:8090/"
    s3: S3Access = field(default_factory=S3Access)
    drift_policy_config_map: str = "closedloop-drift-policy"
    service_account: str = "closedloop-serving"
    drain_seconds: int = 10
    challenger: Challenger | None = None

    def __post_init__(self) -> None:
        _check_dns_label("name", self.name)
        _check_dns_label("namespace", self.namespace)
        _check_label_value("model_name", self.model_name)
        _check_label_value("model_version", self.model_version)
        if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", self.registry_uri):
            raise ValueError(
                f"registry_uri {self.registry_uri!r} must look like s3://bucket/prefix"
            )
        if self.gunicorn_workers < 1:
            raise ValueError(f"gunicorn_workers must be >= 1, got {self.gunicorn_workers}")
        _check_port("sidecar_port", self.sidecar_port)
        _check_port("sidecar_metrics_port", self.sidecar_metrics_port)
        taken = {MODEL_HTTP_PORT, MODEL_GRPC_PORT, MODEL_METRICS_PORT, 8000, 5001}
        ports = {self.sidecar_port, self.sidecar_metrics_port}
        if len(ports) != 2 or ports & taken:
            raise ValueError(
                f"sidecar ports {sorted(ports)} must differ from each other and from the "
                f"ports the model server and the executor use ({sorted(taken)})"
            )
        if not self.trigger_url.startswith(("http://", "https://")):
            raise ValueError(f"trigger_url {self.trigger_url!r} must be an http(s) URL")
        _check_dns_label("drift_policy_config_map", self.drift_policy_config_map)
        _check_dns_label("service_account", self.service_account)
        if not 0 <= self.drain_seconds <= 120:
            raise ValueError(f"drain_seconds must be in 0..120, got {self.drain_seconds}")
        if self.challenger is not None and self.challenger.version == self.model_version:
            raise ValueError(
                f"challenger version {self.challenger.version!r} is the version already served"
            )

    @property
    def termination_grace_seconds(self) -> int:
        """Grace period: the sidecar's drain plus time to checkpoint its windows."""
        return self.drain_seconds + 5 + 30


def rollout(
    config: SeldonDeploymentConfig,
    challenger_version: str,
    *,
    mode: RolloutMode = "canary",
    traffic_percent: int = 10,
) -> SeldonDeploymentConfig:
    """Return ``config`` with a canary or shadow predictor serving ``challenger_version``.

    Args:
        config: The current configuration (its ``model_version`` stays the champion).
        challenger_version: Registered version to try.
        mode: ``canary`` (split traffic) or ``shadow`` (mirror traffic).
        traffic_percent: Canary share or shadow mirror percentage.

    Returns:
        A new configuration; ``config`` is unchanged.
    """
    challenger = Challenger(challenger_version, mode, traffic_percent)
    return replace(config, challenger=challenger)


def promote(config: SeldonDeploymentConfig) -> SeldonDeploymentConfig:
    """Return ``config`` with its challenger serving all traffic as the only predictor.

    Raises:
        ValueError: If ``config`` has no challenger.
    """
    if config.challenger is None:
        raise ValueError(f"{config.name} has no challenger to promote")
    return replace(config, model_version=config.challenger.version, challenger=None)


def abort_rollout(config: SeldonDeploymentConfig) -> SeldonDeploymentConfig:
    """Return ``config`` without its challenger: the champion alone serves again."""
    return replace(config, challenger=None)


def predictive_unit_parameters(
    config: SeldonDeploymentConfig, version: str
) -> list[dict[str, str]]:
    """Return the graph parameters that become the model class's constructor kwargs.

    Args:
        config: Deployment configuration.
        version: Model version this predictor serves.

    Returns:
        Seldon ``{name, value, type}`` entries for ``registry_uri``, ``model_name`` and
        ``version``, typed by :mod:`closedloop.serving.parameters`.
    """
    return seldon_parameters(
        {"registry_uri": config.registry_uri, "model_name": config.model_name, "version": version}
    )


def container_security_context() -> dict[str, Any]:
    """Return the restricted-profile security context set on every container we define."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    """Return the pod-level security context (repeated per container, see module docs)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _s3_env(s3: S3Access) -> list[dict[str, Any]]:
    # The same keys and variables as the pipeline steps (closedloop.storage.settings).
    # ConfigMap keys are optional: an absent key leaves the variable unset (AWS needs
    # no endpoint).
    settings = [
        {
            "name": env,
            "valueFrom": {
                "configMapKeyRef": {"name": s3.settings_config_map, "key": key, "optional": True}
            },
        }
        for key, env in S3_SETTINGS_KEYS.items()
    ]
    credentials = [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": s3.credentials_secret, "key": key}}}
        for key, env in S3_SECRET_KEYS.items()
    ]
    return settings + credentials


def _http_probe(
    path: str, port: int, *, period: int, failures: int, timeout: int = 3
) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _model_container(config: SeldonDeploymentConfig, version: str) -> dict[str, Any]:
    parameters = json.dumps(predictive_unit_parameters(config, version), separators=(",", ":"))
    return {
        "name": MODEL_CONTAINER,
        "image": config.images.serving,
        "imagePullPolicy": config.images.pull_policy,
        "env": [
            {"name": "MODEL_NAME", "value": MODEL_CLASS},
            {"name": "SERVICE_TYPE", "value": "MODEL"},
            {"name": "PREDICTIVE_UNIT_PARAMETERS", "value": parameters},
            {"name": "GUNICORN_WORKERS", "value": str(config.gunicorn_workers)},
            {"name": "GUNICORN_THREADS", "value": "1"},
            # XGBoost's OpenMP threads collapse under CPU contention: scale with workers.
            {"name": "OMP_NUM_THREADS", "value": "1"},
            # Keep custom metrics on /prometheus, out of every response body.
            {"name": "INCLUDE_METRICS_IN_CLIENT_RESPONSE", "value": "false"},
            # gunicorn keeps its control socket under $HOME; the root filesystem is read-only.
            {"name": "HOME", "value": "/tmp"},
            *_s3_env(config.s3),
        ],
        # Named ports pin the endpoint the operator's webhook writes into the graph.
        "ports": [
            {"name": "http", "containerPort": MODEL_HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": MODEL_GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": MODEL_METRICS_PORT, "protocol": "TCP"},
        ],
        "startupProbe": _http_probe("/health/ping", MODEL_HTTP_PORT, period=2, failures=60),
        "readinessProbe": _http_probe("/health/status", MODEL_HTTP_PORT, period=5, failures=3),
        "livenessProbe": _http_probe("/health/ping", MODEL_HTTP_PORT, period=10, failures=3),
        # The REST port closes at once on SIGTERM: keep serving while endpoints update.
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sleep", str(config.drain_seconds)]}}},
        "resources": config.model_resources.to_dict(),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "model-tmp", "mountPath": "/tmp"}],
    }


def _sidecar_container(config: SeldonDeploymentConfig, version: str) -> dict[str, Any]:
    metrics_port = config.sidecar_metrics_port
    return {
        "name": SIDECAR_CONTAINER,
        "image": config.images.monitor,
        "imagePullPolicy": config.images.pull_policy,
        "args": [
            "sidecar",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(config.sidecar_port),
            "--metrics-host",
            "0.0.0.0",
            "--metrics-port",
            str(metrics_port),
            "--registry-uri",
            config.registry_uri,
            "--model-name",
            config.model_name,
            "--model-version",
            version,
            "--policy",
            f"{POLICY_DIR}/{POLICY_FILE}",
            "--trigger-url",
            config.trigger_url,
            "--state-dir",
            SIDECAR_STATE_DIR,
        ],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            *_s3_env(config.s3),
        ],
        "ports": [{"name": "ops", "containerPort": metrics_port, "protocol": "TCP"}],
        # Importing alibi-detect and loading the fitted detector take a few seconds.
        "startupProbe": _http_probe("/healthz", metrics_port, period=2, failures=90),
        "readinessProbe": _http_probe("/healthz", metrics_port, period=5, failures=3),
        "livenessProbe": _http_probe("/healthz", metrics_port, period=10, failures=3),
        # Outlive the model's drain so the executor's last logged requests still land.
        "lifecycle": {
            "preStop": {"exec": {"command": ["/bin/sleep", str(config.drain_seconds + 5)]}}
        },
        "resources": config.sidecar_resources.to_dict(),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "sidecar-tmp", "mountPath": "/tmp"},
            {"name": "sidecar-state", "mountPath": SIDECAR_STATE_DIR},
            {"name": "drift-policy", "mountPath": POLICY_DIR, "readOnly": True},
        ],
    }


def _pod_labels(config: SeldonDeploymentConfig, version: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "closedloop",
        "app.kubernetes.io/component": COMPONENT_LABEL_VALUE,
        "app.kubernetes.io/part-of": "closedloop",
        LABEL_MODEL_NAME: config.model_name,
        LABEL_MODEL_VERSION: version,
        LABEL_S3_CLIENT: "true",
    }


def _component_spec(config: SeldonDeploymentConfig, version: str) -> dict[str, Any]:
    scaling = config.autoscaling
    return {
        "metadata": {
            "labels": _pod_labels(config, version),
            # Seldon's own /prometheus endpoints are scraped by a PodMonitor (see
            # docs/kubernetes.md); these annotations point at the sidecar's metrics.
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(config.sidecar_metrics_port),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            "serviceAccountName": config.service_account,
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            "terminationGracePeriodSeconds": config.termination_grace_seconds,
            "containers": [_model_container(config, version), _sidecar_container(config, version)],
            "volumes": [
                {"name": "model-tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "sidecar-tmp", "emptyDir": {"sizeLimit": "512Mi"}},
                {"name": "sidecar-state", "emptyDir": {"sizeLimit": "256Mi"}},
                {
                    "name": "drift-policy",
                    "configMap": {
                        "name": config.drift_policy_config_map,
                        "items": [{"key": POLICY_FILE, "path": POLICY_FILE}],
                    },
                },
            ],
        },
        "hpaSpec": {
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metricsv2": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.cpu_utilization,
                        },
                    },
                }
            ],
        },
        # maxUnavailable (not minAvailable: 1) so a single replica never blocks node drains.
        "pdbSpec": {"maxUnavailable": 1},
    }


def _graph(config: SeldonDeploymentConfig, version: str) -> dict[str, Any]:
    return {
        "name": MODEL_CONTAINER,
        "type": "MODEL",
        "endpoint": {"type": "REST", "httpPort": MODEL_HTTP_PORT, "grpcPort": MODEL_GRPC_PORT},
        "parameters": predictive_unit_parameters(config, version),
        # "all", not "request": the executor sends feedback events only in response/all
        # modes, and feedback is what fills the labelled archive retraining learns from.
        # The sidecar keeps each response's scores by Seldon-Puid, so that feedback
        # arriving later is scored against the prediction it labels (quality windows).
        "logger": {"mode": "all", "url": f"http://localhost:{config.sidecar_port}/"},
        "children": [],
    }


def _predictor(
    config: SeldonDeploymentConfig, role: PredictorRole, version: str, traffic: int
) -> dict[str, Any]:
    predictor: dict[str, Any] = {
        "name": role,
        # Seldon names metrics and Istio subsets after the "version" predictor label.
        "labels": {"version": version, LABEL_MODEL_VERSION: version},
        "traffic": traffic,
    }
    if role == "shadow":
        predictor["shadow"] = True
    predictor["componentSpecs"] = [_component_spec(config, version)]
    predictor["graph"] = _graph(config, version)
    predictor["svcOrchSpec"] = {"resources": config.executor_resources.to_dict()}
    return predictor


def build_seldon_deployment(config: SeldonDeploymentConfig) -> dict[str, Any]:
    """Build the ``machinelearning.seldon.io/v1`` SeldonDeployment for ``config``.

    Args:
        config: What to serve and how.

    Returns:
        The resource as JSON-compatible data, ready for ``kubectl`` or the API.
    """
    challenger = config.challenger
    main_traffic = 100
    predictors: list[dict[str, Any]] = []
    if challenger is not None and challenger.mode == "canary":
        main_traffic = 100 - challenger.traffic_percent
    predictors.append(_predictor(config, "main", config.model_version, main_traffic))
    if challenger is not None:
        predictors.append(
            _predictor(config, challenger.mode, challenger.version, challenger.traffic_percent)
        )

    annotations = {
        LABEL_MODEL_NAME: config.model_name,
        LABEL_MODEL_VERSION: config.model_version,
        ANNOTATION_REGISTRY_URI: config.registry_uri,
        ANNOTATION_MODEL_CLASS: MODEL_CLASS,
    }
    if challenger is not None:
        annotations[ANNOTATION_CHALLENGER_VERSION] = challenger.version
        annotations[ANNOTATION_ROLLOUT] = challenger.mode
        annotations[ANNOTATION_CHALLENGER_TRAFFIC] = str(challenger.traffic_percent)

    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": config.name,
            "namespace": config.namespace,
            "labels": {
                "app.kubernetes.io/name": "closedloop",
                "app.kubernetes.io/component": COMPONENT_LABEL_VALUE,
                "app.kubernetes.io/part-of": "closedloop",
                LABEL_MODEL_NAME: config.model_name,
                LABEL_MODEL_VERSION: config.model_version,
            },
            "annotations": annotations,
        },
        "spec": {"protocol": "seldon", "predictors": predictors},
    }


BASE_CONFIG = SeldonDeploymentConfig(
    images=ServingImages(
        serving=images.DEFAULT_SERVING_IMAGE, monitor=images.DEFAULT_MONITOR_IMAGE
    ),
)
"""Configuration of the committed base manifest: built from the default image
references, never from the ``CLOSEDLOOP_*_IMAGE`` overrides of the current shell."""

_HEADER = """\
# GENERATED FILE - do not edit by hand.
# Source: closedloop.deploy.seldon.build_seldon_deployment(BASE_CONFIG)
# Regenerate: python -m closedloop.deploy.seldon > manifests/base/seldondeployment.yaml
# tests/k8s/test_seldon.py fails when this file and the generator disagree.
"""


def render_base_manifest() -> str:
    """Return the text of ``manifests/base/seldondeployment.yaml``.

    Returns:
        A header comment followed by the YAML of
        ``build_seldon_deployment(BASE_CONFIG)``.
    """
    import yaml  # only the generator needs it; the builder itself is dependency-free

    body = yaml.safe_dump(
        build_seldon_deployment(BASE_CONFIG), sort_keys=False, width=4096, allow_unicode=True
    )
    return _HEADER + body


if __name__ == "__main__":
    sys.stdout.write(render_base_manifest())
