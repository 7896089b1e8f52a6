"""Where retraining runs execute, behind one small interface.

* :class:`KfpBackend` — the Kubeflow Pipelines API, through
  ``kfp.Client(host).create_run_from_pipeline_package(package, arguments, run_name=...,
  experiment_name=...)``. KFP has no idempotency key, so the trigger gives every run a
  deterministic name and, before each creation attempt, looks for a run of that name in
  the experiment (:meth:`KfpBackend.find`): an attempt whose answer was lost after the
  run was created is adopted, not repeated. The compiled package names the component
  image the package was built with; the backend submits a copy retargeted
  (:func:`closedloop.pipelines.package.retarget`) at the deployment's component image
  and image pull secrets, so skaffold's tags and an overlay's ``images:`` reach the
  steps of every retraining run.
* :class:`LocalBackend` — ``kfp.local`` (``SubprocessRunner(use_venv=False)``) in one
  worker thread, one run at a time, for local mode. Its runs live in this process: a
  restarted trigger reports them ``unknown`` and the trigger marks them failed.

kfp is imported only inside the backends.
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from closedloop.trigger.errors import (
    BackendRejectedError,
    BackendUnavailableError,
    PipelineNotFoundError,
    TriggerError,
)

log = logging.getLogger(__name__)

BackendRunState = Literal["running", "succeeded", "failed", "unknown"]

_KFP_TERMINAL: Mapping[str, BackendRunState] = {
    "SUCCEEDED": "succeeded",
    "SKIPPED": "succeeded",
    "FAILED": "failed",
    "CANCELED": "failed",
}


@dataclass(frozen=True)
class RunRequest:
    """A run to start.

    Attributes:
        run_name: Deterministic name (the same for every attempt of one run).
        arguments: Pipeline parameters.
    """

    run_name: str
    arguments: Mapping[str, Any]


def typed_arguments(request: RunRequest, types: Mapping[str, str]) -> dict[str, Any]:
    """Convert ``--pipeline-arg`` strings to the types the pipeline declares.

    Raises:
        BackendRejectedError: An argument the pipeline does not take or of the wrong type
            (retrying cannot help).
    """
    from closedloop.pipelines.params import ParameterError, coerce

    try:
        return coerce(request.arguments, types, f"pipeline of {request.run_name}")
    except ParameterError as exc:
        raise BackendRejectedError(str(exc)) from exc


class Backend(Protocol):
    """What the trigger needs from a place that runs pipelines."""

    name: str
    shared: bool
    """Whether any trigger replica can query a run (False: only the one that submitted it)."""

    def declared_inputs(self) -> frozenset[str]:
        """The pipeline's parameter names."""
        ...

    def find(self, run_name: str) -> str | None:
        """Return the id of an existing run with this name, if any."""
        ...

    def submit(self, request: RunRequest) -> str:
        """Start a run and return its id.

        Raises:
            BackendUnavailableError: The backend is down (retry later).
            BackendRejectedError: The backend refused the run (do not retry).
        """
        ...

    def state(self, run_id: str) -> BackendRunState:
        """Where a run stands."""
        ...

    def close(self) -> None:
        """Release resources (stop workers)."""
        ...


# -- pipelines ------------------------------------------------------------------------
def load_pipeline(spec: str) -> Callable[..., Any]:
    """Return a pipeline function: ``module.path:attribute`` or a registered name.

    Raises:
        PipelineNotFoundError: If nothing of that name can be imported.
    """
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise PipelineNotFoundError(f"cannot import the pipeline {spec!r}: {exc}") from exc
    from closedloop.pipelines.registry import UnknownPipelineError, get

    try:
        return get(spec)
    except UnknownPipelineError as exc:
        raise PipelineNotFoundError(str(exc)) from exc


def pipeline_package(spec: str) -> Path:
    """Return a compiled pipeline file: a path to YAML, or ``compiled/<name>.yaml`` of a registered name.

    Raises:
        PipelineNotFoundError: If the file does not exist.
    """
    if spec.endswith((".yaml", ".yml", ".json")):
        path = Path(spec)
    else:
        import closedloop.pipelines

        path = Path(closedloop.pipelines.__file__).parent / "compiled" / f"{spec}.yaml"
    if not path.is_file():
        raise PipelineNotFoundError(
            f"no compiled pipeline at {path}: give a YAML path or a name compiled by "
            "`closedloop compile`"
        )
    return path


# -- KFP ------------------------------------------------------------------------------
class KfpBackend:
    """Runs on Kubeflow Pipelines through ``kfp.Client``.

    Args:
        host: The KFP API endpoint (``KF_PIPELINES_ENDPOINT``).
        package: The compiled pipeline YAML.
        experiment: The experiment runs are filed under (created if missing).
        namespace: The user namespace in multi-user Kubeflow, if any.
        component_image: The image every step runs in (the deployment's, e.g. the tag
            skaffold pushed); ``None`` keeps the image compiled into *package*.
        image_pull_secrets: Secrets (in the namespace the runs execute in) the step pods
            pull images with.
        cache: ``False`` switches caching off for every task; ``True`` keeps the
            compiled per-task settings.

    Raises:
        TriggerError: If the package cannot be retargeted (not a compiled pipeline, an
            empty or malformed image or secret name).
    """

    name = "kfp"
    shared = True

    def __init__(
        self,
        host: str,
        package: str | Path,
        experiment: str,
        namespace: str | None = None,
        *,
        component_image: str | None = None,
        image_pull_secrets: Sequence[str] = (),
        cache: bool = True,
    ) -> None:
        self.host = host
        self.source_package = Path(package)
        self.experiment = experiment
        self.namespace = namespace
        self.component_image = component_image
        self.image_pull_secrets = tuple(image_pull_secrets)
        self.cache = cache
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        # What runs are created from: *package* itself, or its retargeted copy.
        self.package = self._retargeted()
        self._client: Any = None
        self._lock = threading.Lock()

    def _retargeted(self) -> Path:
        """Write the copy of the package that runs are created from, once.

        The copy lives in a private temporary directory (``$TMPDIR``; ``/tmp`` is a
        writable ``emptyDir`` in the trigger's pod) removed by :meth:`close`.
        """
        if self.component_image is None and not self.image_pull_secrets and self.cache:
            return self.source_package
        from closedloop.pipelines.package import PackageError, retarget

        self._workdir = tempfile.TemporaryDirectory(prefix="closedloop-trigger-")
        target = Path(self._workdir.name) / self.source_package.name
        try:
            retarget(
                self.source_package,
                target,
                component_image=self.component_image,
                image_pull_secrets=self.image_pull_secrets,
                no_cache=not self.cache,
            )
        except PackageError as exc:
            self.close()
            raise TriggerError(f"cannot prepare the pipeline package for KFP: {exc}") from exc
        log.info(
            "kfp: runs use %s (component image %s, image pull secrets %s, cache %s)",
            target,
            self.component_image or "as compiled",
            ", ".join(self.image_pull_secrets) or "none",
            "as compiled" if self.cache else "off",
        )
        return target

    def declared_inputs(self) -> frozenset[str]:
        """The parameters in the package's ``root.inputDefinitions``."""
        import yaml

        try:
            docs = list(yaml.safe_load_all(self.package.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise PipelineNotFoundError(f"cannot read the pipeline {self.package}: {exc}") from exc
        inputs = (docs[0] or {}).get("root", {}).get("inputDefinitions", {})
        return frozenset({*inputs.get("parameters", {}), *inputs.get("artifacts", {})})

    def client(self) -> Any:
        """The ``kfp.Client`` (created on first use; creation calls the API's healthz).

        With an explicit host, ``kfp.Client`` sends no credentials of its own; when
        ``KF_PIPELINES_SA_TOKEN_PATH`` names a token file (the projected service-account
        token of multi-user Kubeflow), it is sent as a bearer token, refreshed as the
        kubelet rotates it.
        """
        with self._lock:
            if self._client is None:
                import kfp
                from kfp.client import ServiceAccountTokenVolumeCredentials

                kwargs: dict[str, Any] = {"host": self.host}
                if self.namespace:
                    kwargs["namespace"] = self.namespace
                token = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH")
                if token and Path(token).is_file():
                    kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(token)
                self._client = self._call("connect to", lambda: kfp.Client(**kwargs))
            return self._client

    def find(self, run_name: str) -> str | None:
        """Look for a run named *run_name* in the experiment."""
        import json

        client = self.client()
        try:
            experiment = self._call(
                "look up the experiment of",
                lambda: client.get_experiment(
                    experiment_name=self.experiment, namespace=self.namespace
                ),
            )
        except BackendRejectedError:
            return None  # no experiment yet, so no run either
        name_filter = json.dumps(
            {"predicates": [{"operation": 1, "key": "display_name", "stringValue": run_name}]}
        )
        response = self._call(
            "list the runs of",
            lambda: client.list_runs(
                experiment_id=experiment.experiment_id, filter=name_filter, page_size=10
            ),
        )
        runs = [r for r in (response.runs or []) if r.display_name == run_name]
        return runs[0].run_id if runs else None

    def parameter_types(self) -> dict[str, str]:
        """The package's root parameters and their KFP types."""
        from closedloop.pipelines.params import types_of_package

        return types_of_package(self.package)

    def submit(self, request: RunRequest) -> str:
        """Create the run from the compiled package."""
        arguments = typed_arguments(request, self.parameter_types())
        request = RunRequest(request.run_name, arguments)
        client = self.client()
        result = self._call(
            "create a run on",
            lambda: client.create_run_from_pipeline_package(
                str(self.package),
                arguments=dict(request.arguments),
                run_name=request.run_name,
                experiment_name=self.experiment,
                namespace=self.namespace,
            ),
        )
        return str(result.run_id)

    def state(self, run_id: str) -> BackendRunState:
        """Map the KFP run state to running/succeeded/failed."""
        client = self.client()
        run = self._call("read a run on", lambda: client.get_run(run_id))
        return _KFP_TERMINAL.get(str(run.state or ""), "running")

    def close(self) -> None:
        """Remove the retargeted package, if one was written."""
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        from kfp_server_api.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        try:
            return call()
        except ApiException as exc:
            status = int(exc.status or 0)
            if status == 0 or status >= 500 or status in (408, 429):
                raise BackendUnavailableError(
                    f"could not {what} KFP at {self.host}: HTTP {status} {exc.reason}"
                ) from exc
            raise BackendRejectedError(
                f"KFP at {self.host} refused to {what.split(' ', 1)[-1]}: HTTP {status} {exc.reason}"
            ) from exc
        except (Urllib3Error, OSError, TimeoutError) as exc:
            raise BackendUnavailableError(f"could not {what} KFP at {self.host}: {exc}") from exc
        except ValueError as exc:  # kfp: "No experiment is found with name …", bad package
            raise BackendRejectedError(f"could not {what} KFP at {self.host}: {exc}") from exc


# -- kfp.local ------------------------------------------------------------------------
class LocalBackend:
    """Runs a pipeline function with ``kfp.local`` in one worker thread, one run at a time.

    Args:
        pipeline: The ``@dsl.pipeline`` function.
        pipeline_root: Where each run's artifacts go (``<root>/<run name>/``).
    """

    name = "local"
    shared = False

    def __init__(self, pipeline: Callable[..., Any], pipeline_root: str | Path) -> None:
        self.pipeline = pipeline
        self.pipeline_root = Path(pipeline_root)
        self._states: dict[str, BackendRunState] = {}
        self._queue: queue.Queue[RunRequest | None] = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="kfp-local", daemon=True)
        self._worker.start()

    def declared_inputs(self) -> frozenset[str]:
        """The pipeline function's parameters."""
        spec = getattr(self.pipeline, "component_spec", None)
        return frozenset((spec.inputs or {}) if spec is not None else {})

    def find(self, run_name: str) -> str | None:
        """A run of this process with that name, if any."""
        with self._lock:
            return run_name if run_name in self._states else None

    def parameter_types(self) -> dict[str, str]:
        """The pipeline function's parameters and their KFP types."""
        from closedloop.pipelines.params import types_of_function

        return types_of_function(self.pipeline)

    def submit(self, request: RunRequest) -> str:
        """Queue the run for the worker; its id is its name."""
        from closedloop.local.pipelines import with_local_defaults

        arguments = typed_arguments(request, self.parameter_types())
        request = RunRequest(
            request.run_name, with_local_defaults(self.declared_inputs(), arguments)
        )
        with self._lock:
            if request.run_name not in self._states:
                self._states[request.run_name] = "running"
                self._queue.put(request)
        return request.run_name

    def state(self, run_id: str) -> BackendRunState:
        """``unknown`` for runs of another process (e.g. before a restart)."""
        with self._lock:
            return self._states.get(run_id, "unknown")

    def close(self) -> None:
        """Let the current run finish, then stop the worker."""
        self._queue.put(None)
        self._worker.join(timeout=1.0)

    def _work(self) -> None:
        from kfp import local

        while (request := self._queue.get()) is not None:
            root = self.pipeline_root / request.run_name
            root.mkdir(parents=True, exist_ok=True)
            log.info("kfp.local: starting %s in %s", request.run_name, root)
            try:
                local.init(
                    runner=local.SubprocessRunner(use_venv=False),
                    pipeline_root=str(root),
                    raise_on_error=True,
                )
                self.pipeline(**dict(request.arguments))
                outcome: BackendRunState = "succeeded"
            except Exception:  # a failed run, whatever the pipeline raised: record it
                log.exception("kfp.local: run %s failed", request.run_name)
                outcome = "failed"
            log.info("kfp.local: %s %s", request.run_name, outcome)
            with self._lock:
                self._states[request.run_name] = outcome
