"""The storage layer against a real SeaweedFS S3 server, and against local paths."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from closedloop.local.s3 import LocalS3, free_port
from closedloop.storage import (
    AccessDeniedError,
    AlreadyExistsError,
    BucketNotFoundError,
    InvalidURIError,
    Location,
    ObjectNotFoundError,
    S3Settings,
    StorageUnavailableError,
    Store,
    join_uri,
    sha256_bytes,
)
from closedloop.storage.store import TMP_PREFIX

pytestmark = pytest.mark.slow


@pytest.fixture(params=["s3", "local"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A root URI: a fresh S3 bucket, or a local directory — same operations on both."""
    if request.param == "s3":
        return "s3://" + request.getfixturevalue("bucket")
    return str(tmp_path / "root")


def test_round_trip_list_and_delete(s3_store: Store, base: str) -> None:
    payload = uuid.uuid4().bytes * 1000
    uri = join_uri(base, "a", "b.bin")
    s3_store.write_bytes(uri, payload)
    s3_store.write_bytes(join_uri(base, "a", "c.bin"), b"c")
    assert s3_store.read_bytes(uri) == payload
    assert s3_store.exists(uri)
    assert s3_store.size(uri) == len(payload)
    assert s3_store.list(join_uri(base, "a")) == [
        join_uri(base, "a", "b.bin"),
        join_uri(base, "a", "c.bin"),
    ]
    s3_store.delete(uri)
    assert not s3_store.exists(uri)
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        s3_store.read_bytes(uri)
    s3_store.delete(uri)  # deleting the absent is fine


def test_publish_is_atomic_and_leaves_no_temporary_objects(
    s3_store: Store, base: str, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x01" * (9 << 20))  # above boto3's multipart threshold
    uri = join_uri(base, "models", "model.bin")
    digest = s3_store.publish(uri, path=str(big))
    assert digest == sha256_bytes(big.read_bytes())
    assert sha256_bytes(s3_store.read_bytes(uri)) == digest
    assert s3_store.list(base) == [uri]
    if base.startswith("s3://"):
        loc = Location.parse(base)
        raw = s3_store.client.list_objects_v2(Bucket=loc.bucket, Prefix=TMP_PREFIX)
        assert raw.get("KeyCount", 0) == 0
    else:
        assert [p.name for p in Path(base, "models").iterdir()] == ["model.bin"]


def test_failed_publish_keeps_the_previous_object(
    s3_store: Store, base: str, tmp_path: Path
) -> None:
    uri = join_uri(base, "pointer.json")
    s3_store.publish(uri, b'{"v": 1}')
    with pytest.raises(FileNotFoundError):
        s3_store.publish(uri, path=str(tmp_path / "missing"))
    assert s3_store.read_bytes(uri) == b'{"v": 1}'


def test_conditional_create_admits_exactly_one_of_many_writers(s3_store: Store, base: str) -> None:
    uri = join_uri(base, "locks", "run-1")
    winners: list[int] = []
    losers: list[int] = []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            s3_store.create(uri, str(i).encode())
            winners.append(i)
        except AlreadyExistsError:
            losers.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(winners) == 1 and len(losers) == 7
    assert s3_store.read_bytes(uri) == str(winners[0]).encode()


def test_retry_mode_attempts_and_timeouts_are_explicit(s3_server: LocalS3) -> None:
    store = Store(s3_server.settings(max_attempts=7, connect_timeout=1.5, read_timeout=12.0))
    config = store.client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 7}
    assert config.connect_timeout == 1.5
    assert config.read_timeout == 12.0


def test_settings_round_trip_through_the_environment(s3_server: LocalS3) -> None:
    settings = s3_server.settings(max_attempts=4)
    assert S3Settings.from_env(settings.to_env()) == settings


def test_unreachable_endpoint_is_a_clear_error() -> None:
    store = Store(
        S3Settings(
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            access_key="a",
            secret_key="b",
            max_attempts=2,
            connect_timeout=0.5,
        )
    )
    with pytest.raises(
        StorageUnavailableError,
        match=r"cannot reach S3 at http://127\.0\.0\.1:\d+.*closedloop s3 up",
    ):
        store.read_bytes("s3://closedloop/x")


@pytest.mark.parametrize("which", ["secret", "key"])
def test_wrong_credentials_are_a_clear_error(s3_server: LocalS3, which: str) -> None:
    good = s3_server.settings()
    bad = (
        good.with_(secret_key="not-the-secret")
        if which == "secret"
        else good.with_(access_key="nobody")
    )
    with pytest.raises(AccessDeniedError, match=r"refused the credentials.*AWS_ACCESS_KEY_ID"):
        Store(bad).write_bytes("s3://closedloop/x", b"1")


def test_missing_bucket_is_a_clear_error(s3_store: Store) -> None:
    with pytest.raises(BucketNotFoundError, match=r"bucket 'no-such-bucket-x' does not exist"):
        s3_store.read_bytes("s3://no-such-bucket-x/key")
    with pytest.raises(BucketNotFoundError):
        s3_store.exists("s3://no-such-bucket-x/key")
    with pytest.raises(BucketNotFoundError):
        s3_store.write_bytes("s3://no-such-bucket-x/key", b"1")


@pytest.mark.parametrize("uri", ["", "gs://bucket/key", "s3:///key"])
def test_invalid_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidURIError):
        Location.parse(uri)
