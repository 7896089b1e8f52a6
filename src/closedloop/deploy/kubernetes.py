"""The Kubernetes deploy backend: roll a model version out to a SeldonDeployment.

:class:`KubernetesDeployer` creates the SeldonDeployment from the builder when it is
absent. When it exists, it reads the live object and sends a narrow JSON Patch
(:func:`closedloop.deploy.rollout.narrow_patch`) that changes only the fields carrying
the model version, so overlay settings, image tags and labels set by kustomize or by
hand survive. It then waits, bounded, on the Deployments the Seldon operator owns (the
SeldonDeployment's own status is no proof: the operator never writes
``status.observedGeneration``), and when they do not roll out it patches the previous
versions back the same narrow way and marks the version as failed, so a retry of the
same deploy fails fast instead of waiting out another timeout.

The ``kubernetes`` package is imported only when the deployer first talks to the API
server, so building resources and importing this module need no client.

Two facts about the ``kubernetes`` Python client (checked in 30.1.0) shape the calls:

* ``CustomObjectsApi.patch_namespaced_custom_object`` always sends
  ``Content-Type: application/merge-patch+json``, whatever the body
  (kubernetes-client/python#2119, #2039): a JSON Patch list sent that way is rejected.
  JSON Patches therefore go through ``ApiClient.call_api`` with an explicit
  ``application/json-patch+json`` header, which ``rest.py`` keeps for a list body.
* ``AppsV1Api.list_namespaced_deployment(..., _preload_content=False)`` returns the raw
  response, whose JSON keeps the API's camelCase field names.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from closedloop.deploy import DeployError
from closedloop.deploy.base import DeploymentInfo
from closedloop.deploy.rollout import (
    ANNOTATION_FAILED_VERSION,
    ANNOTATION_PREVIOUS_VERSION,
    SELDON_ID_LABEL,
    NotAClosedLoopDeployment,
    Operation,
    Progress,
    main_version,
    narrow_patch,
    predictor_version,
    rollout_progress,
    served_versions,
)
from closedloop.deploy.seldon import (
    GROUP,
    PLURAL,
    VERSION,
    SeldonDeploymentConfig,
    build_seldon_deployment,
)

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException

RBAC_HINT = (
    f"the deployer needs get, create and patch on {PLURAL}.{GROUP} and list on "
    "deployments.apps in this namespace (see manifests/base/rbac.yaml)"
)
PREDICTOR_HTTP_PORT = 8000
"""REST port of the predictor service the operator creates (the executor's)."""
JSON_PATCH = "application/json-patch+json"


class DeploymentNotFound(DeployError):
    """The SeldonDeployment, its namespace or the Seldon CRD does not exist (HTTP 404)."""


class DeploymentConflict(DeployError):
    """Someone else created or changed the SeldonDeployment concurrently (HTTP 409)."""


class DeployForbidden(DeployError):
    """The credentials may not read or write SeldonDeployments there (HTTP 401/403)."""


class DeploymentInvalid(DeployError):
    """The API server or Seldon's admission webhook rejected the resource (HTTP 400/422)."""


class DeploymentUnavailable(DeployError):
    """The new version did not roll out in time, or its Deployments stopped progressing.

    Attributes:
        result: What serves after the failure (after the rollback, if there was one).
    """

    def __init__(self, message: str, result: RolloutResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class VersionAlreadyFailed(DeployError):
    """The version was already rolled out here and failed; not retried without asking."""


class _PreconditionFailed(DeploymentConflict):
    """A JSON Patch ``test`` failed (422) or the resourceVersion moved (409)."""


@dataclass(frozen=True)
class RolloutResult:
    """What one :meth:`KubernetesDeployer.apply` left serving.

    Attributes:
        name: SeldonDeployment name.
        namespace: Its namespace.
        target_version: The version asked for (first predictor).
        served_version: The version the first predictor serves now (None if unknown).
        previous_version: What it served before the rollout to the target: read before
            patching, or from ``closedloop.io/previous-version`` when the target was
            already asked for (None when it was created, or not recorded).
        rolled_back: True when the target failed and the previous version was restored.
        created: True when the SeldonDeployment did not exist before.
        changed: False when the target versions were already asked for (a repeated or
            resumed deploy) and no version field was written.
        url: Base URL of the prediction API (``/api/v1.0/predictions`` below it).
        detail: One line on how the rollout ended.
    """

    name: str
    namespace: str
    target_version: str
    served_version: str | None
    previous_version: str | None
    rolled_back: bool
    created: bool
    changed: bool
    url: str | None
    detail: str

    @property
    def succeeded(self) -> bool:
        """Whether the target version serves."""
        return not self.rolled_back and self.served_version == self.target_version


class CustomObjectsApi(Protocol):
    """The part of ``kubernetes.client.CustomObjectsApi`` the deployer uses."""

    api_client: Any
    """The ``ApiClient``; JSON Patches go through its ``call_api`` (see module doc)."""

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


class AppsV1Api(Protocol):
    """The part of ``kubernetes.client.AppsV1Api`` the deployer uses."""

    def list_namespaced_deployment(self, namespace: str, **kwargs: Any) -> Any:
        """List Deployments (called with ``label_selector`` and ``_preload_content=False``)."""
        ...


def predictor_service(sdep: Mapping[str, Any]) -> str:
    """Return the name of the service the operator creates for the first predictor.

    ``GetPredictorKey`` in Seldon's ``seldondeployment_types.go``: the predictor's
    ``seldon.io/svc-name`` annotation, else ``<sdep>-<predictor>``, hashed when longer
    than 63 characters.
    """
    import hashlib

    predictor = sdep["spec"]["predictors"][0]
    custom = (predictor.get("annotations") or {}).get("seldon.io/svc-name")
    if custom:
        return str(custom)
    key = f"{sdep['metadata']['name']}-{predictor['name']}"
    if len(key) > 63:
        return (
            "seldon-" + hashlib.md5(key.encode()).hexdigest()
        )  # Seldon hashes long names with md5
    return key


def service_url(sdep: Mapping[str, Any], namespace: str) -> str:
    """Return the base URL of the prediction API of a SeldonDeployment.

    ``status.address.url`` (the operator's predictions URL for the first predictor) when
    set, else the predictor service on the executor's REST port.
    """
    address = ((sdep.get("status") or {}).get("address") or {}).get("url")
    if address:
        parts = urlsplit(str(address))
        return f"{parts.scheme}://{parts.netloc}"
    return f"http://{predictor_service(sdep)}.{namespace}.svc.cluster.local:{PREDICTOR_HTTP_PORT}"


class KubernetesDeployer:
    """Create or narrowly patch a SeldonDeployment, wait for its rollout, roll back on failure.

    Args:
        namespace: Namespace of the SeldonDeployments this deployer manages.
        api: A ``kubernetes.client.CustomObjectsApi`` (or a test double). When None,
            one is made on first use from the in-cluster service account, falling back
            to the local kubeconfig.
        apps_api: A ``kubernetes.client.AppsV1Api`` (or a test double), made likewise.
        timeout_seconds: Longest wait for the rollout before rolling back.
        poll_interval_seconds: Pause between two looks at the Deployments.
        patch_attempts: How often a patch whose precondition failed (someone wrote the
            object meanwhile, e.g. the operator's status) is re-read and retried.
        clock: Monotonic clock, replaceable in tests.
        sleep: Sleep function, replaceable in tests.
    """

    def __init__(
        self,
        namespace: str,
        *,
        api: CustomObjectsApi | None = None,
        apps_api: AppsV1Api | None = None,
        timeout_seconds: float = 600.0,
        poll_interval_seconds: float = 5.0,
        patch_attempts: int = 3,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timeout_seconds <= 0 or poll_interval_seconds <= 0:
            raise ValueError("timeout_seconds and poll_interval_seconds must be positive")
        if patch_attempts < 1:
            raise ValueError("patch_attempts must be at least 1")
        self.namespace = namespace
        self._api = api
        self._apps_api = apps_api
        self.timeout_seconds = timeout_seconds
        self.poll_interval_seconds = poll_interval_seconds
        self.patch_attempts = patch_attempts
        self._clock = clock
        self._sleep = sleep

    def deploy(
        self, config: SeldonDeploymentConfig, *, retry_failed: bool = False
    ) -> RolloutResult:
        """Build the SeldonDeployment for ``config`` and :meth:`apply` it.

        Raises:
            DeployError: See :meth:`apply`.
        """
        if config.namespace != self.namespace:
            raise DeployError(
                f"config namespace {config.namespace!r} differs from the deployer's "
                f"{self.namespace!r}; build the deployer for that namespace"
            )
        return self.apply(build_seldon_deployment(config), retry_failed=retry_failed)

    def apply(self, manifest: Mapping[str, Any], *, retry_failed: bool = False) -> RolloutResult:
        """Make the SeldonDeployment serve the versions ``manifest`` serves; wait; roll back.

        Args:
            manifest: A complete ``machinelearning.seldon.io/v1`` SeldonDeployment. Used
                whole only to create the object; an existing one takes from it only the
                versions, traffic and predictors (see :func:`narrow_patch`).
            retry_failed: Roll out a version even though an earlier rollout of it here
                failed (the ``closedloop.io/failed-version`` annotation).

        Returns:
            What serves now; ``succeeded`` is always true on return.

        Raises:
            DeploymentNotFound: The namespace or the Seldon CRD is missing.
            DeploymentConflict: A concurrent writer kept changing the resource.
            DeployForbidden: RBAC denies a request.
            DeploymentInvalid: The resource or the patch was rejected as invalid.
            VersionAlreadyFailed: This version already failed here; nothing was written.
            DeploymentUnavailable: It did not roll out; the previous versions, if any,
                were patched back (``error.result`` says what serves).
            DeployError: Any other API failure, or a failed rollback.
        """
        name = str(manifest["metadata"]["name"])
        namespace = manifest["metadata"].get("namespace", self.namespace)
        if namespace != self.namespace:
            raise DeployError(
                f"SeldonDeployment {name} is for namespace {namespace!r}, "
                f"this deployer manages {self.namespace!r}"
            )
        body = copy.deepcopy(dict(manifest))
        body["metadata"]["namespace"] = self.namespace
        target = _served(body, name)
        target_version = main_version(body)

        live = self.read(name)
        if live is None:
            self._create(body)
            return self._await(
                name, target, target_version, previous=None, created=True, changed=True
            )

        _check_same_model(live, body, name)
        failed = _annotations(live).get(ANNOTATION_FAILED_VERSION)
        if failed == target_version and not retry_failed:
            raise VersionAlreadyFailed(
                f"{target_version} already failed to roll out to SeldonDeployment "
                f"{self.namespace}/{name} (annotation {ANNOTATION_FAILED_VERSION}); not "
                "retrying it. Fix the cause, then deploy with retry_failed=True or run "
                f"`kubectl -n {self.namespace} annotate sdep {name} {ANNOTATION_FAILED_VERSION}-`"
            )
        clear: dict[str, str | None] = {}
        if retry_failed and failed == target_version:
            clear[ANNOTATION_FAILED_VERSION] = None
        previous = _served(live, name)
        if previous == target:
            # A repeated or resumed deploy: no version to write, wait on what is there.
            if clear:
                self._patch_narrowly(
                    name,
                    live,
                    lambda current: narrow_patch(
                        current, current, guard="values", annotations=clear
                    ),
                )
            before = _annotations(live).get(ANNOTATION_PREVIOUS_VERSION)
            snapshot = (
                _with_main_version(live, before) if before and before != target_version else None
            )
            return self._await(
                name, target, target_version, previous=snapshot, created=False, changed=False
            )

        extra: dict[str, str | None] = {ANNOTATION_PREVIOUS_VERSION: main_version(live), **clear}
        before, _ = self._patch_narrowly(
            name,
            live,
            lambda current: narrow_patch(current, body, guard="resourceVersion", annotations=extra),
        )
        return self._await(
            name, target, target_version, previous=before, created=False, changed=True
        )

    # -- waiting and rolling back ------------------------------------------------------

    def _await(
        self,
        name: str,
        target: dict[str, str],
        target_version: str,
        *,
        previous: Mapping[str, Any] | None,
        created: bool,
        changed: bool,
    ) -> RolloutResult:
        previous_version = None if previous is None else main_version(previous)
        try:
            progress = self._wait_rolled_out(name, target)
        except DeploymentUnavailable as error:
            if previous is None:
                self._mark_failed(name, target_version, error)
                raise DeploymentUnavailable(
                    f"{error} There is no previous version to roll back to; inspect it with "
                    f"`kubectl -n {self.namespace} describe sdep {name}`.",
                    RolloutResult(
                        name=name,
                        namespace=self.namespace,
                        target_version=target_version,
                        served_version=None,
                        previous_version=None,
                        rolled_back=False,
                        created=created,
                        changed=changed,
                        url=None,
                        detail=str(error),
                    ),
                ) from error
            after = self._roll_back(name, target, previous, target_version, error)
            raise DeploymentUnavailable(
                f"{error} Rolled back to the previous version {previous_version}.",
                RolloutResult(
                    name=name,
                    namespace=self.namespace,
                    target_version=target_version,
                    served_version=previous_version,
                    previous_version=previous_version,
                    rolled_back=True,
                    created=created,
                    changed=changed,
                    url=service_url(after, self.namespace),
                    detail=str(error),
                ),
            ) from error
        current = self.read(name)
        if current is None:
            raise DeploymentNotFound(
                f"SeldonDeployment {name} disappeared from namespace {self.namespace} "
                "right after its rollout"
            )
        return RolloutResult(
            name=name,
            namespace=self.namespace,
            target_version=target_version,
            served_version=main_version(current),
            previous_version=previous_version,
            rolled_back=False,
            created=created,
            changed=changed,
            url=service_url(current, self.namespace),
            detail=progress.detail,
        )

    def _wait_rolled_out(self, name: str, expected: Mapping[str, str]) -> Progress:
        deadline = self._clock() + self.timeout_seconds
        while True:
            progress = rollout_progress(self.list_deployments(name), expected)
            if progress.state == "done":
                return progress
            if progress.state == "failed":
                raise DeploymentUnavailable(
                    f"SeldonDeployment {name} failed to roll out: {progress.detail}."
                )
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise DeploymentUnavailable(
                    f"SeldonDeployment {name} did not roll out within "
                    f"{self.timeout_seconds:g} s: {progress.detail}."
                )
            self._sleep(min(self.poll_interval_seconds, remaining))

    def _roll_back(
        self,
        name: str,
        failed: Mapping[str, str],
        previous: Mapping[str, Any],
        target_version: str,
        cause: DeploymentUnavailable,
    ) -> dict[str, Any]:
        current = self.read(name)
        if current is None:
            raise DeployError(f"{cause} Rolling back failed too: SeldonDeployment {name} is gone.")
        marker = {ANNOTATION_FAILED_VERSION: target_version}

        def operations(live: dict[str, Any]) -> list[Operation]:
            now = _served(live, name)
            if now != failed:
                # Someone else deployed meanwhile: theirs is not ours to undo.
                raise DeploymentConflict(
                    f"SeldonDeployment {name} now serves {now}, not the failed {dict(failed)}; "
                    "left as it is"
                )
            return narrow_patch(live, previous, guard="values", annotations=marker)

        try:
            _, after = self._patch_narrowly(name, current, operations)
        except DeployError as rollback_error:
            raise DeployError(
                f"{cause} Rolling back SeldonDeployment {name} failed too: {rollback_error}"
            ) from rollback_error
        return after

    def _mark_failed(self, name: str, version: str, cause: DeploymentUnavailable) -> None:
        current = self.read(name)
        if current is None:
            return
        try:
            self._patch_narrowly(
                name,
                current,
                lambda live: narrow_patch(
                    live, live, guard="values", annotations={ANNOTATION_FAILED_VERSION: version}
                ),
            )
        except DeployError as error:
            raise DeployError(
                f"{cause} Marking {version} as failed on SeldonDeployment {name} failed too: {error}"
            ) from error

    def _patch_narrowly(
        self,
        name: str,
        live: dict[str, Any],
        operations: Callable[[dict[str, Any]], list[Operation]],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Send ``operations(live)``; when a precondition fails, re-read and try again.

        Returns:
            The object the successful patch was computed from, and the patched object.
        """
        last: _PreconditionFailed | None = None
        for _ in range(self.patch_attempts):
            ops = operations(live)
            if not ops:
                return live, live
            try:
                return live, self._json_patch(name, ops)
            except _PreconditionFailed as error:
                last = error
            reread = self.read(name)
            if reread is None:
                raise DeploymentNotFound(
                    f"SeldonDeployment {name} disappeared from namespace {self.namespace} "
                    "while it was being patched"
                )
            live = reread
        raise DeploymentConflict(
            f"SeldonDeployment {self.namespace}/{name} kept changing under "
            f"{self.patch_attempts} patch attempts ({last}); another deploy is probably "
            "running, retry when it is done"
        ) from last

    # -- API calls -------------------------------------------------------------------

    def _client(self) -> CustomObjectsApi:
        if self._api is None:
            self._connect()
        assert self._api is not None
        return self._api

    def _apps(self) -> AppsV1Api:
        if self._apps_api is None:
            if self._api is not None:
                from kubernetes import client

                self._apps_api = client.AppsV1Api(self._api.api_client)
            else:
                self._connect()
        assert self._apps_api is not None
        return self._apps_api

    def _connect(self) -> None:
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
        api_client = client.ApiClient()
        self._api = self._api or client.CustomObjectsApi(api_client)
        self._apps_api = self._apps_api or client.AppsV1Api(api_client)

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

    def list_deployments(self, name: str) -> list[dict[str, Any]]:
        """Return the Deployments the operator created for SeldonDeployment *name*."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self._apps().list_namespaced_deployment(
                self.namespace,
                label_selector=f"{SELDON_ID_LABEL}={name}",
                _preload_content=False,
            )
            return list(json.loads(response.data).get("items") or [])
        except ApiException as e:
            raise self._translate(e, "list the Deployments of", name) from e
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

    def _json_patch(self, name: str, operations: list[Operation]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        api = self._client()
        try:
            return api.api_client.call_api(
                "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
                "PATCH",
                path_params={
                    "group": GROUP,
                    "version": VERSION,
                    "namespace": self.namespace,
                    "plural": PLURAL,
                    "name": name,
                },
                query_params=[],
                header_params={"Accept": "application/json", "Content-Type": JSON_PATCH},
                body=operations,
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except ApiException as e:
            if _is_precondition_failure(e):
                raise _PreconditionFailed(
                    f"SeldonDeployment {name} changed since it was read ({_reason(e)})"
                ) from e
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
            return DeploymentConflict(
                f"cannot {verb} {where}: it was created by someone else meanwhile "
                f"({reason}); run the deploy again to patch it"
            )
        if status in (401, 403):
            return DeployForbidden(f"not allowed to {verb} {where} ({reason}); {RBAC_HINT}")
        if status in (400, 415, 422):
            return DeploymentInvalid(f"{where} was rejected as invalid: {reason}")
        return DeployError(f"cannot {verb} {where}: HTTP {status} {reason}")

    def _unreachable(self, error: Exception) -> DeployError:
        return DeployError(
            f"cannot reach the Kubernetes API server ({type(error).__name__}: {error}); "
            "check KUBECONFIG or the in-cluster network"
        )


def _served(sdep: Mapping[str, Any], name: str) -> dict[str, str]:
    try:
        return served_versions(sdep)
    except (NotAClosedLoopDeployment, KeyError) as e:
        raise DeployError(
            f"SeldonDeployment {name} is not one of closedloop's ({e}); "
            "deploy to another name or recreate it from manifests/"
        ) from e


def _graph_parameter(sdep: Mapping[str, Any], key: str) -> str | None:
    graph = sdep["spec"]["predictors"][0].get("graph") or {}
    return next(
        (str(p["value"]) for p in graph.get("parameters") or [] if p.get("name") == key), None
    )


def _check_same_model(live: Mapping[str, Any], body: Mapping[str, Any], name: str) -> None:
    serving, wanted = _graph_parameter(live, "model_name"), _graph_parameter(body, "model_name")
    if serving is not None and serving != wanted:
        raise DeployError(
            f"SeldonDeployment {name} serves model {serving!r}, not {wanted!r}: a rollout "
            "changes versions only; deploy this model under another deployment name"
        )


def _with_main_version(sdep: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Return a copy of ``sdep`` whose first predictor serves ``version`` (a rollback target)."""
    out = copy.deepcopy(dict(sdep))
    for parameter in out["spec"]["predictors"][0]["graph"]["parameters"]:
        if parameter.get("name") == "version":
            parameter["value"] = version
    return out


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _transport_errors() -> tuple[type[Exception], ...]:
    from urllib3.exceptions import HTTPError

    return (HTTPError, OSError)


def _reason(error: ApiException) -> str:
    """Return the API server's ``message`` from the Status body, else the HTTP reason."""
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


def _is_precondition_failure(error: ApiException) -> bool:
    """A 409 (resourceVersion moved) or a 422 from a JSON Patch that no longer applies.

    The API server answers a JSON Patch that fails to apply (a ``test`` that does not
    hold, a path that is gone) with 422 and the patch library's message
    (``applyJSPatch`` in ``k8s.io/apiserver/pkg/endpoints/handlers/patch.go``); a 422
    from validation or the admission webhook names fields instead.
    """
    if error.status == 409:
        return True
    if error.status != 422:
        return False
    reason = _reason(error)
    hints = ("test failed", "testing value", "test operation", "does not apply")
    return any(hint in reason for hint in hints)


def _is_missing_object(error: ApiException) -> bool:
    """Tell "this SeldonDeployment does not exist" from "the CRD/namespace is missing".

    A Status body names the missing kind in ``details.kind``; only ``seldondeployments``
    means the object itself. Without a Status body assume the object is missing, and
    let the create that follows report a missing CRD.
    """
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

    Args:
        config: The configuration a first deploy creates the SeldonDeployment from
            (name, namespace, images, resources, …). Later deploys change only the
            version of the live object.
        deployer: The applier; one for ``config.namespace`` when None.
        retry_failed: Roll out a version even if it already failed here.
    """

    backend = "kubernetes"

    def __init__(
        self,
        config: SeldonDeploymentConfig,
        deployer: KubernetesDeployer | None = None,
        *,
        retry_failed: bool = False,
    ) -> None:
        self.config = config
        self.deployer = deployer or KubernetesDeployer(config.namespace)
        self.retry_failed = retry_failed

    def roll_out(self, model_name: str, version: str) -> RolloutResult:
        """Serve *version*; wait for the rollout; roll back on failure.

        Raises:
            DeployError: See :meth:`KubernetesDeployer.apply`.
        """
        self.config = replace(self.config, model_name=model_name, model_version=version)
        return self.deployer.deploy(self.config, retry_failed=self.retry_failed)

    def deploy(self, model_name: str, version: str) -> DeploymentInfo:
        """Serve *version* (see :meth:`roll_out`) and report it as :class:`DeploymentInfo`."""
        result = self.roll_out(model_name, version)
        return DeploymentInfo(
            backend=self.backend,
            model_name=model_name,
            requested_version=version,
            serving_version=result.served_version,
            url=result.url,
            ready=True,
            detail=f"SeldonDeployment {result.namespace}/{result.name}: {result.detail}",
        )

    def status(self) -> DeploymentInfo:
        """Report what the SeldonDeployment serves and whether its Deployments are rolled out."""
        name = self.config.name
        current = self.deployer.read(name)
        if current is None:
            raise DeploymentNotFound(
                f"SeldonDeployment {self.config.namespace}/{name} does not exist: deploy a version first"
            )
        expected = _served(current, name)
        progress = rollout_progress(self.deployer.list_deployments(name), expected)
        return DeploymentInfo(
            backend=self.backend,
            model_name=self.config.model_name,
            requested_version=self.config.model_version,
            serving_version=predictor_version(current["spec"]["predictors"][0]),
            url=service_url(current, self.config.namespace),
            ready=progress.state == "done",
            detail=progress.detail,
        )

    def teardown(self) -> None:
        """Leave the SeldonDeployment in place: its removal is a cluster operator's decision.

        The deployer's RBAC grants no delete (see manifests/base/rbac.yaml).
        """
