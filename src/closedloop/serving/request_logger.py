"""Local stand-in for the Seldon executor's request logger.

In a cluster the Seldon executor (the Go service orchestrator in front of the model)
posts a CloudEvent for every request and response to the graph node's ``logger.url``,
here the drift-detector sidecar. Locally there is no executor, so the model server
emits the same events itself when it is given a ``request_logger_url``.

What the executor sends (``executor/logger/worker.go`` and
``executor/predictor/predictor_process.go`` in SeldonIO/seldon-core 1.x), and therefore
what :class:`RequestLogger` sends, in CloudEvents 1.0 binary HTTP mode:

* ``Ce-Specversion: 1.0``, ``Ce-Id`` (a new UUID per event), ``Ce-Time``;
* ``Ce-Type``: :data:`REQUEST_TYPE`, :data:`RESPONSE_TYPE` or :data:`FEEDBACK_TYPE`;
* ``Ce-Source``: the executor's own URL, ``http://<pod name>:<port>/``;
* ``Ce-Requestid``: the request's ``Seldon-Puid`` (generated when the client sent
  none), the same for a request and its response;
* ``Ce-Modelid`` (graph node name), ``Ce-Inferenceservicename`` (SeldonDeployment
  name), ``Ce-Namespace``, ``Ce-Endpoint`` (predictor name), ``Ce-Protocol``
  (``seldon``);
* ``Content-Type`` of the logged message and, as the body, its bytes unchanged.

The executor logs a request before it calls the model, whatever the model answers
later; a response only when the model succeeded; feedback only in logger modes
``response`` and ``all``. Delivery is best effort: a bounded queue drained by a
background sender, no retries; an event that does not fit in the queue or cannot be
delivered is dropped and counted. Nothing here can slow or fail the response.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import requests
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from closedloop.events import FEEDBACK_TYPE, REQUEST_TYPE, RESPONSE_TYPE

PUID_HEADER = "Seldon-Puid"
"""Header carrying the request id the executor joins a request and its response on."""

LoggerMode = Literal["request", "response", "all"]
LOGGER_MODES: tuple[str, ...] = ("request", "response", "all")

logger = logging.getLogger(__name__)

# Warn about failed deliveries at most this often: a sidecar that is down must not
# flood the server log with one line per request.
_WARN_EVERY_SECONDS = 30.0
_STOP = object()


@dataclass(frozen=True)
class EventContext:
    """The attributes every event of one server carries.

    Attributes:
        source: URL of the server that saw the request (``Ce-Source``).
        model_id: Graph node name (``Ce-Modelid``).
        inference_service_name: SeldonDeployment name (``Ce-Inferenceservicename``).
        namespace: Kubernetes namespace, or a local stand-in (``Ce-Namespace``).
        endpoint: Predictor name (``Ce-Endpoint``).
        protocol: Payload protocol (``Ce-Protocol``).
    """

    source: str
    model_id: str
    inference_service_name: str
    namespace: str
    endpoint: str
    protocol: str = "seldon"


@dataclass(frozen=True)
class LoggerStats:
    """Counts since the logger started.

    Attributes:
        queued: Events accepted into the queue.
        sent: Events the receiver answered with a 2xx status.
        dropped: Events dropped because the queue was full.
        failed: Events that could not be delivered (connection error, timeout, non-2xx).
    """

    queued: int
    sent: int
    dropped: int
    failed: int


def _canonical(header: str) -> str:
    """Write a header name as Go's net/http does (``ce-requestid`` → ``Ce-Requestid``)."""
    return "-".join(part.capitalize() for part in header.split("-"))


def build_event_message(
    ce_type: str,
    request_id: str,
    body: bytes,
    content_type: str,
    context: EventContext,
    event_time: datetime | None = None,
) -> tuple[dict[str, str], bytes]:
    """Encode one event in CloudEvents binary HTTP mode.

    Args:
        ce_type: One of :data:`REQUEST_TYPE`, :data:`RESPONSE_TYPE`, :data:`FEEDBACK_TYPE`.
        request_id: The ``Seldon-Puid`` of the request.
        body: The logged message, sent unchanged.
        content_type: Its media type.
        context: Attributes of the server.
        event_time: When it happened (now when None).

    Returns:
        The HTTP headers and body to POST.
    """
    event = CloudEvent(
        attributes={
            "type": ce_type,
            "source": context.source,
            "time": event_time or datetime.now(UTC),
            "datacontenttype": content_type,
            "requestid": request_id,
            "modelid": context.model_id,
            "inferenceservicename": context.inference_service_name,
            "namespace": context.namespace,
            "endpoint": context.endpoint,
            "protocol": context.protocol,
        },
        data=body,
    )
    message = to_binary_event(event)
    return {_canonical(name): value for name, value in message.headers.items()}, message.body


class RequestLogger:
    """Send request, response and feedback CloudEvents to a URL, asynchronously.

    Args:
        url: Where to POST the events (the drift sidecar).
        context: Attributes every event carries.
        mode: Which events to send, as the executor's ``logger.mode``: ``request``
            (requests only), ``response`` (responses and feedback) or ``all``.
        queue_size: Events held while the sender is busy; beyond it events are dropped.
        timeout_seconds: Connect and read timeout of one delivery.
    """

    def __init__(
        self,
        url: str,
        context: EventContext,
        *,
        mode: LoggerMode = "all",
        queue_size: int = 10_000,
        timeout_seconds: float = 5.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"request logger url {url!r} must be an http(s) URL")
        if mode not in LOGGER_MODES:
            raise ValueError(f"request logger mode {mode!r} must be one of {LOGGER_MODES}")
        if queue_size < 1 or timeout_seconds <= 0:
            raise ValueError("queue_size and timeout_seconds must be positive")
        self.url = url
        self.context = context
        self.mode = mode
        self.timeout_seconds = timeout_seconds
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._queued = 0
        self._dropped = 0
        self._sent = 0
        self._failed = 0
        self._last_warning = 0.0
        self._session = requests.Session()
        # The receiver is the sidecar next to the server: never go through a proxy
        # that the environment configures for outbound traffic.
        self._session.trust_env = False
        self._thread = threading.Thread(target=self._run, name="request-logger", daemon=True)
        self._thread.start()

    # -- producer side (request threads) ----------------------------------------------
    def log_request(self, request_id: str, body: bytes, content_type: str) -> None:
        """Queue the request event (modes ``request`` and ``all``)."""
        if self.mode in ("request", "all"):
            self._put(REQUEST_TYPE, request_id, body, content_type)

    def log_response(self, request_id: str, body: bytes, content_type: str) -> None:
        """Queue the response event of a successful prediction (modes ``response``, ``all``)."""
        if self.mode in ("response", "all"):
            self._put(RESPONSE_TYPE, request_id, body, content_type)

    def log_feedback(self, request_id: str, body: bytes, content_type: str) -> None:
        """Queue the feedback event (modes ``response`` and ``all``, as the executor does)."""
        if self.mode in ("response", "all"):
            self._put(FEEDBACK_TYPE, request_id, body, content_type)

    def _put(self, ce_type: str, request_id: str, body: bytes, content_type: str) -> None:
        # The event is built in the sender thread; the request thread only enqueues.
        item = (ce_type, request_id, body, content_type, time.time())
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self._dropped += 1
            return
        with self._lock:
            self._queued += 1

    def stats(self) -> LoggerStats:
        """Return the counts so far."""
        with self._lock:
            return LoggerStats(self._queued, self._sent, self._dropped, self._failed)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (bounded by *timeout*) and stop the sender."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout=timeout)
        self._session.close()

    # -- consumer side (the sender thread) --------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            ce_type, request_id, body, content_type, stamp = item  # type: ignore[misc]
            self._send(ce_type, request_id, body, content_type, stamp)

    def _send(
        self, ce_type: str, request_id: str, body: bytes, content_type: str, stamp: float
    ) -> None:
        headers, data = build_event_message(
            ce_type,
            request_id,
            body,
            content_type,
            self.context,
            datetime.fromtimestamp(stamp, UTC),
        )
        try:
            answer = self._session.post(
                self.url, data=data, headers=headers, timeout=self.timeout_seconds
            )
        except requests.RequestException as exc:
            self._failure(f"{type(exc).__name__}: {exc}")
            return
        if 200 <= answer.status_code < 300:
            with self._lock:
                self._sent += 1
        else:
            self._failure(f"HTTP {answer.status_code} {answer.text[:200]!r}")

    def _failure(self, reason: str) -> None:
        with self._lock:
            self._failed += 1
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_SECONDS:
            self._last_warning = now
            logger.warning(
                "request logger: could not deliver an event to %s (%s); %d failed and %d "
                "dropped so far (events are best effort and not retried)",
                self.url,
                reason,
                self._failed,
                self._dropped,
            )
