"""The trigger's HTTP face: drift CloudEvents on ``--port``, ``/healthz`` and ``/metrics`` on ``--metrics-port``.

``POST /`` takes a binary-mode drift CloudEvent
(:class:`~closedloop.drift.sidecar.alarm.DriftAlarm`) and answers:

* ``200`` with the outcome (``decided`` → ``fired``/``suppressed`` and the reason, or
  ``duplicate``) — the sidecar stops retrying;
* ``400`` for an invalid event — not a drift CloudEvent, JSON nested too deeply to parse,
  a name or time the state cannot file — the sidecar drops it;
* ``413`` for a body over :data:`MAX_BODY_BYTES` (1 MiB; an alarm is a few kB), with or
  without ``Content-Length``: nothing past the limit is read;
* ``503`` when S3 is unreachable, or another replica is still deciding the same alarm
  id — the sidecar retries.

Every answer but ``200`` is ``{"error": "<why>"}``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar import asgi
from closedloop.drift.sidecar.alarm import AlarmError, DriftAlarm
from closedloop.storage import StorageError, Store
from closedloop.trigger.backends import (
    Backend,
    KfpBackend,
    LocalBackend,
    load_pipeline,
    pipeline_package,
)
from closedloop.trigger.errors import (
    DecisionInProgressError,
    TriggerError,
    UnfilableAlarmError,
)
from closedloop.trigger.service import RetrainTrigger, TriggerSettings
from closedloop.trigger.state import TriggerStore

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
"""Largest drift CloudEvent body accepted (a sidecar's alarm is a few kB)."""


@dataclass(frozen=True)
class TriggerOptions:
    """Everything ``closedloop trigger serve`` is told.

    Attributes:
        host: Interface for drift CloudEvents.
        port: Port for drift CloudEvents.
        metrics_host: Interface for ``/healthz`` and ``/metrics``.
        metrics_port: Port for ``/healthz`` and ``/metrics``.
        policy_path: The drift policy file.
        backend: ``kfp`` or ``local``.
        pipeline: A registered pipeline name; for ``kfp`` also a compiled YAML path, for
            ``local`` also ``module:function``.
        kfp_host: The KFP API endpoint (``kfp`` backend).
        experiment: The KFP experiment (``kfp`` backend).
        kfp_namespace: The user namespace in multi-user Kubeflow (``kfp`` backend).
        local_root: Where ``kfp.local`` runs keep their artifacts (``local`` backend).
        settings: State, retries and fixed pipeline arguments.
        log_level: Logging level name.
        component_image: The image every step of a run uses (``kfp`` backend); ``None``
            keeps the compiled one.
        image_pull_secrets: Secrets the step pods pull images with (``kfp`` backend).
        cache: ``False`` runs every step afresh (``kfp`` backend); ``True`` keeps the
            compiled per-task caching settings.
    """

    host: str
    port: int
    metrics_host: str
    metrics_port: int
    policy_path: Path
    backend: Literal["kfp", "local"]
    pipeline: str
    kfp_host: str | None
    experiment: str
    kfp_namespace: str | None
    local_root: Path
    settings: TriggerSettings
    log_level: str = "info"
    component_image: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    cache: bool = True


def make_backend(options: TriggerOptions) -> Backend:
    """Build the backend the options name.

    Raises:
        TriggerError: If the pipeline cannot be found or the KFP host is missing.
    """
    if options.backend == "kfp":
        if not options.kfp_host:
            raise TriggerError("the kfp backend needs --kfp-host (or KF_PIPELINES_ENDPOINT)")
        return KfpBackend(
            options.kfp_host,
            pipeline_package(options.pipeline),
            options.experiment,
            options.kfp_namespace,
            component_image=options.component_image,
            image_pull_secrets=options.image_pull_secrets,
            cache=options.cache,
        )
    return LocalBackend(load_pipeline(options.pipeline), options.local_root)


def build_app(trigger: RetrainTrigger, events_port: int, ops_port: int) -> asgi.PortDispatch:
    """Return the ASGI app serving *trigger* on the two ports."""

    async def receive_alarm(request: Request) -> Response:
        body = await asgi.read_body(request, MAX_BODY_BYTES)
        if body is None:
            trigger.metrics.alarm("unknown", "invalid")
            return JSONResponse(
                {"error": f"the body is over the limit of {MAX_BODY_BYTES} bytes"},
                status_code=413,
            )
        try:
            alarm = DriftAlarm.from_http(request.headers, body)
        except AlarmError as exc:
            trigger.metrics.alarm("unknown", "invalid")
            return JSONResponse({"error": str(exc)}, status_code=400)
        except RecursionError:
            # Python's JSON parser gives up on deep nesting (an alarm nests 4 levels).
            trigger.metrics.alarm("unknown", "invalid")
            return JSONResponse(
                {"error": "invalid CloudEvent: the body is nested too deeply to parse"},
                status_code=400,
            )
        try:
            outcome = await anyio.to_thread.run_sync(trigger.handle, alarm)
        except UnfilableAlarmError as exc:
            trigger.metrics.alarm("unknown", "invalid")
            return JSONResponse({"error": str(exc)}, status_code=400)
        except DecisionInProgressError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        except StorageError as exc:
            log.error("alarm %s not decided: %s", alarm.id, exc)
            return JSONResponse({"error": f"state store unavailable: {exc}"}, status_code=503)
        return JSONResponse(outcome.to_dict())

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        trigger.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(trigger.stop)

    events = Starlette(routes=[Route("/", receive_alarm, methods=["POST"])], lifespan=lifespan)
    ops = Starlette(
        routes=[
            Route("/healthz", asgi.health_endpoint(trigger.status), methods=["GET"]),
            Route("/metrics", asgi.metrics_endpoint(trigger.metrics.registry), methods=["GET"]),
        ]
    )
    return asgi.PortDispatch({events_port: events, ops_port: ops}, lifespan=events)


def run_trigger(options: TriggerOptions) -> None:
    """Build the backend and serve until SIGTERM/SIGINT.

    Raises:
        ClosedLoopError: A bad policy, a taken port, an unknown pipeline.
    """
    policy = DriftPolicy.load(options.policy_path)
    sockets = [
        asgi.bind(options.host, options.port),
        asgi.bind(options.metrics_host, options.metrics_port),
    ]
    try:
        backend = make_backend(options)
        trigger = RetrainTrigger(
            options.settings, policy, backend, TriggerStore(Store(), options.settings.state_uri)
        )
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    log.info(
        "retrain trigger %s: alarms on %s:%d, metrics on %s:%d, backend %s, pipeline %s",
        options.settings.replica,
        options.host,
        asgi.port_of(sockets[0]),
        options.metrics_host,
        asgi.port_of(sockets[1]),
        backend.name,
        options.pipeline,
    )
    app = build_app(trigger, asgi.port_of(sockets[0]), asgi.port_of(sockets[1]))
    asgi.run(app, sockets, options.log_level, graceful_seconds=10)
