"""The event journal: records on disk before an answer, a replay that takes them again exactly."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sidecar_harness import event_headers, make_monitor, ndarray_body, served_detector

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.drift.policy import DriftPolicy
from closedloop.drift.sidecar.journal import (
    Journal,
    JournalRecord,
    RecordKind,
    list_segments,
    read_segment,
    segment_path,
)
from closedloop.drift.sidecar.loader import ServedDetector
from closedloop.drift.sidecar.monitor import DriftMonitor


@pytest.fixture(scope="module")
def served() -> ServedDetector:
    return served_detector()


def record(i: int) -> JournalRecord:
    return JournalRecord(
        RecordKind.REQUEST, 1000.0 + i, "src", f"id-{i}", f"req-{i}", b"", b'{"i": %d}' % i
    )


def test_records_read_back_as_written_and_a_torn_tail_ends_the_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "fraud", "v1")
    journal.start(7)
    tickets = [journal.append([record(i).encode()]) for i in range(5)]
    journal.sync(tickets[-1])
    journal.close()
    assert tickets == [1, 2, 3, 4, 5] and list_segments(tmp_path) == [7]
    # A kill in the middle of a write leaves part of a record behind.
    with segment_path(tmp_path, 7).open("ab") as fh:
        fh.write(record(5).encode()[:-3])
    segment = read_segment(tmp_path, 7)
    assert (segment.model_name, segment.model_version) == ("fraud", "v1")
    assert segment.records == [record(i) for i in range(5)]
    assert segment.torn_bytes > 0
    # A damaged record ends the segment too: what follows it is not trusted.
    data = bytearray(segment_path(tmp_path, 7).read_bytes())
    data[-60] ^= 0xFF
    segment_path(tmp_path, 7).write_bytes(bytes(data))
    assert len(read_segment(tmp_path, 7).records) < 5


def test_group_commit_covers_concurrent_appends_and_rotation_discards(tmp_path: Path) -> None:
    synced: list[int] = []
    journal = Journal(tmp_path, "fraud", "v1", lambda seconds, n: synced.append(n))
    journal.start(1)

    def writer(offset: int) -> None:
        for i in range(200):
            journal.sync(journal.append([record(offset + i).encode()]))

    threads = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(synced) == 800 and len(synced) <= 800
    assert journal.rotate() == 2
    journal.sync(journal.append([record(9999).encode()]))
    journal.discard_before(2)
    journal.close()
    assert list_segments(tmp_path) == [2]
    assert [r.id for r in read_segment(tmp_path, 2).records] == ["id-9999"]


def _traffic(monitor: DriftMonitor, schema, seed: int) -> list[tuple[dict, bytes]]:
    """Requests, a duplicate, a refused request, responses and feedback (joined or not).

    Returns:
        The accepted requests.
    """
    rng = np.random.default_rng(seed)
    names = list(schema.feature_names)
    accepted = []
    for i in range(12):
        headers = event_headers("request")
        body = ndarray_body(schema, rows=int(rng.integers(1, 40)), seed=seed * 100 + i)
        assert monitor.ingest(headers, body).outcome == "accepted"
        accepted.append((headers, body))
        if i % 4 == 0:
            assert monitor.ingest(headers, body).outcome == "duplicate"
    bad = json.loads(ndarray_body(schema, rows=2, seed=seed))
    bad["data"]["ndarray"][1][0] = "lots"
    assert monitor.ingest(event_headers("request"), json.dumps(bad).encode()).outcome == "refused"
    for i in range(4):
        frame = generate_transactions(5, seed=seed * 10 + i)
        puid = str(uuid.uuid4())
        scores = rng.random((5, 1))
        answer = {
            "data": {"names": ["0", "1"], "ndarray": np.hstack([1 - scores, scores]).tolist()}
        }
        answer["meta"] = {"tags": {"model_version": "v1"}}
        headers = event_headers("response", Ce_Requestid=puid)
        assert monitor.ingest(headers, json.dumps(answer).encode()).outcome == "recorded"
        rows = json.loads(ndarray_body(schema, rows=5, seed=seed * 10 + i))["data"]
        feedback = {
            "request": {"data": {"names": names, "ndarray": rows["ndarray"]}},
            "truth": {"data": {"ndarray": [[int(v)] for v in frame[DEFAULT_TARGET]]}},
            "response": {**answer, "meta": {"puid": puid if i % 2 == 0 else "unknown"}},
        }
        result = monitor.ingest(event_headers("feedback"), json.dumps(feedback).encode())
        assert result.outcome == "buffered"
    return accepted


def _state(monitor: DriftMonitor) -> dict:
    window = monitor._buffer.snapshot()
    return {
        "sequence": window.sequence,
        "opened_at": window.opened_at,
        "frame": window.frame,
        "labels": (window.labels.y.tolist(), np.asarray(window.labels.scores).tolist()),
        "pending": [(w.sequence, w.reason, len(w.frame)) for w in monitor._pending],
        "dedupe": monitor._dedupe.keys(),
        "feedback": monitor.archive.snapshot(),
        "rows_accepted": monitor._rows_accepted,
    }


def test_a_hard_stop_loses_nothing_and_takes_nothing_twice(
    served: ServedDetector, tmp_path: Path
) -> None:
    """Events after the last checkpoint come back from the journal exactly as they were taken."""
    clock = [1_800_000_000.0]
    policy = DriftPolicy(
        window_size=150, window_max_age_seconds=60, min_window_rows=10, min_samples=10
    )

    def monitor() -> DriftMonitor:
        return make_monitor(
            served, tmp_path / "state", policy, checkpoint_interval=3600, tick_seconds=3600
        )

    first = monitor()
    first._clock = lambda: clock[0]
    first.open()
    _traffic(first, served.schema, seed=1)
    first.checkpoint(force=True)  # a checkpoint mid-way: the replay starts after it
    _traffic(first, served.schema, seed=2)
    clock[0] += 120
    first.tick()  # a window closed by age, journaled
    sent = _traffic(first, served.schema, seed=3)
    before = _state(first)
    assert before["pending"] and before["labels"][0], "the traffic closed windows and joined labels"
    # A hard stop: no final checkpoint, the RUNNING marker left behind.
    first.journal.close()

    second = monitor()
    second._clock = lambda: clock[0]
    report = second.open()
    try:
        after = _state(second)
        assert report.previous == "unclean" and report.events_replayed > 0
        pd.testing.assert_frame_equal(after.pop("frame"), before.pop("frame"))
        pd.testing.assert_frame_equal(after.pop("feedback"), before.pop("feedback"))
        assert after == before
        # Every event id is remembered: a resend is a duplicate.
        assert second.ingest(*sent[-1]).outcome == "duplicate"
    finally:
        second.journal.close()
