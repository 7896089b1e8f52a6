"""The sidecar's HTTP face: CloudEvents on ``--port``, ``/healthz`` and ``/metrics`` on ``--metrics-port``.

Event port (``POST /``, where the Seldon request logger posts):

* ``200 {"status": "accepted", "rows": n}`` — request rows taken into windows;
* ``200 {"status": "buffered", "rows": n}`` — feedback rows taken for the archive;
* ``200 {"status": "duplicate"}`` — ``(Ce-Source, Ce-Id)`` seen before, nothing done;
* ``200 {"status": "recorded", "rows": n}`` — a response event remembered by its puid,
  for feedback to join;
* ``202 {"status": "ignored"}`` — a response event that cannot be joined (no
  ``Ce-Requestid``, or no scores of the model's shape): counted, not used;
* ``202 {"status": "skipped", "reason": "..."}`` — an event with a protobuf body, i.e.
  traffic on the executor's gRPC port: drift watches REST traffic only, so it is
  counted (``closedloop_sidecar_grpc_events_skipped_total``) and enters no window. Not
  an error: the executor would only log every refused event (it does not retry);
* ``400 {"error": "...", "reason": "..."}`` — the event is invalid and was not taken;
* ``413`` — a body over :data:`MAX_BODY_BYTES`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar import asgi
from closedloop.drift.sidecar.errors import EventRejected
from closedloop.drift.sidecar.loader import load_served_detector
from closedloop.drift.sidecar.monitor import DriftMonitor, MonitorSettings
from closedloop.storage import Store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
GRPC_SKIPPED = "protobuf body (gRPC traffic): drift watches REST (JSON) traffic only"


@dataclass(frozen=True)
class SidecarOptions:
    """Everything ``closedloop sidecar serve`` is told.

    Attributes:
        host: Interface for CloudEvents (``127.0.0.1`` in a pod: only the executor posts).
        port: Port for CloudEvents.
        metrics_host: Interface for ``/healthz`` and ``/metrics``.
        metrics_port: Port for ``/healthz`` and ``/metrics``.
        registry_uri: The model registry root.
        model_name: The served model.
        model_version: ``v<N>`` or ``champion`` (resolved once at start-up).
        policy_path: The drift policy file.
        monitor: Windows, checkpoints, alarms and archive settings.
        log_level: Logging level name.
    """

    host: str
    port: int
    metrics_host: str
    metrics_port: int
    registry_uri: str
    model_name: str
    model_version: str
    policy_path: Path
    monitor: MonitorSettings
    log_level: str = "info"


def build_app(monitor: DriftMonitor, events_port: int, ops_port: int) -> asgi.PortDispatch:
    """Return the ASGI app serving *monitor* on the two ports."""

    async def receive_event(request: Request) -> Response:
        body = await asgi.read_body(request, MAX_BODY_BYTES)
        if body is None:
            monitor.metrics.rejected("too_large")
            return JSONResponse(
                {"error": f"body over {MAX_BODY_BYTES} bytes", "reason": "too_large"},
                status_code=413,
            )
        try:
            result = monitor.ingest(request.headers, body)
        except EventRejected as exc:
            return JSONResponse({"error": str(exc), "reason": exc.reason}, status_code=400)
        if result.outcome == "ignored":
            return JSONResponse({"status": "ignored"}, status_code=202)
        if result.outcome == "skipped":
            return JSONResponse({"status": "skipped", "reason": GRPC_SKIPPED}, status_code=202)
        return JSONResponse({"status": result.outcome, "rows": result.rows})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        monitor.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(monitor.stop)

    events = Starlette(routes=[Route("/", receive_event, methods=["POST"])], lifespan=lifespan)
    ops = Starlette(
        routes=[
            Route("/healthz", asgi.health_endpoint(monitor.status), methods=["GET"]),
            Route("/metrics", asgi.metrics_endpoint(monitor.metrics.registry), methods=["GET"]),
        ]
    )
    return asgi.PortDispatch({events_port: events, ops_port: ops}, lifespan=events)


def run_sidecar(options: SidecarOptions) -> None:
    """Load the served version's detector, resume from the state directory and serve.

    Returns when the server stops (SIGTERM/SIGINT), after the final checkpoint.

    Raises:
        ClosedLoopError: A bad policy, a taken port, an unreachable registry, a version
            without a detector, or an unusable state directory.
    """
    policy = DriftPolicy.load(options.policy_path)
    sockets = [
        asgi.bind(options.host, options.port),
        asgi.bind(options.metrics_host, options.metrics_port),
    ]
    try:
        served = load_served_detector(
            Store(), options.registry_uri, options.model_name, options.model_version
        )
        monitor = DriftMonitor(options.monitor, policy, served, Store())
        monitor.open()
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    log.info(
        "drift sidecar for %s %s: events on %s:%d, metrics on %s:%d, alarms to %s",
        served.model_name,
        served.version,
        options.host,
        asgi.port_of(sockets[0]),
        options.metrics_host,
        asgi.port_of(sockets[1]),
        options.monitor.trigger_url,
    )
    app = build_app(monitor, asgi.port_of(sockets[0]), asgi.port_of(sockets[1]))
    asgi.run(app, sockets, options.log_level, graceful_seconds=5)
