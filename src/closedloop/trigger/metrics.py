"""The trigger's Prometheus metrics, in a registry of their own, served at ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

PREFIX = "closedloop_trigger"


class TriggerMetrics:
    """Counters and gauges of alarms, decisions and runs.

    Args:
        registry: Where to register (a fresh one by default).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._alarms = Counter(
            f"{PREFIX}_alarms",
            "Drift CloudEvents received, by outcome (accepted, duplicate, invalid).",
            ["model", "outcome"],
            registry=r,
        )
        self._decisions = Counter(
            f"{PREFIX}_decisions",
            "Decisions, by outcome (fired, suppressed) and reason.",
            ["model", "outcome", "reason"],
            registry=r,
        )
        self._submitted = Counter(
            f"{PREFIX}_runs_submitted",
            "Retraining runs accepted by the backend.",
            ["model", "backend"],
            registry=r,
        )
        self._submit_failures = Counter(
            f"{PREFIX}_submit_failures",
            "Submission attempts that failed because the backend was unavailable (retried).",
            ["model", "backend"],
            registry=r,
        )
        self._finished = Counter(
            f"{PREFIX}_runs_finished",
            "Retraining runs that ended, by status (succeeded, failed, rejected).",
            ["model", "status"],
            registry=r,
        )
        self._in_flight = Gauge(
            f"{PREFIX}_run_in_flight",
            "1 while the model has a run pending or running, else 0.",
            ["model"],
            registry=r,
        )
        self.pending = Gauge(
            f"{PREFIX}_runs_pending",
            "Claimed runs not yet accepted by the backend (being retried).",
            registry=r,
        )

    def alarm(self, model: str, outcome: str) -> None:
        """Count one received alarm."""
        self._alarms.labels(model, outcome).inc()

    def decision(self, model: str, outcome: str, reason: str) -> None:
        """Count one decision."""
        self._decisions.labels(model, outcome, reason).inc()

    def submitted(self, model: str, backend: str) -> None:
        """Count one run accepted by the backend."""
        self._submitted.labels(model, backend).inc()

    def submit_failure(self, model: str, backend: str) -> None:
        """Count one failed submission attempt."""
        self._submit_failures.labels(model, backend).inc()

    def finished(self, model: str, status: str) -> None:
        """Count one run that ended."""
        self._finished.labels(model, status).inc()

    def in_flight(self, model: str, value: bool) -> None:
        """Publish whether *model* has a run in flight."""
        self._in_flight.labels(model).set(1 if value else 0)
