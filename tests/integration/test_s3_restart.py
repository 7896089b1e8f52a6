"""Durability: SeaweedFS is SIGKILLed and restarted while a writer keeps putting."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from closedloop.local.s3 import LocalS3
from closedloop.storage import StorageError, sha256_bytes

pytestmark = pytest.mark.slow


def test_every_acknowledged_put_survives_a_kill_and_restart(tmp_path: Path) -> None:
    server = LocalS3(tmp_path / "s3", buckets=("durable",)).start()
    try:
        store = server.store()  # the default retry budget must ride out the restart
        acknowledged: dict[str, str] = {}
        failed: list[str] = []
        stop = threading.Event()
        restarted = threading.Event()
        after_restart: list[str] = []

        def writer() -> None:
            for i in range(10_000):  # bounded; stopped far earlier by the event
                if stop.is_set():
                    return
                key = f"s3://durable/obj-{i:05d}"
                payload = os.urandom(4096 + i % 512)
                try:
                    store.write_bytes(key, payload)
                except StorageError as exc:
                    failed.append(f"{key}: {exc}")
                    continue
                acknowledged[key] = sha256_bytes(payload)
                if restarted.is_set():
                    after_restart.append(key)

        thread = threading.Thread(target=writer)
        thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = len(acknowledged)
        server.kill()
        time.sleep(0.5)
        server.restart()
        restarted.set()
        deadline = time.monotonic() + 60
        while len(after_restart) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert before >= 50, "the writer never got going before the kill"
        assert len(after_restart) >= 50, "writes did not resume after the restart"
        for key, digest in acknowledged.items():
            assert sha256_bytes(store.read_bytes(key)) == digest, key
        # Puts in flight during the outage are retried through the restart, not lost.
        assert failed == []
    finally:
        server.stop()
