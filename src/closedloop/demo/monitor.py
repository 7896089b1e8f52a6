"""Watch the drift sidecar's Prometheus metrics and keep one record per evaluated window."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

PREFIX = "closedloop_sidecar"


@dataclass(frozen=True)
class WindowRecord:
    """One evaluated window as the sidecar's metrics showed it."""

    at: float
    sequence: int
    version: str
    drift: bool
    min_p_value: float
    rows: int


@dataclass
class WindowWatcher:
    """Poll ``/metrics`` of a sidecar in a thread; record each new window sequence number.

    Args:
        metrics_url: The sidecar's ``/metrics`` URL.
        interval: Seconds between polls (windows close every few seconds in the demo).
    """

    metrics_url: str
    interval: float = 0.25
    windows: list[WindowRecord] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> WindowWatcher:
        """Start polling."""
        self._thread = threading.Thread(target=self._loop, name="window-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (bounded wait)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def point_at(self, metrics_url: str) -> None:
        """Follow another sidecar (after a restart on a new version)."""
        self.metrics_url = metrics_url

    def _loop(self) -> None:
        import requests
        from prometheus_client.parser import text_string_to_metric_families

        seen: set[tuple[str, int]] = set()
        session = requests.Session()
        while not self._stop.wait(self.interval):
            try:
                text = session.get(self.metrics_url, timeout=2).text
            except OSError:
                continue
            values: dict[str, list[tuple[dict[str, str], float]]] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    values.setdefault(sample.name, []).append((sample.labels, sample.value))
            sequences = values.get(f"{PREFIX}_window_sequence", [])
            for labels, value in sequences:
                key = (labels.get("version", ""), int(value))
                if value < 1 or key in seen:
                    continue
                seen.add(key)
                p_values = [
                    v
                    for lab, v in values.get(f"{PREFIX}_feature_p_value", [])
                    if lab.get("version") == key[0]
                ]
                drift = [
                    v
                    for lab, v in values.get(f"{PREFIX}_window_drift", [])
                    if lab.get("version") == key[0]
                ]
                rows = [
                    v
                    for lab, v in values.get(f"{PREFIX}_window_last_rows", [])
                    if lab.get("version") == key[0]
                ]
                self.windows.append(
                    WindowRecord(
                        at=time.time(),
                        sequence=key[1],
                        version=key[0],
                        drift=bool(drift and drift[0] >= 1),
                        min_p_value=min(p_values) if p_values else 1.0,
                        rows=int(rows[0]) if rows else 0,
                    )
                )
        session.close()
