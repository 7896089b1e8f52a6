"""The feedback archive: labelled rows on S3, partitioned by the hour they arrived.

Layout below ``--archive-uri`` (default ``s3://<registry bucket>/feedback``)::

    model=<model>/date=YYYY-MM-DD/hour=HH/<YYYYMMDDTHHMMSS>-<uuid>.parquet

Each file holds the schema's feature columns (as the model server coerces them), the
target column (``schema.target``) and columns of provenance: ``_event_id``,
``_event_source``, ``_event_row`` (position in the event), ``_received_at`` (UTC
timestamp) and ``_model_version``. Files are created with a conditional put and never
rewritten. Rows are buffered and written in batches; the buffer survives a clean
restart through the checkpoint, and rows buffered after the last checkpoint are lost
by a hard kill. Delivery is at least once: after a hard kill a batch may be written
twice, so readers drop duplicates on ``(_event_source, _event_id, _event_row)``
(:func:`read_archive` does). The retraining pipeline can read a time range with
:func:`read_archive`, or the partitions directly (Hive-style, readable by pyarrow).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from closedloop.drift.sidecar.frames import feature_fields, from_parquet, target_type, to_parquet
from closedloop.ml.schema import InputSchema
from closedloop.storage import Location, StorageError, Store, join_uri

if TYPE_CHECKING:
    import pyarrow as pa

EVENT_ID = "_event_id"
EVENT_SOURCE = "_event_source"
EVENT_ROW = "_event_row"
RECEIVED_AT = "_received_at"
MODEL_VERSION = "_model_version"


def default_archive_uri(registry_uri: str) -> str:
    """Return ``feedback`` beside the registry: ``s3://<bucket>/feedback`` or ``<parent>/feedback``."""
    location = Location.parse(registry_uri)
    if location.is_s3:
        return f"s3://{location.bucket}/feedback"
    return str(Path(location.key).parent / "feedback")


def archive_fields(schema: InputSchema) -> list[pa.Field]:
    """Return the Arrow fields of an archive file of *schema*'s model."""
    import pyarrow as pa

    return [
        *feature_fields(schema),
        pa.field(schema.target, target_type(schema)),
        pa.field(EVENT_ID, pa.string()),
        pa.field(EVENT_SOURCE, pa.string()),
        pa.field(EVENT_ROW, pa.int64()),
        pa.field(RECEIVED_AT, pa.timestamp("ns", tz="UTC")),
        pa.field(MODEL_VERSION, pa.string()),
    ]


def partition_prefix(archive_uri: str, model_name: str, at: datetime) -> str:
    """Return the partition directory of rows received at *at* (UTC)."""
    at = at.astimezone(UTC)
    return join_uri(archive_uri, f"model={model_name}", f"date={at:%Y-%m-%d}", f"hour={at:%H}")


@dataclass(frozen=True)
class FlushResult:
    """What one flush did.

    Attributes:
        rows_written: Rows now on S3.
        error: Why some rows could not be written (they stay buffered), if so.
    """

    rows_written: int
    error: str | None = None


class FeedbackArchive:
    """Buffers labelled rows and writes them to S3 in time-partitioned Parquet batches.

    Args:
        store: The storage layer.
        archive_uri: The archive root.
        model_name: The served model.
        schema: Its input schema.
        batch_rows: Flush once this many rows are buffered.
        flush_seconds: Flush once the oldest buffered row is this old.
        max_rows: Keep at most this many rows while S3 is unreachable (oldest dropped).
        clock: Source of the current time.
    """

    def __init__(
        self,
        store: Store,
        archive_uri: str,
        model_name: str,
        schema: InputSchema,
        *,
        batch_rows: int = 1000,
        flush_seconds: float = 60.0,
        max_rows: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.archive_uri = archive_uri.rstrip("/")
        self.model_name = model_name
        self.schema = schema
        self.fields = archive_fields(schema)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self._clock = clock
        self._lock = threading.Lock()
        self._chunks: list[pd.DataFrame] = []
        self._rows = 0
        self._oldest: float | None = None
        self._dropped = 0

    @property
    def buffered(self) -> int:
        """Rows waiting to be written."""
        return self._rows

    def add(
        self,
        features: pd.DataFrame,
        labels: Sequence[Any],
        *,
        event_id: str,
        event_source: str,
        model_version: str,
        received_at: float,
    ) -> None:
        """Buffer the labelled rows of one feedback event."""
        frame = features.copy()
        frame[self.schema.target] = list(labels)
        frame[EVENT_ID] = event_id
        frame[EVENT_SOURCE] = event_source
        frame[EVENT_ROW] = range(len(frame))
        frame[RECEIVED_AT] = pd.Timestamp(received_at, unit="s", tz="UTC")
        frame[MODEL_VERSION] = model_version
        self.restore(frame)

    def restore(self, frame: pd.DataFrame) -> None:
        """Buffer rows already in archive form (from :meth:`add` or a checkpoint)."""
        if len(frame) == 0:
            return
        with self._lock:
            self._chunks.append(frame.loc[:, [f.name for f in self.fields]])
            self._rows += len(frame)
            received = pd.to_datetime(frame[RECEIVED_AT], utc=True).min().timestamp()
            self._oldest = received if self._oldest is None else min(self._oldest, received)
            while self._rows > self.max_rows and len(self._chunks) > 1:
                dropped = self._chunks.pop(0)
                self._rows -= len(dropped)
                self._dropped += len(dropped)

    def take_dropped(self) -> int:
        """Return how many rows overflowed the buffer since the last call."""
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        return dropped

    def snapshot(self) -> pd.DataFrame:
        """Return the buffered rows (for a checkpoint)."""
        with self._lock:
            return self._frame()

    def due(self) -> bool:
        """Whether a batch is full or its oldest row old enough."""
        with self._lock:
            return self._rows >= self.batch_rows or (
                self._oldest is not None and self._clock() - self._oldest >= self.flush_seconds
            )

    def flush(self) -> FlushResult:
        """Write every buffered row, one file per hour partition; keep what failed."""
        with self._lock:
            frame = self._frame()
            self._chunks, self._rows, self._oldest = [], 0, None
        if len(frame) == 0:
            return FlushResult(0)
        hours = pd.to_datetime(frame[RECEIVED_AT], utc=True).dt.floor("h")
        failed: list[pd.DataFrame] = []
        error = None
        for hour, part in frame.groupby(hours, sort=True):
            when = hour.to_pydatetime()
            stamp = datetime.fromtimestamp(self._clock(), tz=UTC).strftime("%Y%m%dT%H%M%S")
            uri = join_uri(
                partition_prefix(self.archive_uri, self.model_name, when),
                f"{stamp}-{uuid.uuid4().hex}.parquet",
            )
            try:
                self.store.create(uri, to_parquet(part, self.fields))
            except StorageError as exc:
                failed.append(part)
                error = str(exc)
        for part in failed:
            self.restore(part)
        return FlushResult(len(frame) - sum(len(p) for p in failed), error)

    def _frame(self) -> pd.DataFrame:
        if not self._chunks:
            return pd.DataFrame(columns=[f.name for f in self.fields])
        return pd.concat(self._chunks, ignore_index=True)


def read_archive(
    store: Store,
    archive_uri: str,
    model_name: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pd.DataFrame:
    """Read a model's archived feedback rows, optionally limited to a time range.

    Args:
        store: The storage layer.
        archive_uri: The archive root.
        model_name: The model.
        since: Keep rows received at or after this time (UTC if naive).
        until: Keep rows received before this time (UTC if naive).

    Returns:
        The rows, oldest first, each event row once; an empty frame if there are none.
    """
    root = join_uri(archive_uri, f"model={model_name}")
    if since is None:
        prefixes = [root]
    else:  # only the date partitions of the range
        first = _utc(since).date()
        last = (_utc(until) if until is not None else pd.Timestamp.now(tz=UTC)).date()
        days = (first + timedelta(days=d) for d in range((last - first).days + 1))
        prefixes = [join_uri(root, f"date={day:%Y-%m-%d}") for day in days]
    frames = [
        from_parquet(store.read_bytes(uri))
        for prefix in prefixes
        for uri in store.list(prefix)
        if uri.endswith(".parquet")
    ]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    received = pd.to_datetime(rows[RECEIVED_AT], utc=True)
    keep = pd.Series(True, index=rows.index)
    if since is not None:
        keep &= received >= _utc(since)
    if until is not None:
        keep &= received < _utc(until)
    rows = rows[keep].drop_duplicates(subset=[EVENT_SOURCE, EVENT_ID, EVENT_ROW])
    return rows.sort_values(RECEIVED_AT, kind="stable").reset_index(drop=True)


def _utc(moment: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
