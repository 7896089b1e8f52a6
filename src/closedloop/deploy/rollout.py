"""What a version rollout changes in a live SeldonDeployment, and how to tell it is done.

Pure functions over JSON-compatible dicts; no Kubernetes client is needed here.

**The narrow patch.** A live SeldonDeployment carries more than our builder wrote:
overlay settings (HPA bounds, resources, gunicorn workers), image tags set by kustomize,
labels such as ``closedloop.io/environment``. A rollout must change only the fields that
carry the model version and leave the rest alone, so :func:`narrow_patch` returns an
RFC 6902 JSON Patch whose ``replace`` operations touch exactly those fields, each one
preceded by a ``test`` of the value it replaces. (A JSON merge patch cannot do this: it
replaces lists such as ``predictors`` and ``containers`` whole.)

The fields that carry a predictor's version (see :func:`version_fields`):

* ``graph.parameters[name=version].value``: the operator turns the graph parameters into
  the model container's ``PREDICTIVE_UNIT_PARAMETERS`` (``addModelEnvs`` in Seldon's
  ``operator/controllers/seldondeployment_controller.go``), i.e. the constructor kwargs
  of the model class; this is the version that is served;
* the ``PREDICTIVE_UNIT_PARAMETERS`` env value our builder also writes on the container;
* the drift sidecar's ``--model-version`` argument;
* the predictor labels ``version`` and ``closedloop.io/model-version`` and the pod
  template label ``closedloop.io/model-version``;
* for the first predictor, the SeldonDeployment's own ``closedloop.io/model-version``
  label and annotation.

**Done.** Seldon Core v1's operator never writes ``status.observedGeneration`` on the
SeldonDeployment, so its ``state: Available`` may describe the previous spec. A rollout
is judged on the Deployments the operator owns (label ``seldon-deployment-id``) with
kubectl's own rule (``k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go``) plus a
check that their pod template carries the expected version: see
:func:`deployment_progress`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from closedloop.deploy.seldon import (
    ANNOTATION_CHALLENGER_TRAFFIC,
    ANNOTATION_CHALLENGER_VERSION,
    ANNOTATION_ROLLOUT,
    LABEL_MODEL_VERSION,
    LABEL_PREFIX,
    MODEL_CONTAINER,
)

Operation = dict[str, Any]

VERSION_PARAMETER = "version"
"""Name of the graph parameter (and constructor kwarg) holding the served version."""
PARAMETERS_ENV = "PREDICTIVE_UNIT_PARAMETERS"
MODEL_VERSION_ARG = "--model-version"
PREDICTOR_ID_ENV = "PREDICTOR_ID"
"""Set by the operator on every predictive-unit container (``createContainerService``)."""
SELDON_ID_LABEL = "seldon-deployment-id"
"""Label the operator puts on every Deployment it creates for a SeldonDeployment."""

ANNOTATION_PREVIOUS_VERSION = LABEL_PREFIX + "previous-version"
"""Written by a rollout: what the first predictor served before, for a resumed rollback."""
ANNOTATION_FAILED_VERSION = LABEL_PREFIX + "failed-version"
"""Written when a rollout fails: a retry of the same version fails fast instead."""

_CHALLENGER_ANNOTATIONS = (
    ANNOTATION_CHALLENGER_VERSION,
    ANNOTATION_ROLLOUT,
    ANNOTATION_CHALLENGER_TRAFFIC,
)


class NotAClosedLoopDeployment(ValueError):
    """The live object lacks the fields this project's SeldonDeployments carry."""


def pointer(*parts: str | int) -> str:
    """Return the RFC 6901 JSON Pointer to ``parts`` (``~`` and ``/`` escaped)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def _parameters_value(raw: str, version: str) -> str:
    parameters = json.loads(raw)
    for parameter in parameters:
        if parameter.get("name") == VERSION_PARAMETER:
            parameter["value"] = version
    return json.dumps(parameters, separators=(",", ":"))


def _parameters_version(raw: str) -> str | None:
    try:
        parameters = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(parameters, list):
        return None
    return next(
        (
            str(p.get("value"))
            for p in parameters
            if isinstance(p, Mapping) and p.get("name") == VERSION_PARAMETER
        ),
        None,
    )


def predictor_version(predictor: Mapping[str, Any]) -> str:
    """Return the version a predictor serves: its graph's ``version`` parameter.

    Raises:
        NotAClosedLoopDeployment: The graph has no ``version`` parameter.
    """
    for parameter in (predictor.get("graph") or {}).get("parameters") or []:
        if parameter.get("name") == VERSION_PARAMETER:
            return str(parameter["value"])
    raise NotAClosedLoopDeployment(
        f"predictor {predictor.get('name')!r} has no graph parameter {VERSION_PARAMETER!r}"
    )


def served_versions(sdep: Mapping[str, Any]) -> dict[str, str]:
    """Return ``{predictor name: version}`` of a SeldonDeployment."""
    return {p["name"]: predictor_version(p) for p in sdep["spec"]["predictors"]}


def main_version(sdep: Mapping[str, Any]) -> str:
    """Return the version the first predictor (the one taking the traffic) serves."""
    return predictor_version(sdep["spec"]["predictors"][0])


@dataclass(frozen=True)
class VersionField:
    """One field of a live SeldonDeployment that carries a model version.

    Attributes:
        path: JSON Pointer to the field.
        value: Its current value.
        new_value: What it becomes for the target version.
    """

    path: str
    value: str
    new_value: str


def version_fields(sdep: Mapping[str, Any], index: int, version: str) -> list[VersionField]:
    """List every field of predictor ``index`` (and, for 0, of the object) carrying its version.

    Args:
        sdep: The live SeldonDeployment.
        index: Position of the predictor in ``spec.predictors``.
        version: The version the predictor should serve.

    Returns:
        The fields found, with their current and new values (equal when already there).
    """
    predictor = sdep["spec"]["predictors"][index]
    base = ("spec", "predictors", index)
    fields: list[VersionField] = []

    def add(path: str, value: Any, new_value: str) -> None:
        fields.append(VersionField(path, str(value), new_value))

    if index == 0:
        metadata = sdep.get("metadata") or {}
        for kind in ("labels", "annotations"):
            if LABEL_MODEL_VERSION in (metadata.get(kind) or {}):
                value = metadata[kind][LABEL_MODEL_VERSION]
                add(pointer("metadata", kind, LABEL_MODEL_VERSION), value, version)
    for key in ("version", LABEL_MODEL_VERSION):
        if key in (predictor.get("labels") or {}):
            add(pointer(*base, "labels", key), predictor["labels"][key], version)
    for j, parameter in enumerate((predictor.get("graph") or {}).get("parameters") or []):
        if parameter.get("name") == VERSION_PARAMETER:
            add(pointer(*base, "graph", "parameters", j, "value"), parameter["value"], version)
    for j, component in enumerate(predictor.get("componentSpecs") or []):
        labels = (component.get("metadata") or {}).get("labels") or {}
        if LABEL_MODEL_VERSION in labels:
            path = pointer(*base, "componentSpecs", j, "metadata", "labels", LABEL_MODEL_VERSION)
            add(path, labels[LABEL_MODEL_VERSION], version)
        containers = (component.get("spec") or {}).get("containers") or []
        for c, container in enumerate(containers):
            at = (*base, "componentSpecs", j, "spec", "containers", c)
            for e, env in enumerate(container.get("env") or []):
                if (
                    env.get("name") != PARAMETERS_ENV
                    or _parameters_version(env.get("value", "")) is None
                ):
                    continue
                add(
                    pointer(*at, "env", e, "value"),
                    env["value"],
                    _parameters_value(env["value"], version),
                )
            args = container.get("args") or []
            for a, arg in enumerate(args[:-1]):
                if arg == MODEL_VERSION_ARG:
                    add(pointer(*at, "args", a + 1), args[a + 1], version)
    return fields


def _test_and_replace(path: str, old: Any, new: Any) -> list[Operation]:
    return [
        {"op": "test", "path": path, "value": old},
        {"op": "replace", "path": path, "value": new},
    ]


def _set_annotation(metadata: Mapping[str, Any], key: str, value: str) -> list[Operation]:
    annotations = metadata.get("annotations")
    if annotations is None:
        return [{"op": "add", "path": pointer("metadata", "annotations"), "value": {key: value}}]
    if key in annotations:
        return _test_and_replace(pointer("metadata", "annotations", key), annotations[key], value)
    return [{"op": "add", "path": pointer("metadata", "annotations", key), "value": value}]


def _remove_annotation(metadata: Mapping[str, Any], key: str) -> list[Operation]:
    annotations = metadata.get("annotations") or {}
    if key not in annotations:
        return []
    path = pointer("metadata", "annotations", key)
    return [{"op": "test", "path": path, "value": annotations[key]}, {"op": "remove", "path": path}]


def narrow_patch(
    live: Mapping[str, Any],
    target: Mapping[str, Any],
    *,
    guard: Literal["resourceVersion", "values"],
    annotations: Mapping[str, str | None] | None = None,
) -> list[Operation]:
    """Return the JSON Patch that makes ``live`` serve what ``target`` serves, and no more.

    What changes: the version fields of every predictor present in both (by name),
    their ``traffic``, predictors added or removed (a canary started, promoted or
    aborted: an added predictor is taken whole from ``target``), our challenger
    annotations, and the extra ``annotations`` given. Everything else in ``live`` is
    left as it is.

    Args:
        live: The SeldonDeployment as just read from the API server.
        target: A SeldonDeployment serving the wanted versions (the builder's output, or
            the object as it was before a failed rollout).
        guard: ``resourceVersion``: the patch first tests ``metadata.resourceVersion``,
            so any write since ``live`` was read makes it fail. ``values``: only each
            replaced value is tested (a rollback must survive the operator's status
            writes, but not a concurrent deploy of another version).
        annotations: Annotations to set (a string) or remove (None) as well.

    Returns:
        The operations; an empty list when ``live`` already serves ``target``.

    Raises:
        NotAClosedLoopDeployment: A predictor lacks its ``version`` graph parameter.
    """
    live_predictors = list(live["spec"]["predictors"])
    target_predictors = {p["name"]: p for p in target["spec"]["predictors"]}
    live_names = [p["name"] for p in live_predictors]
    metadata = live.get("metadata") or {}
    operations: list[Operation] = []

    for index, predictor in enumerate(live_predictors):
        wanted = target_predictors.get(predictor["name"])
        if wanted is None:
            continue
        version = predictor_version(wanted)
        for field in version_fields(live, index, version):
            if field.value != field.new_value:
                operations += _test_and_replace(field.path, field.value, field.new_value)
        traffic = wanted.get("traffic")
        if traffic is not None and predictor.get("traffic") != traffic:
            path = pointer("spec", "predictors", index, "traffic")
            if "traffic" in predictor:
                operations += _test_and_replace(path, predictor["traffic"], traffic)
            else:
                operations.append({"op": "add", "path": path, "value": traffic})
    for index in reversed(range(len(live_predictors))):
        if live_names[index] not in target_predictors:
            path = pointer("spec", "predictors", index)
            operations += [
                {"op": "test", "path": path + "/name", "value": live_names[index]},
                {"op": "remove", "path": path},
            ]
    for name, predictor in target_predictors.items():
        if name not in live_names:
            operations.append(
                {
                    "op": "add",
                    "path": pointer("spec", "predictors", "-"),
                    "value": copy.deepcopy(predictor),
                }
            )

    wanted_annotations: dict[str, str | None] = {
        key: (target.get("metadata", {}).get("annotations") or {}).get(key)
        for key in _CHALLENGER_ANNOTATIONS
    }
    wanted_annotations.update(annotations or {})
    for key, value in wanted_annotations.items():
        current = (metadata.get("annotations") or {}).get(key)
        if value is None:
            operations += _remove_annotation(metadata, key)
        elif current != value:
            operations += _set_annotation(metadata, key, value)
            if metadata.get("annotations") is None:
                metadata = {**metadata, "annotations": {key: value}}

    if operations and guard == "resourceVersion":
        rv = pointer("metadata", "resourceVersion")
        operations.insert(0, {"op": "test", "path": rv, "value": metadata["resourceVersion"]})
    return operations


# -- is the rollout done? ------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Where one operator-owned Deployment stands.

    Attributes:
        state: ``done``, ``waiting`` or ``failed``.
        detail: One line for logs and error messages.
    """

    state: Literal["done", "waiting", "failed"]
    detail: str


def _model_container(deployment: Mapping[str, Any]) -> Mapping[str, Any] | None:
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    return next((c for c in containers if c.get("name") == MODEL_CONTAINER), None)


def _env(container: Mapping[str, Any], name: str) -> str | None:
    return next(
        (
            str(e["value"])
            for e in container.get("env") or []
            if e.get("name") == name and "value" in e
        ),
        None,
    )


def deployment_predictor(deployment: Mapping[str, Any]) -> str | None:
    """Return the predictor an operator-owned Deployment runs (its ``PREDICTOR_ID``)."""
    container = _model_container(deployment)
    return None if container is None else _env(container, PREDICTOR_ID_ENV)


def template_version(deployment: Mapping[str, Any]) -> str | None:
    """Return the model version a Deployment's pod template starts, if it says."""
    container = _model_container(deployment)
    if container is None:
        return None
    raw = _env(container, PARAMETERS_ENV)
    return None if raw is None else _parameters_version(raw)


def deployment_progress(deployment: Mapping[str, Any], version: str) -> Progress:
    """Tell whether a Deployment has rolled out pods serving ``version``.

    kubectl's ``rollout status`` rule (``DeploymentStatusViewer.Status`` in
    ``k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go``), preceded by a check
    that the operator has already written ``version`` into the pod template.
    """
    metadata = deployment.get("metadata") or {}
    name = metadata.get("name", "?")
    status = deployment.get("status") or {}
    serving = template_version(deployment)
    if serving != version:
        return Progress(
            "waiting", f"Deployment {name} still starts version {serving}, not {version}"
        )
    generation = metadata.get("generation") or 0
    if (status.get("observedGeneration") or 0) < generation:
        return Progress("waiting", f"Deployment {name}: generation {generation} not observed yet")
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            message = condition.get("message") or "progress deadline exceeded"
            return Progress("failed", f"Deployment {name}: {message}")
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    if updated < replicas:
        return Progress("waiting", f"Deployment {name}: {updated} of {replicas} replicas updated")
    if (status.get("replicas") or 0) > updated:
        old = status["replicas"] - updated
        return Progress("waiting", f"Deployment {name}: {old} old replicas pending termination")
    available = status.get("availableReplicas") or 0
    if available < updated:
        return Progress(
            "waiting", f"Deployment {name}: {available} of {updated} updated replicas available"
        )
    return Progress("done", f"Deployment {name}: {available} replicas serve {version}")


def rollout_progress(
    deployments: Sequence[Mapping[str, Any]], expected: Mapping[str, str]
) -> Progress:
    """Combine :func:`deployment_progress` over every predictor's Deployments.

    Args:
        deployments: The Deployments labelled ``seldon-deployment-id=<name>``.
        expected: ``{predictor name: version}`` the SeldonDeployment now asks for.

    Returns:
        ``failed`` if any failed, ``waiting`` if any predictor has no Deployment yet or
        one is not done, else ``done``.
    """
    by_predictor: dict[str, list[Mapping[str, Any]]] = {}
    for deployment in deployments:
        predictor = deployment_predictor(deployment)
        if predictor is not None:
            by_predictor.setdefault(predictor, []).append(deployment)
    waiting: list[str] = []
    done: list[str] = []
    for predictor, version in expected.items():
        found = by_predictor.get(predictor)
        if not found:
            waiting.append(f"no Deployment for predictor {predictor} yet")
            continue
        for deployment in found:
            progress = deployment_progress(deployment, version)
            if progress.state == "failed":
                return progress
            (done if progress.state == "done" else waiting).append(progress.detail)
    if waiting:
        return Progress("waiting", "; ".join(waiting))
    return Progress("done", "; ".join(done))
