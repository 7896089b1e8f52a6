"""Detection windows (by count and by age) and the ``(source, id)`` dedupe memory.

A window gathers rows as the row check leaves them
(:class:`~closedloop.ml.rowplan.CheckedRows`: a float block and a few object arrays, no
DataFrame per event) and builds its frame once, when the evaluator or a checkpoint first
asks for it: never on the event path, never under the monitor's lock. Rows restored
from a checkpoint come back as a frame and are kept as one.

Neither class locks: the :class:`~closedloop.drift.sidecar.monitor.DriftMonitor` calls
them under its own lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from closedloop.drift.sidecar.alarm import CloseReason
from closedloop.drift.sidecar.join import LabelledRows
from closedloop.ml.rowplan import CheckedRows

Rows = CheckedRows | pd.DataFrame
"""Checked rows of events, or a frame of them restored from a checkpoint."""

MAX_LABELLED_ROWS = 100_000
COALESCE_ROWS = 256
"""Small chunks (events of fewer rows) are joined into one block once this many gather."""


@dataclass(frozen=True)
class ClosedWindow:
    """A window ready for the detector.

    Attributes:
        sequence: Its number at this sidecar (1, 2, …), never reused.
        opened_at: When its first row arrived (Unix seconds).
        closed_at: When it closed.
        reason: ``size`` (it reached ``window_size`` rows) or ``age``.
        rows: Its rows as they were taken (one frame, or the chunks of its events).
        labels: Labelled predictions joined while it was open.
    """

    sequence: int
    opened_at: float
    closed_at: float
    reason: CloseReason
    rows: Rows | tuple[Rows, ...]
    labels: LabelledRows = field(default_factory=LabelledRows.empty)

    @cached_property
    def frame(self) -> pd.DataFrame:
        """Its rows as one frame (built on first use, by whoever evaluates or saves it)."""
        return rows_frame(self.rows if isinstance(self.rows, tuple) else (self.rows,))


@dataclass(frozen=True)
class OpenWindow:
    """The rows of the window being filled, for a checkpoint.

    Attributes:
        sequence: The number it will close with.
        opened_at: When its first row arrived, or None while empty.
        rows: Its rows so far (possibly none): one frame, or the chunks of its events.
        labels: Labelled predictions joined so far.
    """

    sequence: int
    opened_at: float | None
    rows: Rows | tuple[Rows, ...]
    labels: LabelledRows = field(default_factory=LabelledRows.empty)

    @cached_property
    def frame(self) -> pd.DataFrame:
        """Its rows as one frame (built on first use, outside the monitor's lock)."""
        return rows_frame(self.rows if isinstance(self.rows, tuple) else (self.rows,))


class WindowBuffer:
    """Fills one window at a time; a window closes when full or old enough.

    A window closes when it holds ``size`` rows (an event that does not fit is split:
    its remaining rows open the next window), or on :meth:`close_if_old` once its first
    row is ``max_age`` seconds old and it holds at least ``min_rows`` rows. An old window
    with fewer rows stays open until it has them. Labelled predictions joined while a
    window is open (:meth:`add_labels`) close with it, at most ``max_labels`` of them.

    Args:
        size: Rows per full window.
        max_age: Seconds after which a window with ``min_rows`` rows closes.
        min_rows: Fewest rows an age-closed window may hold.
        next_sequence: The number of the first window.
        max_labels: Most labelled rows one window keeps; later ones are dropped.
    """

    def __init__(
        self,
        size: int,
        max_age: float,
        min_rows: int,
        next_sequence: int = 1,
        max_labels: int = MAX_LABELLED_ROWS,
    ) -> None:
        if size < 1 or min_rows < 1 or min_rows > size or max_age <= 0 or max_labels < 1:
            raise ValueError("need size >= min_rows >= 1, max_age > 0 and max_labels >= 1")
        self.size = size
        self.max_age = max_age
        self.min_rows = min_rows
        self.max_labels = max_labels
        self._sequence = next_sequence
        self._chunks: list[Rows] = []
        self._recent: list[CheckedRows] = []  # small chunks not yet coalesced
        self._rows = 0
        self._opened_at: float | None = None
        self._labels: list[LabelledRows] = []
        self._labelled = 0

    @property
    def sequence(self) -> int:
        """The number of the window being filled."""
        return self._sequence

    @property
    def rows(self) -> int:
        """Rows in the window being filled."""
        return self._rows

    @property
    def labelled_rows(self) -> int:
        """Labelled rows joined to the window being filled."""
        return self._labelled

    @property
    def opened_at(self) -> float | None:
        """When the window being filled got its first row."""
        return self._opened_at

    def add(self, rows: Rows, now: float) -> list[ClosedWindow]:
        """Add checked rows; return the windows they filled (usually none)."""
        closed: list[ClosedWindow] = []
        start = 0
        total = row_count(rows)
        while start < total:
            if self._opened_at is None:
                self._opened_at = now
            take = min(self.size - self._rows, total - start)
            self._append(rows if take == total else take_rows(rows, np.arange(start, start + take)))
            self._rows += take
            start += take
            if self._rows >= self.size:
                closed.append(self._close(now, "size"))
        return closed

    def add_labels(self, rows: LabelledRows) -> int:
        """Attach labelled rows to the window being filled; return how many were dropped."""
        room = max(0, self.max_labels - self._labelled)
        take = min(room, len(rows))
        if take:
            kept = rows if take == len(rows) else LabelledRows(rows.y[:take], rows.scores[:take])
            self._labels.append(kept)
            self._labelled += take
        return len(rows) - take

    def close_if_old(self, now: float) -> ClosedWindow | None:
        """Close the window if it is ``max_age`` old and holds ``min_rows`` rows."""
        if (
            self._opened_at is not None
            and now - self._opened_at >= self.max_age
            and self._rows >= self.min_rows
        ):
            return self._close(now, "age")
        return None

    def _append(self, rows: Rows) -> None:
        # One event's rows are a few small arrays: gather them into blocks as they come
        # (a window of one-row events would otherwise be a hundred thousand objects).
        if isinstance(rows, CheckedRows) and rows.n_rows < COALESCE_ROWS:
            self._recent.append(rows)
            if len(self._recent) >= COALESCE_ROWS:
                self._chunks.append(concat_rows(self._recent))
                self._recent = []
            return
        if self._recent:
            self._chunks.append(concat_rows(self._recent))
            self._recent = []
        self._chunks.append(rows)

    def close(self, now: float, reason: CloseReason) -> ClosedWindow | None:
        """Close the window now, whatever its age, if it holds rows (a journaled close)."""
        return self._close(now, reason) if self._rows else None

    def snapshot(self) -> OpenWindow:
        """Return the open window's state (its frame is built when first asked for)."""
        return OpenWindow(
            self._sequence,
            self._opened_at,
            (*self._chunks, *self._recent),
            LabelledRows.concat(self._labels),
        )

    def restore(self, window: OpenWindow) -> list[ClosedWindow]:
        """Continue from a checkpointed window; returns any window its rows fill."""
        self._sequence = max(self._sequence, window.sequence)
        self._labels, self._labelled = [], 0
        self.add_labels(window.labels)
        frame = window.frame
        if len(frame) == 0 or window.opened_at is None:
            return []
        # The rows keep their age: the window opened when they first arrived.
        return self.add(frame, window.opened_at)

    def _close(self, now: float, reason: CloseReason) -> ClosedWindow:
        assert self._opened_at is not None
        window = ClosedWindow(
            self._sequence,
            self._opened_at,
            now,
            reason,
            (*self._chunks, *self._recent),
            LabelledRows.concat(self._labels),
        )
        self._sequence += 1
        self._chunks, self._recent = [], []
        self._rows = 0
        self._opened_at = None
        self._labels, self._labelled = [], 0
        return window


class Deduper:
    """Remembers the last ``capacity`` event keys, least recently seen forgotten first.

    Args:
        capacity: How many keys to keep.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._keys: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: tuple[str, str]) -> None:
        """Remember *key* (refreshing it if known)."""
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def keys(self) -> list[tuple[str, str]]:
        """The remembered keys, oldest first."""
        return list(self._keys)

    def extend(self, keys: Iterable[tuple[str, str]]) -> None:
        """Remember several keys, in order."""
        for key in keys:
            self.add(key)


def row_count(rows: Rows) -> int:
    """How many rows *rows* holds."""
    return rows.n_rows if isinstance(rows, CheckedRows) else len(rows)


def take_rows(rows: Rows, index: np.ndarray) -> Rows:
    """The rows at *index* (positions), in that order."""
    if isinstance(rows, pd.DataFrame):
        return rows.iloc[index]
    return CheckedRows(
        rows.schema,
        rows.numeric_names,
        rows.numeric[index],
        {k: v[index] for k, v in rows.categorical.items()},
        {k: v[index] for k, v in rows.datetime.items()},
    )


def concat_rows(parts: Sequence[CheckedRows]) -> CheckedRows:
    """Checked rows of one schema, one after the other."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return CheckedRows(
        first.schema,
        first.numeric_names,
        np.concatenate([p.numeric for p in parts]),
        {k: np.concatenate([p.categorical[k] for p in parts]) for k in first.categorical},
        {k: np.concatenate([p.datetime[k] for p in parts]) for k in first.datetime},
    )


def rows_frame(chunks: Sequence[Rows]) -> pd.DataFrame:
    """One frame of *chunks* (schema column order), built with one concatenation per run."""
    frames: list[pd.DataFrame] = []
    run: list[CheckedRows] = []
    for chunk in chunks:
        if isinstance(chunk, CheckedRows):
            run.append(chunk)
            continue
        if run:
            frames.append(concat_rows(run).frame)
            run = []
        frames.append(chunk)
    if run:
        frames.append(concat_rows(run).frame)
    if not frames:
        return pd.DataFrame()
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    return pd.concat(frames, ignore_index=True)
