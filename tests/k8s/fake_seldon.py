"""A stand-in for the Kubernetes API server and the Seldon Core v1 operator, in memory.

No API server, Docker engine or cluster can run where these tests run, so this fake
plays them. Each behaviour follows an upstream source, and ``test_k8s_fake_seldon.py``
holds one contract test per behaviour:

* **JSON merge patch** (``application/merge-patch+json``, RFC 7386) replaces lists whole:
  ``jsonpatch.MergePatch`` in ``k8s.io/apiserver/pkg/endpoints/handlers/patch.go``
  (kubernetes/kubernetes). A merge patch of ``spec.predictors`` drops every field the
  patch does not repeat.
* **JSON Patch** (``application/json-patch+json``, RFC 6902): ``add``, ``remove``,
  ``replace``, ``test``; a patch that does not apply, a failed ``test`` included, is
  answered 422 with the patch library's message (``applyJSPatch`` in the same
  ``patch.go``; messages as in github.com/evanphx/json-patch ``patch.go``).
* **resourceVersion** changes on every write, status writes included; a patch that
  changes nothing writes nothing. ``metadata.generation`` changes only with ``spec``
  (the CRD has the status subresource: ``seldondeployment-crd-v1.19.yaml``), and a
  patch of the main resource cannot change ``status``.
* **The python client** (``kubernetes`` 30.1.0, ``client/api/custom_objects_api.py``):
  ``patch_namespaced_custom_object`` sends ``merge-patch+json`` whatever the body, so a
  list body fails with the API server's "cannot unmarshal array" 422
  (kubernetes-client/python#2119, #2039); ``ApiClient.call_api`` sends the
  ``Content-Type`` it is given.
* **The Seldon operator** (SeldonIO/seldon-core v1, ``operator/controllers/
  seldondeployment_controller.go`` and ``operator/apis/machinelearning.seldon.io/v1/
  seldondeployment_types.go``, ``seldon_deployment_status.go``):
  - it never writes ``status.observedGeneration`` (``Reconcile``/``updateStatus`` set
    ``state``, ``description``, ``address``, ``deploymentStatus``, ``replicas`` only),
    so right after a spec change the status still says what it said before;
  - one Deployment per predictor and componentSpec, named by ``GetDeploymentName``
    (``<sdep>-<predictor>-<index>-<containers>``), labelled
    ``seldon-deployment-id=<sdep>`` (``createDeploymentWithoutEngine``); the model
    container gets ``PREDICTOR_ID`` (``createContainerService``) and
    ``PREDICTIVE_UNIT_PARAMETERS`` from the graph parameters (``addModelEnvs``);
  - the predictor service is ``<sdep>-<predictor>`` on port 8000 (``GetPredictorKey``,
    ``createPredictorService``) and ``status.address.url`` is
    ``http://<sdep>-<first predictor>.<ns>.svc.cluster.local:8000/api/v1.0/predictions``
    (``createAddressableResource``), set from the reconcile after the one that created
    the services (``createServices`` sets it only for a service it finds);
  - ``state`` (``createDeployments``): ``Creating`` on a reconcile that had to update a
    Deployment; else ``Available`` when every Deployment has ``readyReplicas > 0`` and
    ``unavailableReplicas == 0`` (``updatedReplicas`` is not looked at); ``Failed``
    when one is not available and no longer progressing.
* **The Deployment controller** (kubernetes/kubernetes ``pkg/controller/deployment``):
  ``observedGeneration``, ``updatedReplicas`` and ``availableReplicas`` catch up with a
  new template only after some time (here: ``converge_after`` operator steps per
  version, or never), and a rollout that never converges ends with the ``Progressing``
  condition's reason ``ProgressDeadlineExceeded``.

Time is modelled as steps: each ``FakeClock.sleep`` of the deployer lets the operator
reconcile once and the Deployment controller move once; API calls take no time, so a
read right after a write sees the operator's status from before the write.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

GROUP = "machinelearning.seldon.io"
VERSION = "v1"
PLURAL = "seldondeployments"
SELDON_ID = "seldon-deployment-id"
EXECUTOR_PORT = 8000


def api_error(status: int, phrase: str, **status_body: Any) -> ApiException:
    """An ``ApiException`` as the client raises it, with a ``Status`` body."""
    error = ApiException(status=status, reason=phrase)
    if status_body:
        error.body = json.dumps({"kind": "Status", "code": status, **status_body})
    return error


# -- RFC 7386 and RFC 6902 ------------------------------------------------------------


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` removes, anything else replaces whole."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


class PatchFailed(Exception):
    """A JSON Patch operation did not apply (the API server answers 422)."""


def _tokens(path: str) -> list[str]:
    if not path.startswith("/"):
        raise PatchFailed(f"invalid path {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _parent(doc: Any, path: str, verb: str) -> tuple[Any, str]:
    *parents, last = _tokens(path)
    node = doc
    for token in parents:
        try:
            node = node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError, TypeError):
            raise PatchFailed(
                f"{verb} operation does not apply: doc is missing path: {path!r}: missing value"
            ) from None
    return node, last


def _get(doc: Any, path: str) -> Any:
    node, last = _parent(doc, path, "test")
    try:
        return node[int(last)] if isinstance(node, list) else node[last]
    except (KeyError, IndexError, ValueError, TypeError):
        raise PatchFailed(f"test operation for path {path} failed, unable to get") from None


def apply_json_patch(doc: Any, operations: Sequence[Mapping[str, Any]]) -> Any:
    """RFC 6902 ``add``, ``remove``, ``replace`` and ``test``, all or nothing."""
    result = copy.deepcopy(doc)
    for operation in operations:
        op, path = operation["op"], operation["path"]
        if op == "test":
            if _get(result, path) != operation["value"]:
                raise PatchFailed(f"testing value {path} failed: test failed")
            continue
        node, last = _parent(result, path, op)
        value = copy.deepcopy(operation.get("value"))
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op == "add" and 0 <= index <= len(node):
                node.insert(index, value)
            elif op in ("remove", "replace") and 0 <= index < len(node):
                if op == "remove":
                    node.pop(index)
                else:
                    node[index] = value
            else:
                raise PatchFailed(f"{op} operation does not apply: doc is missing path: {path!r}")
        elif isinstance(node, dict):
            if op == "add":
                node[last] = value
            elif last not in node:
                raise PatchFailed(
                    f"{op} operation does not apply: doc is missing key: {path}: missing value"
                )
            elif op == "remove":
                del node[last]
            elif op == "replace":
                node[last] = value
            else:
                raise PatchFailed(f"unsupported operation {op!r}")
        else:
            raise PatchFailed(f"{op} operation does not apply: doc is missing path: {path!r}")
    return result


# -- the cluster ----------------------------------------------------------------------


@dataclass
class Rollout:
    """How the Deployment controller treats pods of one model version.

    Attributes:
        converge_after: Operator steps until the new pods are all available; None: never.
        deadline_after: With ``converge_after`` None, steps until the Deployment reports
            ``ProgressDeadlineExceeded``; None: it keeps saying it progresses.
    """

    converge_after: int | None = 2
    deadline_after: int | None = None


@dataclass
class _DeploymentState:
    obj: dict[str, Any]
    steps: int = 0


@dataclass
class FakeCluster:
    """API server + Seldon operator + Deployment controller for one namespace.

    Attributes:
        namespace: The namespace everything lives in.
        rollouts: Per model version, how its pods roll out (unscripted: in one step).
        errors: Per verb (``get``, ``create``, ``patch``, ``list``), outcomes of
            successive calls: an exception to raise, or None to proceed normally.
        replicas: Replicas of every Deployment (the HPA's minimum, say).
    """

    namespace: str = "closedloop"
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    errors: dict[str, list[BaseException | None]] = field(default_factory=dict)
    replicas: int = 2
    sdeps: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, _DeploymentState] = field(default_factory=dict)
    services: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    _rv: int = 1000

    def __post_init__(self) -> None:
        self.custom = FakeCustomObjectsApi(self)
        self.apps = FakeAppsV1Api(self)

    # bookkeeping
    def bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def record(self, verb: str, detail: Any = None) -> None:
        self.calls.append((verb, copy.deepcopy(detail)))
        script = self.errors.get(verb)
        if script:
            outcome = script.pop(0)
            if outcome is not None:
                raise outcome

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.calls]

    def patches(self) -> list[Any]:
        return [detail for verb, detail in self.calls if verb == "patch"]

    def stored(self, name: str = "closedloop") -> dict[str, Any]:
        return self.sdeps[name]

    def not_found(self, name: str) -> ApiException:
        return api_error(
            404,
            "Not Found",
            reason="NotFound",
            message=f'{PLURAL}.{GROUP} "{name}" not found',
            details={"name": name, "group": GROUP, "kind": PLURAL},
        )

    # API server writes
    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(dict(body))
        name = obj["metadata"]["name"]
        if name in self.sdeps:
            raise api_error(
                409, "Conflict", reason="AlreadyExists", message=f'"{name}" already exists'
            )
        obj["metadata"].update(generation=1, resourceVersion=self.bump(), uid=f"uid-{name}")
        obj.pop("status", None)
        self.sdeps[name] = obj
        return copy.deepcopy(obj)

    def write(self, name: str, updated: dict[str, Any]) -> dict[str, Any]:
        current = self.sdeps[name]
        updated["status"] = copy.deepcopy(current.get("status"))  # status subresource
        if updated.get("status") is None:
            updated.pop("status")
        if updated == current:
            return copy.deepcopy(current)
        if updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
        updated["metadata"]["resourceVersion"] = self.bump()
        self.sdeps[name] = updated
        return copy.deepcopy(updated)

    def patch(self, name: str, body: Any, content_type: str) -> dict[str, Any]:
        """PATCH as the API server applies it, by ``Content-Type``."""
        self.record("patch", {"content_type": content_type, "body": body})
        if name not in self.sdeps:
            raise self.not_found(name)
        current = copy.deepcopy(self.sdeps[name])
        if content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise api_error(
                    400,
                    "Bad Request",
                    message="json: cannot unmarshal object into Go value of type jsonpatch.Patch",
                )
            try:
                updated = apply_json_patch(current, body)
            except PatchFailed as error:
                raise api_error(
                    422, "Unprocessable Entity", reason="Invalid", message=str(error)
                ) from None
        elif content_type == "application/merge-patch+json":
            if not isinstance(body, dict):
                raise api_error(
                    422,
                    "Unprocessable Entity",
                    message=f' "" is invalid: patch: Invalid value: "{json.dumps(body)[:40]}...": couldn\'t get '
                    "version/kind; json parse error: json: cannot unmarshal array into Go value of "
                    'type struct { APIVersion string "json:\\"apiVersion,omitempty\\""; Kind string '
                    '"json:\\"kind,omitempty\\"" }',
                )
            expected = (body.get("metadata") or {}).get("resourceVersion")
            if expected is not None and expected != current["metadata"]["resourceVersion"]:
                raise api_error(
                    409,
                    "Conflict",
                    reason="Conflict",
                    message=f'Operation cannot be fulfilled on {PLURAL}.{GROUP} "{name}": the object '
                    "has been modified; please apply your changes to the latest version and try again",
                )
            updated = apply_merge_patch(current, body)
        else:
            raise api_error(
                415,
                "Unsupported Media Type",
                message=f"the body of the request was in an unknown format - {content_type}",
            )
        if updated["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise api_error(
                409, "Conflict", reason="Conflict", message="the object has been modified"
            )
        return self.write(name, updated)

    def seed(self, manifest: Mapping[str, Any], *, settle: bool = True) -> dict[str, Any]:
        """Store ``manifest`` as if applied earlier; with ``settle``, fully rolled out."""
        obj = self.create(manifest)
        name = obj["metadata"]["name"]
        if settle:
            scripted, self.rollouts = self.rollouts, {}
            for _ in range(3):
                self.step()
            self.rollouts = scripted
            assert self.stored(name)["status"]["state"] == "Available"
        self.calls.clear()
        return copy.deepcopy(self.stored(name))

    # the operator and the Deployment controller
    def step(self) -> None:
        """Time passes: one reconcile of every SeldonDeployment, one Deployment-controller step."""
        for name in list(self.sdeps):
            addressable = all(
                f"{name}-{p['name']}" in self.services
                for p in self.sdeps[name]["spec"]["predictors"]
            )
            changed = self._reconcile(name)
            for state in self.deployments.values():
                if state.obj["metadata"]["labels"][SELDON_ID] == name:
                    self._progress(state)
            self._write_status(name, changed, addressable)

    def _desired(self, sdep: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        name = sdep["metadata"]["name"]
        out: dict[str, dict[str, Any]] = {}
        for predictor in sdep["spec"]["predictors"]:
            parameters = json.dumps(
                predictor["graph"].get("parameters") or [], separators=(",", ":")
            )
            for index, component in enumerate(predictor.get("componentSpecs") or []):
                template = copy.deepcopy(component["spec"])
                containers = template["containers"]
                deployment_name = f"{name}-{predictor['name']}-{index}-" + "-".join(
                    c["name"] for c in containers
                )
                for container in containers:
                    if container["name"] != predictor["graph"]["name"]:
                        continue
                    env = [
                        e
                        for e in container.get("env") or []
                        if e["name"] not in ("PREDICTIVE_UNIT_PARAMETERS", "PREDICTOR_ID")
                    ]
                    env += [
                        {"name": "PREDICTIVE_UNIT_PARAMETERS", "value": parameters},
                        {"name": "PREDICTOR_ID", "value": predictor["name"]},
                        {"name": "SELDON_DEPLOYMENT_ID", "value": name},
                    ]
                    container["env"] = env
                labels = {
                    SELDON_ID: name,
                    **(predictor.get("labels") or {}),
                    **((component.get("metadata") or {}).get("labels") or {}),
                }
                out[deployment_name] = {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {
                        "name": deployment_name,
                        "namespace": self.namespace,
                        "labels": {SELDON_ID: name},
                    },
                    "spec": {
                        "replicas": self.replicas,
                        "selector": {"matchLabels": {SELDON_ID: name}},
                        "template": {"metadata": {"labels": labels}, "spec": template},
                    },
                }
        return out

    def _reconcile(self, name: str) -> bool:
        """Create or update the Deployments; True when one had to be written."""
        sdep = self.sdeps[name]
        desired = self._desired(sdep)
        changed = False
        for deployment_name, wanted in desired.items():
            state = self.deployments.get(deployment_name)
            if state is None:
                wanted["metadata"].update(generation=1)
                wanted["status"] = {}
                self.deployments[deployment_name] = _DeploymentState(wanted)
                changed = True
            elif state.obj["spec"] != wanted["spec"]:
                state.obj["spec"] = wanted["spec"]
                state.obj["metadata"]["generation"] += 1
                state.steps = 0
                changed = True
        for deployment_name in [
            d
            for d, s in self.deployments.items()
            if s.obj["metadata"]["labels"][SELDON_ID] == name and d not in desired
        ]:
            del self.deployments[deployment_name]
        for predictor in sdep["spec"]["predictors"]:
            self.services[f"{name}-{predictor['name']}"] = EXECUTOR_PORT
        return changed

    def _progress(self, state: _DeploymentState) -> None:
        obj = state.obj
        spec, status = obj["spec"], obj.setdefault("status", {})
        version = _template_version(obj)
        rollout = self.rollouts.get(version or "", Rollout(converge_after=1))
        state.steps += 1
        status["observedGeneration"] = obj["metadata"]["generation"]
        replicas = spec["replicas"]
        if rollout.converge_after is not None and state.steps >= rollout.converge_after:
            status.update(
                replicas=replicas,
                updatedReplicas=replicas,
                availableReplicas=replicas,
                readyReplicas=replicas,
                unavailableReplicas=0,
            )
            status["conditions"] = [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ]
            return
        # maxSurge: one new pod is created and is not ready yet; the old ones keep serving.
        old_available = min(status.get("availableReplicas", 0), replicas)
        status.update(
            replicas=replicas + 1,
            updatedReplicas=1,
            availableReplicas=old_available,
            readyReplicas=old_available,
            unavailableReplicas=replicas + 1 - old_available,
        )
        progressing = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
        if rollout.deadline_after is not None and state.steps >= rollout.deadline_after:
            progressing = {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{obj["metadata"]["name"]}-new" has timed out progressing.',
            }
        status["conditions"] = [{"type": "Available", "status": "True"}, progressing]

    def _write_status(self, name: str, changed: bool, addressable: bool) -> None:
        sdep = self.sdeps[name]
        mine = [
            s.obj
            for s in self.deployments.values()
            if s.obj["metadata"]["labels"][SELDON_ID] == name
        ]
        # createDeployments: a Deployment just updated is not ready; else ready means
        # readyReplicas > 0 and unavailableReplicas == 0 (updatedReplicas is not looked at).
        ready = not changed and all(
            d["status"].get("readyReplicas", 0) > 0
            and d["status"].get("unavailableReplicas", 0) == 0
            for d in mine
        )
        stuck = any(
            c.get("reason") == "ProgressDeadlineExceeded"
            for d in mine
            for c in d["status"].get("conditions") or []
        )
        first = sdep["spec"]["predictors"][0]["name"]
        status: dict[str, Any] = {
            "state": "Available" if ready else ("Failed" if stuck else "Creating"),
            "deploymentStatus": {
                d["metadata"]["name"]: {
                    "replicas": d["status"].get("replicas", 0),
                    "availableReplicas": d["status"].get("availableReplicas", 0),
                }
                for d in mine
            },
        }
        address = (sdep.get("status") or {}).get("address")
        if addressable:
            url = f"http://{name}-{first}.{self.namespace}.svc.cluster.local:{EXECUTOR_PORT}"
            address = {"url": url + "/api/v1.0/predictions"}
        if address:
            status["address"] = address
        if stuck and not ready:
            status["description"] = "Deployment is no longer progressing and not available."
        if sdep.get("status") != status:
            sdep["status"] = status
            sdep["metadata"]["resourceVersion"] = self.bump()


def _template_version(deployment: Mapping[str, Any]) -> str | None:
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        for env in container.get("env") or []:
            if env["name"] == "PREDICTIVE_UNIT_PARAMETERS":
                for parameter in json.loads(env["value"]):
                    if parameter["name"] == "version":
                        return str(parameter["value"])
    return None


def _versions(sdep: Mapping[str, Any]) -> dict[str, str]:
    return {
        p["name"]: next(str(q["value"]) for q in p["graph"]["parameters"] if q["name"] == "version")
        for p in sdep["spec"]["predictors"]
    }


class FakeClock:
    """The deployer's clock: each ``sleep`` is time in which the cluster takes one step."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.cluster.step()


# -- the client surface ----------------------------------------------------------------


class _Response:
    """What ``_preload_content=False`` returns: the raw response, JSON in ``data``."""

    def __init__(self, payload: Any) -> None:
        self.data = json.dumps(payload).encode()
        self.status = 200


class FakeApiClient:
    """``ApiClient.call_api`` for PATCH of a SeldonDeployment, honouring ``Content-Type``."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def call_api(
        self,
        resource_path: str,
        method: str,
        path_params: Mapping[str, str] | None = None,
        query_params: Any = None,
        header_params: Mapping[str, str] | None = None,
        body: Any = None,
        **kwargs: Any,
    ) -> Any:
        params = dict(path_params or {})
        assert method == "PATCH" and resource_path.endswith("/{plural}/{name}"), resource_path
        assert (params["group"], params["version"], params["plural"]) == (GROUP, VERSION, PLURAL)
        assert params["namespace"] == self.cluster.namespace
        content_type = (header_params or {}).get("Content-Type", "application/json")
        return self.cluster.patch(params["name"], body, content_type)


class FakeCustomObjectsApi:
    """``kubernetes.client.CustomObjectsApi`` over a :class:`FakeCluster`."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.api_client = FakeApiClient(cluster)

    def _check(self, group: str, version: str, namespace: str, plural: str) -> None:
        assert (group, version, plural) == (GROUP, VERSION, PLURAL)
        assert namespace == self.cluster.namespace

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        self._check(group, version, namespace, plural)
        self.cluster.record("get", name)
        if name not in self.cluster.sdeps:
            raise self.cluster.not_found(name)
        return copy.deepcopy(self.cluster.sdeps[name])

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any
    ) -> dict[str, Any]:
        self._check(group, version, namespace, plural)
        self.cluster.record("create", body)
        return self.cluster.create(body)

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> dict[str, Any]:
        """Like client 30.1.0: always ``application/merge-patch+json``, whatever ``body`` is."""
        self._check(group, version, namespace, plural)
        return self.cluster.patch(name, body, "application/merge-patch+json")


class FakeAppsV1Api:
    """``kubernetes.client.AppsV1Api.list_namespaced_deployment`` over a :class:`FakeCluster`."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def list_namespaced_deployment(
        self,
        namespace: str,
        *,
        label_selector: str = "",
        _preload_content: bool = True,
        **kwargs: Any,
    ) -> Any:
        assert namespace == self.cluster.namespace
        assert _preload_content is False, "the deployer reads the raw JSON"
        self.cluster.record("list", label_selector)
        key, _, value = label_selector.partition("=")
        items = [
            copy.deepcopy(s.obj)
            for s in self.cluster.deployments.values()
            if not key or s.obj["metadata"]["labels"].get(key) == value
        ]
        return _Response({"kind": "DeploymentList", "apiVersion": "apps/v1", "items": items})
