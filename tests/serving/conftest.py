"""Shared pieces of the serving tests: a real model, a registry, an event receiver."""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from closedloop.data.generate import generate_transactions
from closedloop.deploy.local import LocalServerError, find_microservice
from closedloop.local.s3 import LocalS3
from closedloop.ml.schema import InputSchema, infer_schema
from closedloop.ml.train import ModelConfig, train_model
from closedloop.registry import Lineage, Registry
from closedloop.registry.layout import MODEL_FILE, SCHEMA_FILE

REPO = Path(__file__).resolve().parents[2]
SERVING_PYTHON = REPO / ".venv-serving" / "bin" / "python"
TARGET = "is_fraud"


def serving_environment_or_skip() -> None:
    """Skip when the serving virtual environment is missing (`make install` creates it)."""
    try:
        find_microservice()
    except LocalServerError as exc:
        pytest.skip(str(exc))


@dataclass(frozen=True)
class TrainedModel:
    """A fitted served pipeline and its schema."""

    pipeline: Pipeline
    schema: InputSchema


def train(seed: int, n_estimators: int) -> TrainedModel:
    frame = generate_transactions(2500, seed=seed)
    schema = infer_schema(frame, TARGET)
    config = ModelConfig("xgboost", {"n_estimators": n_estimators, "max_depth": 3}, seed=seed)
    return TrainedModel(train_model(frame, schema, config), schema)


@pytest.fixture(scope="session")
def model_v1() -> TrainedModel:
    return train(seed=1, n_estimators=30)


@pytest.fixture(scope="session")
def model_v2() -> TrainedModel:
    return train(seed=2, n_estimators=60)


def register(registry: Registry, name: str, model: TrainedModel) -> str:
    """Write a version directory as the training pipeline does and register it."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp)
        joblib.dump(model.pipeline, source / MODEL_FILE)
        (source / SCHEMA_FILE).write_text(model.schema.to_json())
        lineage = Lineage(dataset_uri="generated://transactions", dataset_sha256="0" * 64)
        return registry.register(name, source, lineage, {"roc_auc": 0.9}).version


@pytest.fixture(scope="module")
def registry(s3_server: LocalS3) -> Registry:
    """A registry under a fresh prefix of the session's SeaweedFS."""
    return Registry(s3_server.store(), f"s3://closedloop/serving-{uuid.uuid4().hex[:8]}")


def request_rows(n: int, seed: int, names: tuple[str, ...]) -> tuple[pd.DataFrame, list[list[Any]]]:
    """Fresh rows: as a frame (for in-process predictions) and as JSON rows (for requests)."""
    frame = generate_transactions(n, seed=seed).loc[:, list(names)]
    rows = []
    for record in frame.to_dict("records"):
        row = []
        for name in names:
            value = record[name]
            if isinstance(value, pd.Timestamp):
                value = value.strftime("%Y-%m-%dT%H:%M:%S")
            elif hasattr(value, "item"):
                value = value.item()
            row.append(value)
        rows.append(row)
    return frame, rows


def processes_in(directory: Path) -> list[int]:
    """Process ids whose working directory is *directory* (the servers run there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == directory:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group *pgid*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def metric_values(text: str, name: str, **labels: str) -> list[float]:
    """Values of a Prometheus metric whose labels include *labels*."""
    values = []
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            values.append(float(match.group(2)))
    return values


@dataclass(frozen=True)
class ReceivedEvent:
    """One HTTP request the receiver got."""

    headers: dict[str, str]
    body: bytes


class EventReceiver:
    """A tiny HTTP server on 127.0.0.1 that records every POST (a stand-in sidecar)."""

    def __init__(self) -> None:
        self.events: list[ReceivedEvent] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.events.append(ReceivedEvent(dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(
        self, predicate: Callable[[ReceivedEvent], bool], count: int = 1, timeout: float = 10.0
    ) -> list[ReceivedEvent]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                matching = [e for e in self.events if predicate(e)]
            if len(matching) >= count or time.monotonic() > deadline:
                return matching
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[EventReceiver]:
    server = EventReceiver()
    try:
        yield server
    finally:
        server.close()


def header(event: ReceivedEvent, name: str) -> str | None:
    """A header of an event, looked up without regard to case."""
    lowered = {k.lower(): v for k, v in event.headers.items()}
    return lowered.get(name.lower())
