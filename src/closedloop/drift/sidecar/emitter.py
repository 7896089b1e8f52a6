"""Delivers drift CloudEvents from the outbox to the trigger, retrying with capped backoff.

An event leaves the outbox only when the trigger answered 2xx (a duplicate is answered
2xx too) or refused it for good (a 4xx other than 408/429: retrying cannot help; it is
logged and counted as dropped). Anything else — connection refused, timeout, 5xx — is
retried after 0.5 s, 1 s, 2 s, … up to ``backoff_max`` seconds, with the same id, so the
trigger sees a retry as the same alarm. Events go out one at a time, in window order.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

import httpx

from closedloop.drift.sidecar.alarm import DriftAlarm
from closedloop.drift.sidecar.metrics import SidecarMetrics
from closedloop.drift.sidecar.state import StateDir

log = logging.getLogger(__name__)

Delivery = Literal["delivered", "rejected", "failed"]
_RETRYABLE_4XX = frozenset({408, 425, 429})


class AlarmEmitter:
    """A thread that empties the outbox into the trigger.

    Args:
        state: The state directory holding the outbox.
        url: The trigger's URL.
        metrics: Where to count deliveries.
        timeout: Seconds per HTTP attempt.
        backoff_initial: First retry delay in seconds.
        backoff_max: Largest retry delay in seconds.
        max_pending: Most undelivered events kept (the oldest are dropped beyond it).
    """

    def __init__(
        self,
        state: StateDir,
        url: str,
        metrics: SidecarMetrics,
        *,
        timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_pending: int = 1000,
    ) -> None:
        self.state = state
        self.url = url
        self.metrics = metrics
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_pending = max_pending
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drift-emitter", daemon=True)

    def is_alive(self) -> bool:
        """Whether the delivery thread runs."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Start delivering (events left by a previous run go first)."""
        self._publish_pending()
        self._thread.start()

    def submit(self, alarm: DriftAlarm) -> None:
        """Persist *alarm* in the outbox and wake the delivery thread."""
        self.state.outbox_put(alarm)
        dropped = self.state.outbox_trim(self.max_pending)
        if dropped:
            log.warning("outbox full: dropped the %d oldest drift events", dropped)
            self.metrics.drift_events_dropped.inc(dropped)
        self._publish_pending()
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; undelivered events stay in the outbox for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _publish_pending(self) -> None:
        self.metrics.drift_events_pending.set(self.state.outbox_size())

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                self._wake.clear()
                self._drain(client)
                self._wake.wait(5.0)

    def _drain(self, client: httpx.Client) -> None:
        for path, alarm in self.state.outbox():
            delay = self.backoff_initial
            while not self._stop.is_set():
                outcome = self._send(client, alarm)
                if outcome != "failed":
                    path.unlink(missing_ok=True)
                    self._publish_pending()
                    break
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
            if self._stop.is_set():
                return

    def _send(self, client: httpx.Client, alarm: DriftAlarm) -> Delivery:
        headers, body = alarm.to_http()
        try:
            response = client.post(self.url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            log.warning("drift event %s not delivered to %s: %s", alarm.id, self.url, exc)
            self.metrics.drift_events_failed.inc()
            return "failed"
        if response.is_success:
            log.info("drift event %s (window %d) delivered", alarm.id, alarm.window.sequence)
            self.metrics.drift_events_emitted.inc()
            return "delivered"
        if 400 <= response.status_code < 500 and response.status_code not in _RETRYABLE_4XX:
            log.error(
                "the trigger refused drift event %s (%d): %s; dropping it",
                alarm.id,
                response.status_code,
                response.text[:500],
            )
            self.metrics.drift_events_dropped.inc()
            return "rejected"
        log.warning(
            "drift event %s: the trigger answered %d; retrying", alarm.id, response.status_code
        )
        self.metrics.drift_events_failed.inc()
        return "failed"
