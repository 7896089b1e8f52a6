"""What the sidecar keeps in ``--state-dir``: checkpoints, the event journal, the outbox.

Layout::

    CURRENT                   name of the newest complete checkpoint directory
    ckpt-<n>/meta.json        sequence numbers, window history, dedupe keys, row counts,
                              the first journal segment to replay after it
    ckpt-<n>/*.parquet        rows of the open window, of closed windows not yet
                              evaluated, and feedback rows not yet archived; the
                              labelled predictions joined to those windows
                              (``labels*.parquet``)
    journal-<segment>.log     every event taken since that checkpoint, fsync'd before it
                              was acknowledged (:mod:`~closedloop.drift.sidecar.journal`)
    RUNNING                   present while a sidecar runs; left behind by a hard kill
    outbox/<seq>-<id>.json    drift events not yet delivered to the trigger

A checkpoint is written to a fresh directory and published by replacing ``CURRENT``, so
a kill mid-write leaves the previous checkpoint intact. A restart loads the checkpoint
and replays the journal after it: an acknowledged event is never lost, and the
checkpoint interval bounds the replay.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from closedloop.drift.sidecar.alarm import AlarmError, DriftAlarm, WindowReport
from closedloop.drift.sidecar.errors import CheckpointError
from closedloop.drift.sidecar.frames import from_parquet, to_parquet
from closedloop.drift.sidecar.join import LabelledRows
from closedloop.drift.sidecar.window import ClosedWindow, OpenWindow

if TYPE_CHECKING:
    import pyarrow as pa

CHECKPOINT_FORMAT = 2
_READABLE_FORMATS = (1, 2)  # format 1: before the journal (replay nothing)
CURRENT = "CURRENT"
RUNNING = "RUNNING"
OUTBOX = "outbox"


@dataclass(frozen=True)
class Checkpoint:
    """Everything a restarted sidecar needs to carry on.

    Attributes:
        model_name: The served model.
        model_version: The served version the windows were filled for.
        written_at: When the snapshot was taken.
        rows_accepted: Rows accepted into windows since the state directory was created.
        open_window: The window being filled.
        pending: Closed windows not yet evaluated, oldest first.
        history: The last evaluated windows, oldest first.
        dedupe_keys: Remembered ``(source, id)`` keys, oldest first.
        feedback: Labelled rows not yet archived (possibly empty).
        journal_segment: The first journal segment holding events after the snapshot.
    """

    model_name: str
    model_version: str
    written_at: float
    rows_accepted: int
    open_window: OpenWindow
    pending: tuple[ClosedWindow, ...]
    history: tuple[WindowReport, ...]
    dedupe_keys: tuple[tuple[str, str], ...]
    feedback: pd.DataFrame
    journal_segment: int = 0


class StateDir:
    """Checkpoints, the running marker and the outbox in one directory (and the journal).

    Args:
        path: The state directory (created if missing).
        window_fields: Arrow fields of window rows.
        feedback_fields: Arrow fields of feedback rows.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        window_fields: list[pa.Field],
        feedback_fields: list[pa.Field],
    ) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / OUTBOX).mkdir(exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create the state directory {self.path}: {exc}") from exc
        self.window_fields = window_fields
        self.feedback_fields = feedback_fields

    # -- the running marker -----------------------------------------------------------
    def was_running(self) -> bool:
        """Whether the previous sidecar of this directory stopped without cleaning up."""
        return (self.path / RUNNING).exists()

    def mark_running(self) -> None:
        """Record that a sidecar runs (removed by :meth:`mark_stopped`)."""
        (self.path / RUNNING).write_text(f"{os.getpid()} {time.time():.3f}\n")

    def mark_stopped(self) -> None:
        """Record a clean stop."""
        (self.path / RUNNING).unlink(missing_ok=True)

    # -- checkpoints ------------------------------------------------------------------
    def write_checkpoint(self, checkpoint: Checkpoint) -> Path:
        """Write a checkpoint to a new directory and make it the current one.

        Raises:
            CheckpointError: If the directory cannot be written.
        """
        tmp = self.path / f".ckpt-tmp-{uuid.uuid4().hex}"
        final = self.path / f"ckpt-{time.time_ns():020d}"
        try:
            tmp.mkdir()
            meta = self._write_frames(tmp, checkpoint)
            _write_synced(tmp / "meta.json", json.dumps(meta, allow_nan=False).encode())
            os.rename(tmp, final)
            _write_synced(self.path / f".{CURRENT}.tmp", final.name.encode())
            os.replace(self.path / f".{CURRENT}.tmp", self.path / CURRENT)
            _fsync_dir(self.path)
        except (OSError, ValueError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"cannot write a checkpoint to {self.path}: {exc}") from exc
        for old in self.path.iterdir():
            if old.is_dir() and old.name != final.name and old.name.startswith(("ckpt-", ".ckpt-")):
                shutil.rmtree(old, ignore_errors=True)
        return final

    def _write_frames(self, directory: Path, cp: Checkpoint) -> dict[str, Any]:
        def frame_file(name: str, frame: pd.DataFrame, fields: list[pa.Field]) -> str | None:
            if len(frame) == 0:
                return None
            _write_synced(directory / name, to_parquet(frame, fields))
            return name

        def labels_file(name: str, labels: LabelledRows) -> str | None:
            import pyarrow as pa

            frame = labels.to_frame()
            return frame_file(name, frame, [pa.field(c, pa.float64()) for c in frame.columns])

        return {
            "format": CHECKPOINT_FORMAT,
            "model_name": cp.model_name,
            "model_version": cp.model_version,
            "written_at": cp.written_at,
            "rows_accepted": cp.rows_accepted,
            "journal_segment": cp.journal_segment,
            "open_window": {
                "sequence": cp.open_window.sequence,
                "opened_at": cp.open_window.opened_at,
                "file": frame_file("window.parquet", cp.open_window.frame, self.window_fields),
                "labels_file": labels_file("labels.parquet", cp.open_window.labels),
            },
            "pending": [
                {
                    "sequence": w.sequence,
                    "opened_at": w.opened_at,
                    "closed_at": w.closed_at,
                    "reason": w.reason,
                    "file": frame_file(
                        f"pending-{w.sequence}.parquet", w.frame, self.window_fields
                    ),
                    "labels_file": labels_file(f"labels-{w.sequence}.parquet", w.labels),
                }
                for w in cp.pending
            ],
            "history": [w.to_dict() for w in cp.history],
            "dedupe_keys": [list(k) for k in cp.dedupe_keys],
            "feedback_file": frame_file("feedback.parquet", cp.feedback, self.feedback_fields),
        }

    def read_checkpoint(self) -> Checkpoint | None:
        """Return the current checkpoint, or None if there is none.

        Raises:
            CheckpointError: If the current checkpoint is unreadable.
        """
        pointer = self.path / CURRENT
        if not pointer.exists():
            return None
        directory = self.path / pointer.read_text().strip()
        try:
            meta = json.loads((directory / "meta.json").read_text())
            if meta.get("format") not in _READABLE_FORMATS:
                raise CheckpointError(f"{directory} has checkpoint format {meta.get('format')!r}")

            def frame(name: str | None) -> pd.DataFrame:
                return (
                    pd.DataFrame()
                    if name is None
                    else from_parquet((directory / name).read_bytes())
                )

            def labels(name: str | None) -> LabelledRows:
                # Checkpoints written before quality windows have no labels_file.
                return (
                    LabelledRows.empty() if name is None else LabelledRows.from_frame(frame(name))
                )

            window = meta["open_window"]
            return Checkpoint(
                model_name=meta["model_name"],
                model_version=meta["model_version"],
                written_at=float(meta["written_at"]),
                rows_accepted=int(meta["rows_accepted"]),
                open_window=OpenWindow(
                    window["sequence"],
                    window["opened_at"],
                    frame(window["file"]),
                    labels(window.get("labels_file")),
                ),
                pending=tuple(
                    ClosedWindow(
                        p["sequence"],
                        p["opened_at"],
                        p["closed_at"],
                        p["reason"],
                        frame(p["file"]),
                        labels(p.get("labels_file")),
                    )
                    for p in meta["pending"]
                ),
                history=tuple(WindowReport.from_dict(w) for w in meta["history"]),
                dedupe_keys=tuple((str(s), str(i)) for s, i in meta["dedupe_keys"]),
                feedback=frame(meta["feedback_file"]),
                journal_segment=int(meta.get("journal_segment", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError, AlarmError) as exc:
            raise CheckpointError(
                f"the checkpoint {directory} is unreadable ({exc}); move {self.path} aside to start afresh"
            ) from exc

    # -- the outbox -------------------------------------------------------------------
    def outbox_put(self, alarm: DriftAlarm) -> None:
        """Persist a drift event until it is delivered."""
        name = f"{alarm.window.sequence:012d}-{alarm.id}.json"
        _write_synced(
            self.path / OUTBOX / name, json.dumps(alarm.to_dict(), allow_nan=False).encode()
        )

    def outbox(self) -> Iterator[tuple[Path, DriftAlarm]]:
        """Yield the undelivered drift events, oldest window first.

        Files that do not parse are moved aside as ``*.bad`` and skipped.
        """
        for path in sorted((self.path / OUTBOX).glob("*.json")):
            try:
                alarm = DriftAlarm.from_dict(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(f".bad-{type(exc).__name__}"))
                continue
            yield path, alarm

    def outbox_size(self) -> int:
        """How many drift events wait for delivery."""
        return sum(1 for _ in (self.path / OUTBOX).glob("*.json"))

    def outbox_trim(self, keep: int) -> int:
        """Drop the oldest undelivered events beyond *keep*; return how many were dropped."""
        files = sorted((self.path / OUTBOX).glob("*.json"))
        dropped = files[: max(0, len(files) - keep)]
        for path in dropped:
            path.unlink(missing_ok=True)
        return len(dropped)


def _write_synced(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
