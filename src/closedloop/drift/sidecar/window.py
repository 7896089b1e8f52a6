"""Detection windows (by count and by age) and the ``(source, id)`` dedupe memory.

Neither class locks: the :class:`~closedloop.drift.sidecar.monitor.DriftMonitor` calls
them under its own lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from closedloop.drift.sidecar.alarm import CloseReason
from closedloop.drift.sidecar.join import LabelledRows

MAX_LABELLED_ROWS = 100_000


@dataclass(frozen=True)
class ClosedWindow:
    """A window ready for the detector.

    Attributes:
        sequence: Its number at this sidecar (1, 2, …), never reused.
        opened_at: When its first row arrived (Unix seconds).
        closed_at: When it closed.
        reason: ``size`` (it reached ``window_size`` rows) or ``age``.
        frame: Its rows, coerced to the schema.
        labels: Labelled predictions joined while it was open.
    """

    sequence: int
    opened_at: float
    closed_at: float
    reason: CloseReason
    frame: pd.DataFrame
    labels: LabelledRows = field(default_factory=LabelledRows.empty)


@dataclass(frozen=True)
class OpenWindow:
    """The rows of the window being filled, for a checkpoint.

    Attributes:
        sequence: The number it will close with.
        opened_at: When its first row arrived, or None while empty.
        frame: Its rows so far (possibly none).
        labels: Labelled predictions joined so far.
    """

    sequence: int
    opened_at: float | None
    frame: pd.DataFrame
    labels: LabelledRows = field(default_factory=LabelledRows.empty)


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
        self._chunks: list[pd.DataFrame] = []
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

    def add(self, frame: pd.DataFrame, now: float) -> list[ClosedWindow]:
        """Add checked rows; return the windows they filled (usually none)."""
        closed: list[ClosedWindow] = []
        start = 0
        while start < len(frame):
            if self._opened_at is None:
                self._opened_at = now
            take = min(self.size - self._rows, len(frame) - start)
            self._chunks.append(frame.iloc[start : start + take])
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

    def snapshot(self) -> OpenWindow:
        """Return the open window's state (its rows concatenated)."""
        return OpenWindow(
            self._sequence, self._opened_at, self._frame(), LabelledRows.concat(self._labels)
        )

    def restore(self, window: OpenWindow) -> list[ClosedWindow]:
        """Continue from a checkpointed window; returns any window its rows fill."""
        self._sequence = max(self._sequence, window.sequence)
        self._labels, self._labelled = [], 0
        self.add_labels(window.labels)
        if len(window.frame) == 0 or window.opened_at is None:
            return []
        # The rows keep their age: the window opened when they first arrived.
        return self.add(window.frame, window.opened_at)

    def _frame(self) -> pd.DataFrame:
        if not self._chunks:
            return pd.DataFrame()
        return pd.concat(self._chunks, ignore_index=True)

    def _close(self, now: float, reason: CloseReason) -> ClosedWindow:
        assert self._opened_at is not None
        window = ClosedWindow(
            self._sequence,
            self._opened_at,
            now,
            reason,
            self._frame(),
            LabelledRows.concat(self._labels),
        )
        self._sequence += 1
        self._chunks = []
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
