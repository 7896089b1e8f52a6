"""Fixtures every test tree shares (tests/, components/, pipelines/): one real SeaweedFS.

It lives at the repository root so that the component tests and the rest share one S3
server per session instead of starting one each.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from closedloop.local.s3 import LocalS3
from closedloop.storage import Store


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """One real SeaweedFS (S3 gateway on 127.0.0.1, free ports) for the test session."""
    server = LocalS3(tmp_path_factory.mktemp("seaweedfs"), buckets=("closedloop",))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def s3_store(s3_server: LocalS3) -> Store:
    """A :class:`Store` on the session's SeaweedFS with the default retry settings."""
    return s3_server.store()


@pytest.fixture()
def bucket(s3_store: Store) -> str:
    """A fresh, empty bucket for one test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_store.ensure_bucket(name)
    return name
