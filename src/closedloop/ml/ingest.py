"""Read raw tabular data from ``s3://`` or a local path: CSV or Parquet, a file or partitions.

A source is one file, or a prefix/directory whose files are partitions of one table
(Hive-style ``key=value`` folders become columns, as in Spark and pyarrow). The
content digest is computed over the raw bytes of every file in sorted order, so the
same data under the same names always has the same digest, whatever the reader.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from closedloop.errors import ClosedLoopError
from closedloop.storage import Location, StorageError, Store

FileFormat = Literal["auto", "csv", "parquet"]
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".csv.gz": "csv"}


class IngestError(ClosedLoopError):
    """The source cannot be read as a table."""


@dataclass(frozen=True)
class IngestResult:
    """A table read from a source, with what lineage needs.

    Attributes:
        frame: The data.
        source: The URI it was read from.
        files: The files read, in order.
        sha256: Digest over the files' bytes in order.
    """

    frame: pd.DataFrame
    source: str
    files: tuple[str, ...]
    sha256: str

    def metadata(self) -> dict[str, object]:
        """Artifact metadata: rows, columns, digest, source."""
        return {
            "rows": len(self.frame),
            "columns": list(map(str, self.frame.columns)),
            "sha256": self.sha256,
            "source": self.source,
            "files": len(self.files),
        }


def _format_of(uri: str, wanted: FileFormat) -> str | None:
    if wanted != "auto":
        return wanted
    lower = uri.lower()
    for suffix, fmt in sorted(_SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if lower.endswith(suffix):
            return fmt
    return None


def _partition_values(root: str, uri: str) -> dict[str, str]:
    rel = uri[len(root) :].strip("/").split("/")[:-1]
    return dict(part.split("=", 1) for part in rel if "=" in part)


def _read_one(data: bytes, fmt: str, uri: str) -> pd.DataFrame:
    try:
        if fmt == "parquet":
            return pd.read_parquet(io.BytesIO(data))
        compression = "gzip" if uri.lower().endswith(".gz") else None
        return pd.read_csv(io.BytesIO(data), compression=compression)
    except pd.errors.EmptyDataError as exc:
        raise IngestError(f"{uri} is empty: no header and no rows") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise IngestError(f"{uri} is not valid CSV: {exc}") from exc
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        if fmt == "parquet":
            raise IngestError(f"{uri} is not a readable Parquet file: {exc}") from exc
        raise


def ingest(
    source: str, store: Store | None = None, file_format: FileFormat = "auto"
) -> IngestResult:
    """Read *source* into one DataFrame.

    Args:
        source: ``s3://bucket/key``, ``s3://bucket/prefix/``, a local file or a directory.
        store: Storage layer to read with (default: settings from the environment).
        file_format: ``csv``, ``parquet``, or ``auto`` to go by each file's suffix.

    Returns:
        The table with its digest and the files it came from.

    Raises:
        IngestError: Nothing readable at *source*, an empty or corrupt file, or
            partitions whose columns disagree.
    """
    store = store or Store()
    loc = Location.parse(source)
    try:
        # A key ending in "/" names a prefix: S3 (and SeaweedFS) may also hold an empty
        # "folder marker" object under it, which must not be read as the data file.
        if not source.endswith("/") and store.exists(str(loc)):
            files = [str(loc)]
            root = str(loc).rsplit("/", 1)[0]
        else:
            root = str(loc).rstrip("/")
            files = [f for f in store.list(root) if _format_of(f, file_format) is not None]
    except StorageError as exc:
        raise IngestError(f"cannot read {source}: {exc}") from exc
    if not files:
        raise IngestError(
            f"no CSV or Parquet file at {source}: give a file, or a prefix/directory holding "
            "*.csv or *.parquet partitions"
        )
    digest = hashlib.sha256()
    frames = []
    for uri in files:
        fmt = _format_of(uri, file_format)
        if fmt is None:
            raise IngestError(
                f"cannot tell the format of {uri}: pass file_format='csv' or 'parquet'"
            )
        data = store.read_bytes(uri)
        digest.update(uri[len(root) :].encode() + b"\0" + hashlib.sha256(data).digest())
        frame = _read_one(data, fmt, uri)
        for key, value in _partition_values(root, uri).items():
            frame[key] = value
        frames.append(frame)
    columns = set(frames[0].columns)
    for uri, frame in zip(files, frames, strict=True):
        if set(frame.columns) != columns:
            diff = sorted(columns.symmetric_difference(frame.columns))
            raise IngestError(f"partition {uri} has different columns from {files[0]}: {diff}")
    try:
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    except (TypeError, ValueError) as exc:
        raise IngestError(
            f"the partitions under {source} do not share column types: {exc}"
        ) from exc
    if frame.empty:
        raise IngestError(f"{source} holds no rows")
    return IngestResult(frame=frame, source=source, files=tuple(files), sha256=digest.hexdigest())
