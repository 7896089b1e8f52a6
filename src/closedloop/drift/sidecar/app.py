"""The sidecar's HTTP face: CloudEvents on ``--port``, ``/healthz`` and ``/metrics`` on ``--metrics-port``.

One process, one event loop: the event port is served by
:class:`~closedloop.drift.sidecar.eventserver.EventServer` (a small HTTP/1.1 server
built for this one route), the ops port by uvicorn and Starlette. uvicorn owns the
process (signals, the drain on SIGTERM); the event server starts and stops inside its
lifespan, before the monitor's final checkpoint.

The event path (:class:`EventService`): requests are taken as they arrive, a few turns
of the event loop are gathered into one journal sync (group commit), and only then is
each answered: an answer of 2xx means the event is durable.

Event port (``POST /``, where the Seldon request logger posts):

* ``200 {"status": "accepted", "rows": n}`` — request rows taken into windows;
* ``200 {"status": "buffered", "rows": n}`` — feedback rows taken for the archive;
* ``200 {"status": "duplicate"}`` — ``(Ce-Source, Ce-Id)`` seen before, nothing done;
* ``200 {"status": "recorded", "rows": n}`` — a response event remembered by its puid,
  for feedback to join;
* ``202 {"status": "refused", "reason": "...", "rows": n, "error": "..."}`` — the model
  server refuses this request or feedback (its message, or one of its rows): nothing
  taken, its rows counted by reason in ``closedloop_sidecar_rows_refused_total``. The
  executor logs a request before the model checks it, so these are acknowledged (the
  executor must not retry them);
* ``202 {"status": "ignored"}`` — a response event that cannot be joined (no
  ``Ce-Requestid``, or no scores of the model's shape): counted, not used;
* ``202 {"status": "skipped", "reason": "..."}`` — an event with a protobuf body, i.e.
  traffic on the executor's gRPC port: drift watches REST traffic only, so it is
  counted (``closedloop_sidecar_grpc_events_skipped_total``) and enters no window;
* ``400 {"error": "...", "reason": "..."}`` — the event cannot be read: not a
  binary-mode CloudEvent (``attributes``, ``type``), a body that is not JSON
  (``not_json``) or is nested too deeply to parse (``too_deep``; a parseable message
  nested past the server's limit is ``refused`` as the server refuses it);
* ``413`` — a body over ``--max-request-bytes`` (``too_large``), with or without a
  ``Content-Length``;
* ``503`` — the journal cannot be written: nothing is acknowledged until a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import orjson
from starlette.applications import Starlette
from starlette.routing import Route

from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar import asgi
from closedloop.drift.sidecar.errors import JournalError
from closedloop.drift.sidecar.eventserver import EventServer, Reply, error_body
from closedloop.drift.sidecar.loader import load_served_detector
from closedloop.drift.sidecar.monitor import DriftMonitor, IngestResult, MonitorSettings
from closedloop.serving.parameters import DEFAULT_MAX_REQUEST_BYTES
from closedloop.storage import Store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = DEFAULT_MAX_REQUEST_BYTES
"""The model server's default ``max_request_bytes``; the sidecar takes the server's setting."""
GRPC_SKIPPED = "protobuf body (gRPC traffic): drift watches REST (JSON) traffic only"
_SKIPPED = orjson.dumps({"status": "skipped", "reason": GRPC_SKIPPED})
_IGNORED = orjson.dumps({"status": "ignored"})
_DUPLICATE = orjson.dumps({"status": "duplicate"})
GATHER_TURNS = 3
"""Most extra turns of the event loop that gather requests into one journal sync."""


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
        max_request_bytes: The model server's ``max_request_bytes``: larger bodies are 413.
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
    max_request_bytes: int = MAX_BODY_BYTES


def answer(result: IngestResult) -> tuple[int, bytes]:
    """The HTTP status and JSON body of one event's result."""
    outcome = result.outcome
    if outcome in ("accepted", "buffered", "recorded"):
        return 200, b'{"status":"%s","rows":%d}' % (outcome.encode(), result.rows)
    if outcome == "duplicate":
        return 200, _DUPLICATE
    if outcome == "refused":
        body = {"status": "refused", "reason": result.reason, "rows": result.rows}
        return 202, orjson.dumps({**body, "error": result.error})
    if outcome == "ignored":
        return 202, _IGNORED
    if outcome == "skipped":
        return 202, _SKIPPED
    status = 413 if result.reason == "too_large" else 400
    return status, error_body(result.error or "", result.reason)


class EventService:
    """Takes the requests of the event port in batches and answers each once it is durable.

    Requests are taken (:meth:`DriftMonitor.take`: checked, deduped, into the windows,
    appended to the journal) on the event loop's next turn after they arrive. The loop
    then turns again, at most :data:`GATHER_TURNS` times, as long as each turn brings
    more requests (clients answered a moment ago sending their next one); when a turn
    brings none, one journal sync covers everything taken (group commit), in the loop's
    own thread, and every request is answered. A lone request costs one extra turn of
    the loop (a ``select`` that returns at once).

    Args:
        monitor: The monitor (opened).
    """

    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._incoming: list[tuple[dict[str, str], bytes, Reply]] = []
        self._unsynced: list[tuple[Reply, int, bytes]] = []
        self._ticket = 0
        self._turns = 0
        self._scheduled = False
        self._failed: JournalError | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take batches on *loop*."""
        self._loop = loop

    def submit(self, headers: dict[str, str], body: bytes, reply: Reply) -> None:
        """Queue one request; it is taken on the loop's next turn."""
        self._incoming.append((headers, body, reply))
        self._schedule()

    def too_large(self) -> None:
        """Count a body the server refused as too large."""
        self.monitor.metrics.rejected("too_large")
        self.monitor.metrics.event("unknown", "rejected")

    def _schedule(self) -> None:
        if not self._scheduled:
            assert self._loop is not None
            self._scheduled = True
            self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._scheduled = False
        batch, self._incoming = self._incoming, []
        if batch and self._take(batch) and self._turns < GATHER_TURNS:
            self._turns += 1
            self._schedule()  # more may be on their way: gather them into this sync
            return
        self._turns = 0
        unsynced, self._unsynced = self._unsynced, []
        if not unsynced:
            return
        try:
            self.monitor.journal.sync(self._ticket)
        except JournalError as exc:
            self._fail(exc, [reply for reply, _, _ in unsynced])
            return
        for reply, status, body in unsynced:
            reply(status, body)

    def _take(self, batch: list[tuple[dict[str, str], bytes, Reply]]) -> bool:
        """Take a batch; return whether its answers wait for a sync."""
        if self._failed is not None:
            self._unavailable([reply for _, _, reply in batch], self._failed)
            return False
        try:
            results, ticket = self.monitor.take([(headers, body) for headers, body, _ in batch])
        except JournalError as exc:
            self._fail(exc, [reply for _, _, reply in batch])
            return False
        except Exception as exc:  # a bug: every request must still be answered
            log.exception("events could not be taken")
            body = error_body(f"internal error: {type(exc).__name__}: {exc}")
            for _, _, reply in batch:
                reply(500, body)
            return False
        self._ticket = max(self._ticket, ticket)
        for (_, _, reply), result in zip(batch, results, strict=True):
            self._unsynced.append((reply, *answer(result)))
        return True

    def _fail(self, error: JournalError, replies: list[Reply]) -> None:
        if self._failed is None:
            self._failed = error
            self.monitor.metrics.journal_failures.inc()
        unsynced, self._unsynced = self._unsynced, []
        self._unavailable(replies + [reply for reply, _, _ in unsynced], error)

    @staticmethod
    def _unavailable(replies: list[Reply], error: JournalError) -> None:
        body = error_body(f"{error}: nothing is acknowledged until the sidecar restarts")
        for reply in replies:
            reply(503, body)


def build_ops_app(
    monitor: DriftMonitor,
    events_socket: socket.socket,
    max_body_bytes: int,
    graceful_seconds: float = 5.0,
) -> Starlette:
    """The ops app (``/healthz``, ``/metrics``), whose lifespan runs the monitor and the event port."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        service = EventService(monitor)
        service.attach(asyncio.get_running_loop())
        server = EventServer(service, max_body_bytes)
        monitor.start()
        await server.start(events_socket)
        try:
            yield
        finally:
            await server.shutdown(graceful_seconds)
            await anyio.to_thread.run_sync(monitor.stop)

    return Starlette(
        routes=[
            Route("/healthz", asgi.health_endpoint(monitor.status), methods=["GET"]),
            Route("/metrics", asgi.metrics_endpoint(monitor.metrics.registry), methods=["GET"]),
        ],
        lifespan=lifespan,
    )


class SidecarServer:
    """The monitor served on its two sockets until :meth:`stop` or SIGTERM/SIGINT.

    Args:
        monitor: The monitor (opened, not started: the server starts and stops it).
        events_socket: Bound socket of the event port.
        ops_socket: Bound socket of the ops port.
        max_body_bytes: Largest event body.
        log_level: uvicorn's log level.
        graceful_seconds: Longest wait for requests in progress after a signal.
    """

    def __init__(
        self,
        monitor: DriftMonitor,
        events_socket: socket.socket,
        ops_socket: socket.socket,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        log_level: str = "info",
        graceful_seconds: int = 5,
    ) -> None:
        from closedloop.drift.sidecar.asgi import server

        self.sockets = [events_socket, ops_socket]
        app = build_ops_app(monitor, events_socket, max_body_bytes, graceful_seconds)
        self._server = server(app, log_level, graceful_seconds)

    def run(self) -> None:
        """Serve until stopped (signals are handled when run on the main thread)."""
        try:
            self._server.run(sockets=[self.sockets[1]])
        finally:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def stop(self) -> None:
        """Ask the server to drain and stop (from any thread)."""
        self._server.should_exit = True


def run_sidecar(options: SidecarOptions) -> None:
    """Load the served version's detector, resume from the state directory and serve.

    Returns when the server stops (SIGTERM/SIGINT), after the final checkpoint.

    Raises:
        ClosedLoopError: A bad policy, a taken port, an unreachable registry, a version
            without a detector, or an unusable state directory or journal.
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
    SidecarServer(
        monitor,
        sockets[0],
        sockets[1],
        max_body_bytes=options.max_request_bytes,
        log_level=options.log_level,
    ).run()
