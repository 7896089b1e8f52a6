"""The Kubernetes deploy backend: apply a SeldonDeployment and wait until it serves.

:class:`KubernetesDeployer` creates the resource when it is absent and patches it when
it exists, waits (bounded) until the Seldon operator reports ``Available`` for the new
generation, and when that does not happen patches the previous spec back. API errors
become one of the exceptions below, each with a message that says what to do.

The ``kubernetes`` package is imported only when the deployer first talks to the API
server, so building resources and importing this module need no client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from closedloop.deploy import DeployError
from closedloop.deploy.base import DeploymentInfo
from closedloop.deploy.seldon import (
    GROUP,
    LABEL_MODEL_VERSION,
    LABEL_PREFIX,
    PLURAL,
    VERSION,
    SeldonDeploymentConfig,
    build_seldon_deployment,
)

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException

RBAC_HINT = (
    "the deployer needs get, list, watch, create and patch on "
    f"{PLURAL}.{GROUP} in this namespace (see manifests/base/rbac.yaml)"
)


class DeploymentNotFound(DeployError):
    """The SeldonDeployment, its namespace or the Seldon CRD does not exist (HTTP 404)."""


class DeploymentConflict(DeployError):
    """Someone else created or changed the SeldonDeployment concurrently (HTTP 409)."""


class DeployForbidden(DeployError):
    """The credentials may not read or write SeldonDeployments there (HTTP 401/403)."""


class DeploymentInvalid(DeployError):
    """The API server or Seldon's admission webhook rejected the resource (HTTP 400/422)."""


class DeploymentUnavailable(DeployError):
    """The new spec did not become ``Available`` in time, or the operator reported ``Failed``."""


class CustomObjectsApi(Protocol):
    """The part of ``kubernetes.client.CustomObjectsApi`` the deployer uses."""

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any:
        """Read one object."""
        ...

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any
    ) -> Any:
        """Create one object."""
        ...

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any:
        """Merge-patch one object (a dict body is sent as ``application/merge-patch+json``)."""
        ...


@dataclass(frozen=True)
class DeployResult:
    """What a successful :meth:`KubernetesDeployer.apply` left running.

    Attributes:
        name: SeldonDeployment name.
        namespace: Its namespace.
        generation: ``metadata.generation`` the operator reported as available.
        model_version: Value of the ``closedloop.io/model-version`` label.
        created: True when the resource did not exist before.
        address: In-cluster URL from ``status.address.url``, if the operator set one.
    """

    name: str
    namespace: str
    generation: int | None
    model_version: str | None
    created: bool
    address: str | None


def merge_patch(current: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """Return the JSON merge patch (RFC 7386) that turns ``current`` into ``target``.

    Args:
        current: The document as it is.
        target: The document as it should be.

    Returns:
        A patch with the changed keys of ``target``, and ``None`` for keys to remove.
        Lists and scalars are replaced whole, as merge patches do.
    """
    patch: dict[str, Any] = {key: None for key in current if key not in target}
    for key, value in target.items():
        old = current.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif key not in current or old != value:
            patch[key] = value
    return patch


class KubernetesDeployer:
    """Create or patch a SeldonDeployment, wait for it, roll back on failure.

    Args:
        namespace: Namespace of the SeldonDeployments this deployer manages.
        api: A ``kubernetes.client.CustomObjectsApi`` (or a test double). When None,
            one is made on first use from the in-cluster service account, falling back
            to the local kubeconfig.
        timeout_seconds: Longest wait for ``Available`` before rolling back.
        poll_interval_seconds: Pause between two status reads.
        clock: Monotonic clock, replaceable in tests.
        sleep: Sleep function, replaceable in tests.
    """

    def __init__(
        self,
        namespace: str,
        *,
        api: CustomObjectsApi | None = None,
        timeout_seconds: float = 600.0,
        poll_interval_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timeout_seconds <= 0 or poll_interval_seconds <= 0:
            raise ValueError("timeout_seconds and poll_interval_seconds must be positive")
        self.namespace = namespace
        self._api = api
        self.timeout_seconds = timeout_seconds
        self.poll_interval_seconds = poll_interval_seconds
        self._clock = clock
        self._sleep = sleep

    def deploy(self, config: SeldonDeploymentConfig) -> DeployResult:
        """Build the SeldonDeployment for ``config`` and :meth:`apply` it.

        Raises:
            DeployError: See :meth:`apply`.
        """
        if config.namespace != self.namespace:
            raise DeployError(
                f"config namespace {config.namespace!r} differs from the deployer's "
                f"{self.namespace!r}; build the deployer for that namespace"
            )
        return self.apply(build_seldon_deployment(config))

    def apply(self, manifest: Mapping[str, Any]) -> DeployResult:
        """Create or patch ``manifest`` and wait until the operator reports it available.

        Args:
            manifest: A complete ``machinelearning.seldon.io/v1`` SeldonDeployment.

        Returns:
            The name, generation and served version that became available.

        Raises:
            DeploymentNotFound: The namespace or the Seldon CRD is missing.
            DeploymentConflict: A concurrent writer created or changed the resource.
            DeployForbidden: RBAC denies the request.
            DeploymentInvalid: The resource was rejected as invalid.
            DeploymentUnavailable: It did not become available; the previous spec, if
                any, was patched back.
            DeployError: Any other API failure, or a failed rollback.
        """
        name = str(manifest["metadata"]["name"])
        namespace = manifest["metadata"].get("namespace", self.namespace)
        if namespace != self.namespace:
            raise DeployError(
                f"SeldonDeployment {name} is for namespace {namespace!r}, "
                f"this deployer manages {self.namespace!r}"
            )
        body = dict(manifest)
        body["metadata"] = {**manifest["metadata"], "namespace": self.namespace}

        previous = self.read(name)
        if previous is None:
            applied = self._create(body)
        else:
            applied = self._patch(name, self._upgrade_patch(previous, body))
        generation = applied.get("metadata", {}).get("generation")

        try:
            current = self._wait_available(name, generation)
        except DeploymentUnavailable as error:
            if previous is None:
                raise DeploymentUnavailable(
                    f"{error} There is no previous spec to roll back to; inspect it with "
                    f"`kubectl -n {self.namespace} describe sdep {name}`."
                ) from error
            self._roll_back(name, previous, applied, error)
            old_version = _labels(previous).get(LABEL_MODEL_VERSION, "unknown")
            raise DeploymentUnavailable(
                f"{error} Rolled back to the previous spec (model version {old_version})."
            ) from error

        return DeployResult(
            name=name,
            namespace=self.namespace,
            generation=current.get("metadata", {}).get("generation"),
            model_version=_labels(current).get(LABEL_MODEL_VERSION),
            created=previous is None,
            address=((current.get("status") or {}).get("address") or {}).get("url"),
        )

    @staticmethod
    def _upgrade_patch(previous: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
        # Labels and annotations other tools own (kubectl's, Argo's) are kept, ours
        # (closedloop.io/...) follow the new manifest, and the spec becomes exactly ours.
        # resourceVersion turns a change made since our read into a 409.
        metadata: dict[str, Any] = {"resourceVersion": previous["metadata"]["resourceVersion"]}
        for field in ("labels", "annotations"):
            wanted = dict(body["metadata"].get(field) or {})
            stale = {
                key: None
                for key in (previous["metadata"].get(field) or {})
                if key.startswith(LABEL_PREFIX) and key not in wanted
            }
            metadata[field] = {**stale, **wanted}
        return {"metadata": metadata, "spec": merge_patch(previous.get("spec") or {}, body["spec"])}

    def _roll_back(
        self,
        name: str,
        previous: Mapping[str, Any],
        applied: Mapping[str, Any],
        cause: DeploymentUnavailable,
    ) -> None:
        metadata: dict[str, Any] = {}
        for field in ("labels", "annotations"):
            before = previous["metadata"].get(field) or {}
            after = applied.get("metadata", {}).get(field) or {}
            changed = merge_patch(after, before)
            if changed:
                metadata[field] = changed
        patch: dict[str, Any] = {
            "spec": merge_patch(applied.get("spec") or {}, previous.get("spec") or {})
        }
        if metadata:
            patch["metadata"] = metadata
        try:
            self._patch(name, patch)
        except DeployError as rollback_error:
            raise DeployError(
                f"{cause} Rolling back SeldonDeployment {name} failed too: {rollback_error}"
            ) from rollback_error

    def _wait_available(self, name: str, generation: int | None) -> dict[str, Any]:
        deadline = self._clock() + self.timeout_seconds
        state, description = "unknown", ""
        while True:
            current = self.read(name)
            if current is None:
                raise DeploymentNotFound(
                    f"SeldonDeployment {name} disappeared from namespace {self.namespace} "
                    "while waiting for it to become available"
                )
            status = current.get("status") or {}
            observed = status.get("observedGeneration")
            # Until the operator has seen this generation, its state describes the old spec.
            fresh = generation is None or observed is None or observed >= generation
            state = status.get("state") or "unknown"
            description = status.get("description") or ""
            if fresh and state == "Available":
                return current
            if fresh and state == "Failed":
                raise DeploymentUnavailable(
                    f"SeldonDeployment {name} failed: {description or 'no description given'}."
                )
            remaining = deadline - self._clock()
            if remaining <= 0:
                detail = f" ({description})" if description else ""
                raise DeploymentUnavailable(
                    f"SeldonDeployment {name} was not Available within "
                    f"{self.timeout_seconds:g} s; last state {state}{detail}."
                )
            self._sleep(min(self.poll_interval_seconds, remaining))

    # -- API calls -------------------------------------------------------------------

    def _client(self) -> CustomObjectsApi:
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    config.load_kube_config()
                except config.ConfigException as e:
                    raise DeployError(
                        "no Kubernetes credentials: not running in a pod and no usable "
                        f"kubeconfig ({e}); set KUBECONFIG or run inside the cluster"
                    ) from e
            self._api = client.CustomObjectsApi()
        return self._api

    def read(self, name: str) -> dict[str, Any] | None:
        """Return the SeldonDeployment *name*, or None if it does not exist."""
        from kubernetes.client.exceptions import ApiException

        api = self._client()
        try:
            return api.get_namespaced_custom_object(
                group=GROUP, version=VERSION, namespace=self.namespace, plural=PLURAL, name=name
            )
        except ApiException as e:
            if e.status == 404 and _is_missing_object(e):
                return None
            raise self._translate(e, "read", name) from e
        except _transport_errors() as e:
            raise self._unreachable(e) from e

    def _create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        name = str(body["metadata"]["name"])
        api = self._client()
        try:
            return api.create_namespaced_custom_object(
                group=GROUP, version=VERSION, namespace=self.namespace, plural=PLURAL, body=body
            )
        except ApiException as e:
            raise self._translate(e, "create", name) from e
        except _transport_errors() as e:
            raise self._unreachable(e) from e

    def _patch(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        api = self._client()
        try:
            return api.patch_namespaced_custom_object(
                group=GROUP,
                version=VERSION,
                namespace=self.namespace,
                plural=PLURAL,
                name=name,
                body=body,
            )
        except ApiException as e:
            raise self._translate(e, "patch", name) from e
        except _transport_errors() as e:
            raise self._unreachable(e) from e

    def _translate(self, error: ApiException, verb: str, name: str) -> DeployError:
        where = f"SeldonDeployment {name} in namespace {self.namespace}"
        reason = _reason(error)
        status = error.status
        if status == 404:
            return DeploymentNotFound(
                f"cannot {verb} {where}: not found ({reason}); check that the namespace exists "
                f"and the Seldon Core operator's CRD {PLURAL}.{GROUP}/{VERSION} is installed"
            )
        if status == 409:
            if verb == "create":
                return DeploymentConflict(
                    f"cannot create {where}: it was created by someone else meanwhile "
                    f"({reason}); run the deploy again to patch it"
                )
            return DeploymentConflict(
                f"cannot {verb} {where}: it changed since it was read ({reason}); "
                "another deploy is probably running, retry when it is done"
            )
        if status in (401, 403):
            return DeployForbidden(f"not allowed to {verb} {where} ({reason}); {RBAC_HINT}")
        if status in (400, 422):
            return DeploymentInvalid(f"{where} was rejected as invalid: {reason}")
        return DeployError(f"cannot {verb} {where}: HTTP {status} {reason}")

    def _unreachable(self, error: Exception) -> DeployError:
        return DeployError(
            f"cannot reach the Kubernetes API server ({type(error).__name__}: {error}); "
            "check KUBECONFIG or the in-cluster network"
        )


def _transport_errors() -> tuple[type[Exception], ...]:
    from urllib3.exceptions import HTTPError

    return (HTTPError, OSError)


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _reason(error: ApiException) -> str:
    """Return the API server's ``message`` from the Status body, else the HTTP reason."""
    import json

    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return str(message)
    return str(error.reason or "no reason given")


def _is_missing_object(error: ApiException) -> bool:
    """Tell "this SeldonDeployment does not exist" from "the CRD/namespace is missing".

    A Status body names the missing kind in ``details.kind``; only ``seldondeployments``
    means the object itself. Without a Status body assume the object is missing, and
    let the create that follows report a missing CRD.
    """
    import json

    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return True
    try:
        details = json.loads(body).get("details") or {}
    except (ValueError, AttributeError):
        return True
    return details.get("kind", PLURAL) == PLURAL


class SeldonDeployer:
    """The :class:`closedloop.deploy.base.Deployer` interface over :class:`KubernetesDeployer`.

    Every deploy builds the SeldonDeployment from one base configuration with only the
    model name and version replaced, so the pipeline's deploy step, the CLI and the
    committed manifests all produce the same shape.

    Args:
        config: The base configuration (name, namespace, images, resources, …).
        deployer: The applier; one for ``config.namespace`` when None.
    """

    backend = "kubernetes"

    def __init__(
        self, config: SeldonDeploymentConfig, deployer: KubernetesDeployer | None = None
    ) -> None:
        self.config = config
        self.deployer = deployer or KubernetesDeployer(config.namespace)

    def deploy(self, model_name: str, version: str) -> DeploymentInfo:
        """Create or patch the SeldonDeployment to serve *version*; wait; roll back on failure."""
        from dataclasses import replace

        self.config = replace(self.config, model_name=model_name, model_version=version)
        result = self.deployer.deploy(self.config)
        return DeploymentInfo(
            backend=self.backend,
            model_name=model_name,
            requested_version=version,
            serving_version=result.model_version,
            url=f"http://{self.config.name}-default.{self.config.namespace}.svc:8000",
            ready=True,
            detail=f"SeldonDeployment {result.namespace}/{result.name} generation {result.generation}",
        )

    def status(self) -> DeploymentInfo:
        """Report the SeldonDeployment's state."""
        current = self.deployer.read(self.config.name)
        if current is None:
            raise DeploymentNotFound(
                f"SeldonDeployment {self.config.namespace}/{self.config.name} does not exist: deploy a version first"
            )
        state = str((current.get("status") or {}).get("state", "Unknown"))
        labels = current.get("metadata", {}).get("labels", {})
        return DeploymentInfo(
            backend=self.backend,
            model_name=self.config.model_name,
            requested_version=self.config.model_version,
            serving_version=labels.get(LABEL_MODEL_VERSION),
            url=f"http://{self.config.name}-default.{self.config.namespace}.svc:8000",
            ready=state == "Available",
            detail=f"state {state}",
        )

    def teardown(self) -> None:
        """Leave the SeldonDeployment in place: its removal is a cluster operator's decision.

        The deployer's RBAC grants get/create/patch only (see manifests/base/rbac.yaml).
        """
