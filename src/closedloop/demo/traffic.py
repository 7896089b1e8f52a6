"""Replay generated traffic to a model server, send ground truth back, record what happened.

Traffic goes only to the model server, as a client's would: prediction requests, then
feedback with the true labels. The server's request logger turns both into the
CloudEvents the drift sidecar consumes; nothing here talks to the sidecar.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from closedloop.data.generate import generate_transactions
from closedloop.serving.request_logger import PUID_HEADER


@dataclass(frozen=True)
class Phase:
    """A stretch of traffic with fixed drift knobs.

    Attributes:
        name: Shown in progress and the report.
        rows: Rows sent in this phase (the last phase may run longer, see
            :meth:`TrafficDriver.run_until`).
        covariate_shift: Generator knob: the channel mix and amounts move.
        concept_drift: Generator knob: the fraud pattern changes.
    """

    name: str
    rows: int
    covariate_shift: float = 0.0
    concept_drift: float = 0.0


@dataclass(frozen=True)
class Exchange:
    """One prediction request and its feedback, as the client saw them."""

    at: float
    phase: str
    version: str
    scores: tuple[float, ...]
    truth: tuple[int, ...]
    ok: bool
    status: int


@dataclass
class TrafficLog:
    """Every exchange, in order."""

    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Requests that did not get a 200."""
        return sum(1 for e in self.exchanges if not e.ok)

    @property
    def rows(self) -> int:
        """Rows predicted successfully."""
        return sum(len(e.scores) for e in self.exchanges if e.ok)

    def versions(self) -> list[str]:
        """Versions that answered, in order of first appearance."""
        seen: list[str] = []
        for e in self.exchanges:
            if e.ok and e.version not in seen:
                seen.append(e.version)
        return seen


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rows(frame: pd.DataFrame) -> list[list[Any]]:
    return [[_jsonable(v) for v in row] for row in frame.itertuples(index=False, name=None)]


class TrafficDriver:
    """Send phases of generated rows to a Seldon model server at a bounded rate.

    Args:
        url: The server's base URL (``http://127.0.0.1:9000``).
        feature_names: Columns the model takes, in order.
        target: The label column.
        batch_rows: Rows per prediction request.
        rows_per_second: Upper bound on the send rate.
        seed: Base seed of the generated traffic.
    """

    def __init__(
        self,
        url: str,
        feature_names: tuple[str, ...],
        target: str,
        batch_rows: int = 25,
        rows_per_second: float = 200.0,
        seed: int = 100,
    ) -> None:
        import requests

        self.url = url.rstrip("/")
        self.feature_names = feature_names
        self.target = target
        self.batch_rows = batch_rows
        self.rows_per_second = rows_per_second
        self.seed = seed
        self.log = TrafficLog()
        self._session = requests.Session()
        self._phase_index = 0

    def _batches(self, phase: Phase, rows: int) -> Iterator[pd.DataFrame]:
        self._phase_index += 1
        frame = generate_transactions(
            rows,
            seed=self.seed + self._phase_index,
            covariate_shift=phase.covariate_shift,
            concept_drift=phase.concept_drift,
        )
        for start in range(0, len(frame), self.batch_rows):
            yield frame.iloc[start : start + self.batch_rows]

    def _exchange(self, phase: Phase, batch: pd.DataFrame) -> Exchange:
        request = {
            "data": {
                "names": list(self.feature_names),
                "ndarray": _rows(batch[list(self.feature_names)]),
            }
        }
        truth = tuple(int(v) for v in batch[self.target])
        try:
            response = self._session.post(
                f"{self.url}/api/v1.0/predictions", json=request, timeout=30
            )
        except OSError:
            return Exchange(time.time(), phase.name, "", (), truth, False, 0)
        if response.status_code != 200:
            return Exchange(time.time(), phase.name, "", (), truth, False, response.status_code)
        body = response.json()
        version = str(body.get("meta", {}).get("tags", {}).get("model_version", ""))
        probabilities = body["data"]["ndarray"]
        scores = tuple(float(p[-1]) for p in probabilities)
        # The feedback echoes the response and names the prediction by its puid, which the
        # sidecar joins the labels on. The wrapper puts ``meta.puid`` in the body only when
        # the request carried one; the executor (locally, the request logger) returns it in
        # the ``Seldon-Puid`` header.
        puid = body.get("meta", {}).get("puid") or response.headers.get(PUID_HEADER)
        if puid:
            body = {**body, "meta": {**body.get("meta", {}), "puid": puid}}
        feedback = {
            "request": request,
            "response": body,
            "truth": {"data": {"ndarray": [[t] for t in truth]}},
        }
        self._session.post(
            f"{self.url}/api/v1.0/feedback",
            data=json.dumps(feedback),
            timeout=30,
            headers={"Content-Type": "application/json"},
        )
        return Exchange(time.time(), phase.name, version, scores, truth, True, 200)

    def run_phase(self, phase: Phase, on_batch: Callable[[Exchange], None] | None = None) -> None:
        """Send *phase.rows* rows, rate-limited."""
        self.run_until(phase, lambda: False, max_rows=phase.rows, on_batch=on_batch)

    def run_until(
        self,
        phase: Phase,
        done: Callable[[], bool],
        max_rows: int,
        on_batch: Callable[[Exchange], None] | None = None,
        max_seconds: float = 900.0,
    ) -> None:
        """Send rows of *phase* until ``done()`` holds, *max_rows* were sent, or time runs out."""
        started = time.monotonic()
        sent = 0
        while sent < max_rows and time.monotonic() - started < max_seconds:
            for batch in self._batches(phase, min(5000, max_rows - sent)):
                exchange = self._exchange(phase, batch)
                self.log.exchanges.append(exchange)
                sent += len(batch)
                if on_batch is not None:
                    on_batch(exchange)
                pause = started + sent / self.rows_per_second - time.monotonic()
                if pause > 0:
                    time.sleep(min(pause, 1.0))
                if done() or sent >= max_rows or time.monotonic() - started >= max_seconds:
                    return

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()
