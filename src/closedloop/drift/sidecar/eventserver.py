"""The event port: a small HTTP/1.1 server that hands each POSTed CloudEvent to a handler.

Only the Seldon request logger talks to this port (on 127.0.0.1 in a pod), one small
POST at a time, so the server speaks only what that needs, directly on asyncio's
transport: no ASGI scope, no framework object per request. Under load the whole event
path costs tens of microseconds, and a generic stack (uvicorn's pure-Python HTTP parser
and the ASGI calls around it) would cost several times that.

What it speaks:

* ``POST /`` (a query string is ignored) with a body framed by ``Content-Length`` or
  ``Transfer-Encoding: chunked``, HTTP/1.1 (keep-alive unless ``Connection: close``)
  or HTTP/1.0 (closed after the answer), ``Expect: 100-continue``, pipelined
  requests (answered in order, one at a time);
* a body over ``max_body_bytes`` is answered 413 and the connection closed, with a
  ``Content-Length`` before any of the body is read, chunked as soon as the limit is
  passed; headers over 64 KiB are answered 431; anything else malformed 400; another
  path 404 and another method 405 (each closing the connection);
* connections idle for ``idle_seconds`` are closed (longer than the Go HTTP client's
  idle timeout, so a client never sends on a connection the server is closing).

Every answer is JSON. The handler (:class:`Handler`) gets the headers (names in lower
case) and the body, and answers later through a callback, so that requests arriving
together can be taken and synced as one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Protocol

import orjson

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
IDLE_SECONDS = 120.0
_PAUSE_BYTES = 256 * 1024
_REASONS = {
    100: "Continue",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

Reply = Callable[[int, bytes], None]
"""Answer a request: ``reply(status, json_body)``."""


class Handler(Protocol):
    """What the server hands requests to."""

    def submit(self, headers: dict[str, str], body: bytes, reply: Reply) -> None:
        """Take one request; call ``reply`` exactly once, later, on the event loop."""

    def too_large(self) -> None:
        """Count a body refused as too large (answered 413 by the server)."""


class _Malformed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_body(message: str, reason: str | None = None) -> bytes:
    """A JSON error answer."""
    body: dict[str, str] = {"error": message}
    if reason is not None:
        body["reason"] = reason
    return orjson.dumps(body)


def response_bytes(status: int, body: bytes, close: bool) -> bytes:
    """One HTTP/1.1 response with a JSON body."""
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"{'connection: close' + chr(13) + chr(10) if close else ''}\r\n"
    )
    return head.encode("latin-1") + body


class EventConnection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, server: EventServer) -> None:
        self.server = server
        self.handler = server.handler
        self.limit = server.max_body_bytes
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closing = False
        self.last_active = time.monotonic()
        self._head: tuple[dict[str, str], bool] | None = None  # headers, keep-alive
        self._length = -1  # bytes of a Content-Length body; -1 for chunked
        self._chunks: list[bytes] = []
        self._received = 0
        self._paused = False

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self.last_active = time.monotonic()
        self.buffer += data
        if self.busy:
            # One request at a time: hold back a client that keeps sending meanwhile.
            if len(self.buffer) > _PAUSE_BYTES and not self._paused and self.transport:
                self._paused = True
                self.transport.pause_reading()
            return
        self._parse()

    # -- requests ---------------------------------------------------------------------
    def _parse(self) -> None:
        try:
            while not self.busy and self.transport is not None and not self.closing:
                if self._head is None and not self._read_head():
                    return
                body = self._read_body()
                if body is None:
                    return
                headers, keep_alive = self._head  # type: ignore[misc]
                self._head = None
                self.busy = True
                self.handler.submit(headers, body, self._reply_for(keep_alive))
        except _Malformed as exc:
            if exc.status == 413:
                self.handler.too_large()
            self._fail(exc.status, error_body(str(exc), "too_large" if exc.status == 413 else None))

    def _read_head(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise _Malformed(431, f"request headers over {MAX_HEAD_BYTES} bytes")
            return False
        if end > MAX_HEAD_BYTES:
            raise _Malformed(431, f"request headers over {MAX_HEAD_BYTES} bytes")
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        del self.buffer[: end + 4]
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise _Malformed(400, "malformed request line")
        method, target, version = parts
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise _Malformed(505, f"unsupported protocol {version.decode('latin-1')!r}")
        if len(lines) - 1 > MAX_HEADERS:
            raise _Malformed(431, f"more than {MAX_HEADERS} request headers")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or b" " in name:
                raise _Malformed(400, "malformed header line")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            if key in headers:
                if key in ("content-length", "transfer-encoding", "host"):
                    raise _Malformed(400, f"repeated {key} header")
                text = f"{headers[key]}, {text}"
            headers[key] = text
        if target.split(b"?", 1)[0] != b"/":
            raise _Malformed(404, "CloudEvents are posted to /")
        if method != b"POST":
            raise _Malformed(405, "only POST is served here")
        # HTTP/1.0 connections close after their answer.
        keep_alive = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        encoding = headers.get("transfer-encoding")
        declared = headers.get("content-length")
        if encoding is not None:
            if encoding.lower() != "chunked" or declared is not None:
                raise _Malformed(400, "only Transfer-Encoding: chunked, without Content-Length")
            self._length = -1
        elif declared is not None:
            if not declared.isdigit():
                raise _Malformed(400, "malformed Content-Length")
            self._length = int(declared)
            if self._length > self.limit:
                raise _Malformed(413, f"body of {self._length} bytes over {self.limit} bytes")
        else:
            self._length = 0
        self._chunks, self._received = [], 0
        self._head = (headers, keep_alive)
        if headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _read_body(self) -> bytes | None:
        if self._length >= 0:
            if len(self.buffer) < self._length:
                return None
            body = bytes(self.buffer[: self._length])
            del self.buffer[: self._length]
            return body
        while True:  # chunked
            end = self.buffer.find(b"\r\n")
            if end < 0:
                if len(self.buffer) > 1024:
                    raise _Malformed(400, "malformed chunk size line")
                return None
            size_text = bytes(self.buffer[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Malformed(400, "malformed chunk size") from None
            if size < 0:
                raise _Malformed(400, "malformed chunk size")
            if size == 0:
                trailer_end = self.buffer.find(b"\r\n\r\n", end)
                if self.buffer[end : end + 4] == b"\r\n\r\n":
                    trailer_end = end
                if trailer_end < 0:
                    return None
                del self.buffer[: trailer_end + 4]
                return b"".join(self._chunks)
            if self._received + size > self.limit:
                raise _Malformed(413, f"chunked body over {self.limit} bytes")
            if len(self.buffer) < end + 2 + size + 2:
                return None
            if self.buffer[end + 2 + size : end + 4 + size] != b"\r\n":
                raise _Malformed(400, "malformed chunk")
            self._chunks.append(bytes(self.buffer[end + 2 : end + 2 + size]))
            self._received += size
            del self.buffer[: end + 4 + size]

    def _reply_for(self, keep_alive: bool) -> Reply:
        def reply(status: int, body: bytes) -> None:
            transport = self.transport
            if transport is None:
                return
            close = not keep_alive or self.closing
            transport.write(response_bytes(status, body, close))
            self.last_active = time.monotonic()
            if close:
                transport.close()
                return
            self.busy = False
            if self._paused:
                self._paused = False
                transport.resume_reading()
            if self.buffer:
                self._parse()

        return reply

    def _fail(self, status: int, body: bytes) -> None:
        if self.transport is not None:
            self.transport.write(response_bytes(status, body, close=True))
            self.transport.close()

    def close_when_idle(self) -> None:
        """Close now if no request is in progress, else after its answer."""
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()


class EventServer:
    """Serves :class:`EventConnection` on a bound socket.

    Args:
        handler: Takes the requests.
        max_body_bytes: Largest body accepted.
        idle_seconds: Close connections idle this long.
    """

    def __init__(
        self, handler: Handler, max_body_bytes: int, idle_seconds: float = IDLE_SECONDS
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.idle_seconds = idle_seconds
        self.connections: set[EventConnection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket) -> None:
        """Start serving on *sock* (already bound)."""
        loop = asyncio.get_running_loop()
        sock.listen(1024)
        self._server = await loop.create_server(lambda: EventConnection(self), sock=sock)
        self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self.idle_seconds / 2))
            cutoff = time.monotonic() - self.idle_seconds
            for connection in list(self.connections):
                if not connection.busy and connection.last_active < cutoff:
                    connection.close_when_idle()

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, let requests in progress be answered (at most *timeout* s), close."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self.connections):
            connection.close_when_idle()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            if connection.transport is not None:
                log.warning("closing a connection whose request is still in progress")
                connection.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
