"""One uvicorn server, two listening ports: the service port and the ops port.

The sidecar and the trigger both serve their CloudEvents on one port and ``/healthz`` and
``/metrics`` on another (so a NetworkPolicy or ``--host 127.0.0.1`` can keep the event
port private while Prometheus and the kubelet reach the ops port). For the trigger, one
uvicorn server listens on both sockets and routes each request by the local port it
arrived on (:class:`PortDispatch`); its own SIGTERM handling drains in-flight requests
and then runs the lifespan shutdown, where the services write their state. The sidecar
serves its ops port the same way and its event port with
:mod:`~closedloop.drift.sidecar.eventserver`, started in that lifespan. The helpers here
(binding, ``/healthz``, ``/metrics``) serve both.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from closedloop.errors import ClosedLoopError


class PortInUseError(ClosedLoopError):
    """A port to listen on is taken."""


class PortDispatch:
    """Route each connection to the app of the local port it arrived on.

    Args:
        apps: Local port → ASGI app.
        lifespan: The app whose lifespan events run (start-up and shutdown).
    """

    def __init__(self, apps: Mapping[int, ASGIApp], lifespan: ASGIApp) -> None:
        self.apps = dict(apps)
        self.lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (or the lifespan)."""
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        server = scope.get("server") or (None, None)
        app = self.apps.get(server[1])
        if app is None:
            await PlainTextResponse("no service on this port", status_code=404)(
                scope, receive, send
            )
            return
        await app(scope, receive, send)


def bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket now, so a taken port fails before slow start-up work.

    Raises:
        PortInUseError: If the address is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUseError(
            f"cannot listen on {host}:{port} ({exc.strerror}): choose another port"
        ) from exc
    sock.set_inheritable(True)
    return sock


def port_of(sock: socket.socket) -> int:
    """The local port a socket is bound to."""
    return int(sock.getsockname()[1])


async def read_body(request: Request, limit: int) -> bytes | None:
    """Read a request body of at most *limit* bytes; None if it is larger (nothing more is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def metrics_endpoint(registry: CollectorRegistry) -> Callable[[Request], Any]:
    """Return a Starlette endpoint serving *registry* in the Prometheus text format."""

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def health_endpoint(status: Callable[[], dict[str, object]]) -> Callable[[Request], Any]:
    """Return a ``/healthz`` endpoint: 200 when ``status()["status"] == "ok"``, else 503."""

    async def healthz(_: Request) -> Response:
        body = status()
        return JSONResponse(body, status_code=200 if body.get("status") == "ok" else 503)

    return healthz


def server(app: ASGIApp, log_level: str, graceful_seconds: int) -> Any:
    """The uvicorn server every closedloop HTTP service runs.

    No access log, no server header, lifespan events, a bounded drain after a signal.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=graceful_seconds,
        server_header=False,
    )
    return uvicorn.Server(config)


def run(app: ASGIApp, sockets: list[socket.socket], log_level: str, graceful_seconds: int) -> None:
    """Serve *app* on *sockets* until SIGTERM/SIGINT, then drain and shut down.

    Args:
        app: The ASGI app (usually a :class:`PortDispatch`).
        sockets: Bound sockets (see :func:`bind`).
        log_level: uvicorn's log level.
        graceful_seconds: Longest wait for in-flight requests after a signal.
    """
    try:
        server(app, log_level, graceful_seconds).run(sockets=sockets)
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
