"""The event journal: every event the sidecar takes is on disk before it is acknowledged.

Files in the state directory, one per segment::

    journal-<segment, 12 digits>.log

A segment starts with a header — ``CLSJ``, the format number and a JSON object naming
the model and version whose windows it fills — followed by records. Each record is
framed as ``<u32 payload length><u32 crc32 of the payload>``; the payload is
``<u8 kind><f64 received_at><u32 len source><u32 len id><u32 len request id>
<u32 len extra>``, those fields (UTF-8, ``extra`` opaque) and then the event's body, the
bytes it was posted with. Kinds (:class:`RecordKind`): a request, a response, a
feedback (``extra`` holds its join with a prediction, so a replay joins as the first run
did) and a window closed by age (``extra`` holds its number).

Group commit: the monitor appends records in memory, under its lock and in the order in
which they changed its state (:meth:`Journal.append` returns a ticket). Whoever needs a
ticket on disk calls :meth:`Journal.sync`, which writes everything gathered so far and
calls ``fdatasync`` once: the event port does so after each batch of requests (those
that arrived while the previous sync ran), in its own thread, so no other thread has
to be scheduled between the disk and the answers. An event is answered only once the
sync that covers it is done; events that arrive together share one sync.

A checkpoint starts a new segment at the moment of its snapshot (:meth:`Journal.rotate`)
and, once it is published, removes the segments before it
(:meth:`Journal.discard_before`): the checkpoint interval bounds the replay, not the
loss. On start the sidecar loads the checkpoint and replays the segments from the
checkpoint's on (:func:`read_segment`); a record cut short by a kill was never
acknowledged, and ends its segment.

If a write or a sync fails, the journal stops for good (:class:`JournalError`): what is
in memory may no longer match the disk, so nothing more may be acknowledged until a
restart rebuilds the state from what is durable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from closedloop.drift.sidecar.errors import JournalError

log = logging.getLogger(__name__)

MAGIC = b"CLSJ"
FORMAT = 1
PREFIX = "journal-"
SUFFIX = ".log"
_HEADER = struct.Struct("<4sII")  # magic, format, length of the JSON meta
_FRAME = struct.Struct("<II")  # payload length, crc32
_FIXED = struct.Struct("<BdIIII")  # kind, received_at, lengths of source, id, request id, extra


class RecordKind(IntEnum):
    """What a journal record holds."""

    REQUEST = 1
    RESPONSE = 2
    FEEDBACK = 3
    CLOSE = 4


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One journal record.

    Attributes:
        kind: See :class:`RecordKind`.
        at: When the event was taken (Unix seconds): the time its rows carry.
        source: ``Ce-Source`` (empty for a ``CLOSE``).
        id: ``Ce-Id`` (empty for a ``CLOSE``).
        request_id: ``Ce-Requestid``, if any.
        extra: The feedback's join, or the closed window's number (JSON).
        body: The event's body as posted.
    """

    kind: RecordKind
    at: float
    source: str = ""
    id: str = ""
    request_id: str | None = None
    extra: bytes = b""
    body: bytes = b""

    def encode(self) -> bytes:
        """The framed record."""
        source, event_id = self.source.encode(), self.id.encode()
        request_id = (self.request_id or "").encode()
        payload = b"".join(
            (
                _FIXED.pack(
                    self.kind,
                    self.at,
                    len(source),
                    len(event_id),
                    len(request_id),
                    len(self.extra),
                ),
                source,
                event_id,
                request_id,
                self.extra,
                self.body,
            )
        )
        return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload

    def extra_json(self) -> Any:
        """``extra`` parsed as JSON (None when empty)."""
        return json.loads(self.extra) if self.extra else None


def segment_path(directory: Path, segment: int) -> Path:
    """The file of a segment."""
    return directory / f"{PREFIX}{segment:012d}{SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """The segment numbers present in *directory*, in order."""
    found = []
    for path in directory.glob(f"{PREFIX}*{SUFFIX}"):
        number = path.name[len(PREFIX) : -len(SUFFIX)]
        if number.isdigit():
            found.append(int(number))
    return sorted(found)


@dataclass(frozen=True)
class Segment:
    """A segment read back.

    Attributes:
        number: Its number.
        model_name: The model whose events it holds.
        model_version: The served version they were taken for.
        records: Its complete records, in order.
        torn_bytes: Bytes after the last complete record (a write cut short by a kill,
            or damage), ignored.
    """

    number: int
    model_name: str
    model_version: str
    records: list[JournalRecord]
    torn_bytes: int


def read_segment(directory: Path, segment: int) -> Segment:
    """Read one segment's complete records.

    Raises:
        JournalError: If the file cannot be read or has no valid header.
    """
    path = segment_path(directory, segment)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JournalError(f"cannot read the journal segment {path}: {exc}") from exc
    view = memoryview(data)
    if len(data) < _HEADER.size:
        # Created, then killed before the header reached the disk: nothing was in it.
        return Segment(segment, "", "", [], len(data))
    magic, version, meta_size = _HEADER.unpack_from(view, 0)
    try:
        if magic != MAGIC or version != FORMAT:
            raise ValueError(f"magic {magic!r}, format {version}")
        meta = json.loads(bytes(view[_HEADER.size : _HEADER.size + meta_size]))
    except ValueError as exc:
        raise JournalError(f"{path} is not a journal segment of this sidecar: {exc}") from exc
    offset = _HEADER.size + meta_size
    records: list[JournalRecord] = []
    end = len(data)
    while offset + _FRAME.size <= end:
        size, crc = _FRAME.unpack_from(view, offset)
        start = offset + _FRAME.size
        if start + size > end or size < _FIXED.size:
            break
        payload = view[start : start + size]
        if zlib.crc32(payload) != crc:
            break
        kind, at, n_source, n_id, n_request, n_extra = _FIXED.unpack_from(payload, 0)
        cursor = _FIXED.size
        fields = []
        for n in (n_source, n_id, n_request, n_extra):
            fields.append(bytes(payload[cursor : cursor + n]))
            cursor += n
        source, event_id, request_id, extra = fields
        records.append(
            JournalRecord(
                RecordKind(kind),
                at,
                source.decode(),
                event_id.decode(),
                request_id.decode() or None,
                extra,
                bytes(payload[cursor:]),
            )
        )
        offset = start + size
    return Segment(
        segment, str(meta.get("model_name")), str(meta.get("model_version")), records, end - offset
    )


@dataclass(frozen=True)
class _Discard:
    before: int


class Journal:
    """Appends records to segment files with group commit (see the module docstring).

    Args:
        directory: The state directory.
        model_name: The served model (in each segment's header).
        model_version: The served version (in each segment's header).
        observe_sync: Called with each sync's duration in seconds and records covered.
    """

    def __init__(
        self,
        directory: Path,
        model_name: str,
        model_version: str,
        observe_sync: Callable[[float, int], None] | None = None,
    ) -> None:
        self.directory = directory
        self.model_name = model_name
        self.model_version = model_version
        self._observe_sync = observe_sync
        self._lock = threading.Lock()  # the queue and the counters
        self._io = threading.Lock()  # one sync at a time, in ticket order
        self._queue: list[tuple[int, list[bytes]] | _Discard] = []
        self._files: dict[int, int] = {}
        self._segment = 0
        self._appended = 0
        self._synced = 0
        self._failed: JournalError | None = None
        self._closed = False

    @property
    def segment(self) -> int:
        """The segment new records go to."""
        return self._segment

    @property
    def appended(self) -> int:
        """Ticket of the last record appended."""
        return self._appended

    @property
    def synced(self) -> int:
        """Ticket of the last record on disk."""
        return self._synced

    @property
    def failed(self) -> JournalError | None:
        """Why the journal stopped, if it did."""
        return self._failed

    def start(self, segment: int) -> None:
        """Write from *segment* on (above every segment on disk)."""
        self._segment = segment

    def append(self, records: Sequence[bytes]) -> int:
        """Queue framed records (the caller keeps them in state order); return their ticket.

        Raises:
            JournalError: If the journal has failed or is closed.
        """
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._closed:
                raise JournalError("the journal is closed")
            if records:
                last = self._queue[-1] if self._queue else None
                if isinstance(last, tuple) and last[0] == self._segment:
                    last[1].extend(records)
                else:
                    self._queue.append((self._segment, list(records)))
                self._appended += len(records)
            return self._appended

    def rotate(self) -> int:
        """Send later records to a new segment; return its number."""
        with self._lock:
            self._segment += 1
            return self._segment

    def discard_before(self, segment: int) -> None:
        """Remove the segments before *segment* at the next sync, after what is queued."""
        with self._lock:
            self._queue.append(_Discard(segment))

    def sync(self, ticket: int | None = None) -> None:
        """Put every record up to *ticket* (default: all appended) on disk.

        Writes and ``fdatasync``s whatever is queued at that moment, once; a caller whose
        ticket another caller's sync covered returns as soon as that sync is done.

        Raises:
            JournalError: If writing or syncing fails (the journal then stays failed).
        """
        wanted = self._appended if ticket is None else ticket
        if self._synced >= wanted and not self._queue:
            return
        with self._io:
            if self._failed is not None:
                raise self._failed
            with self._lock:
                items, self._queue = self._queue, []
                reached = self._appended
            if not items:
                return
            started = time.perf_counter()
            try:
                count = self._write(items)
            except OSError as exc:
                error = JournalError(f"cannot write the event journal in {self.directory}: {exc}")
                log.critical("%s; no event is acknowledged any more: restart the sidecar", error)
                self._failed = error
                raise error from exc
            self._synced = reached
            if count and self._observe_sync is not None:
                self._observe_sync(time.perf_counter() - started, count)

    def close(self) -> None:
        """Write and sync what is queued, then close the files."""
        with contextlib.suppress(JournalError):
            self.sync()
        with self._io, self._lock:
            self._closed = True
            for fd in self._files.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._files.clear()

    # -- writing ------------------------------------------------------------------------
    def _write(self, items: list[tuple[int, list[bytes]] | _Discard]) -> int:
        files = self._files
        touched: set[int] = set()
        count = 0
        for item in items:
            if isinstance(item, _Discard):
                self._discard(item.before, touched)
                continue
            segment, records = item
            fd = files.get(segment)
            if fd is None:
                fd = files[segment] = self._create(segment)
            _write_all(fd, b"".join(records))
            touched.add(segment)
            count += len(records)
        for segment in touched:
            os.fdatasync(files[segment])
        newest = max(files, default=0)
        for segment in [s for s in files if s < newest]:
            os.close(files.pop(segment))
        return count

    def _create(self, segment: int) -> int:
        path = segment_path(self.directory, segment)
        meta = json.dumps(
            {"model_name": self.model_name, "model_version": self.model_version}
        ).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        _write_all(fd, _HEADER.pack(MAGIC, FORMAT, len(meta)) + meta)
        _fsync_dir(self.directory)
        return fd

    def _discard(self, before: int, touched: set[int]) -> None:
        removed = False
        for segment in list_segments(self.directory):
            if segment >= before:
                continue
            fd = self._files.pop(segment, None)
            if fd is not None:
                touched.discard(segment)
                os.close(fd)
            segment_path(self.directory, segment).unlink(missing_ok=True)
            removed = True
        if removed:
            _fsync_dir(self.directory)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
