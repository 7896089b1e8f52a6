"""One storage layer for ``s3://bucket/key`` URIs and local paths.

The registry and the trigger rely on two operations being first-class:

* :meth:`Store.publish` — atomic publication. The bytes are written under a temporary
  name and made visible under the final name only once complete (``os.replace``
  locally; upload to a temporary key, check its size, then a server-side copy on S3),
  so a reader never sees a partial object and a failed upload never replaces a good one.
* :meth:`Store.create` — conditional create, first writer wins (``IfNoneMatch="*"`` on
  S3, ``O_EXCL`` locally). The loser gets :class:`AlreadyExistsError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from closedloop.storage.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    BucketNotFoundError,
    InvalidURIError,
    ObjectNotFoundError,
    StorageError,
    StorageUnavailableError,
)
from closedloop.storage.settings import S3Settings

if TYPE_CHECKING:
    from botocore.client import BaseClient

TMP_PREFIX = ".closedloop-tmp/"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Location:
    """A parsed storage location: an S3 object or a local file.

    Attributes:
        bucket: The S3 bucket, or None for a local path.
        key: The object key (S3) or the absolute path (local).
    """

    bucket: str | None
    key: str

    @property
    def is_s3(self) -> bool:
        """Whether the location is on S3."""
        return self.bucket is not None

    @classmethod
    def parse(cls, uri: str | os.PathLike[str]) -> Location:
        """Parse ``s3://bucket/key``, ``file:///path`` or a plain path.

        Raises:
            InvalidURIError: For other schemes or an S3 URI without a bucket.
        """
        text = os.fspath(uri)
        if not text:
            raise InvalidURIError("empty storage location: give s3://bucket/key or a local path")
        if text.startswith("s3://"):
            bucket, _, key = text[len("s3://") :].partition("/")
            if not bucket:
                raise InvalidURIError(f"{text!r} has no bucket: use s3://bucket/key")
            return cls(bucket, key)
        if text.startswith("file://"):
            text = text[len("file://") :]
        elif "://" in text:
            scheme = text.split("://", 1)[0]
            raise InvalidURIError(
                f"unsupported scheme {scheme!r} in {text!r}: use s3://bucket/key or a local path"
            )
        return cls(None, str(Path(text).expanduser().absolute()))

    def join(self, *parts: str) -> Location:
        """Return the location of *parts* below this one."""
        tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
        if self.is_s3:
            base = self.key.rstrip("/")
            return Location(self.bucket, f"{base}/{tail}" if base else tail)
        return Location(None, str(Path(self.key, tail)))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.is_s3 else self.key


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object.

    Attributes:
        uri: Its ``s3://`` URI or local path.
        size: Its size in bytes.
        modified: When it was last written (Unix time; S3's ``LastModified``).
    """

    uri: str
    size: int
    modified: float


def join_uri(base: str, *parts: str) -> str:
    """Join path parts onto an ``s3://`` URI or a local path."""
    return str(Location.parse(base).join(*parts))


def sha256_bytes(data: bytes) -> str:
    """Return the hex sha256 of *data*."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Store:
    """Read, write, publish and conditionally create objects on S3 or local disk.

    Args:
        settings: How to reach S3; defaults to :meth:`S3Settings.from_env`. Unused for
            local paths, so a purely local store needs no endpoint.
    """

    def __init__(self, settings: S3Settings | None = None) -> None:
        self.settings = settings if settings is not None else S3Settings.from_env()
        self._client: BaseClient | None = None

    # -- the boto3 client -------------------------------------------------------------
    @property
    def client(self) -> BaseClient:
        """The boto3 S3 client, created on first use with explicit retries and timeouts."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            s = self.settings
            config = Config(
                retries={"mode": s.retry_mode, "total_max_attempts": s.max_attempts},
                connect_timeout=s.connect_timeout,
                read_timeout=s.read_timeout,
                s3={"addressing_style": "path"},
                # SeaweedFS and MinIO accept plain payloads; only AWS needs the new defaults.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            self._client = boto3.client(
                "s3",
                endpoint_url=s.endpoint_url,
                aws_access_key_id=s.access_key,
                aws_secret_access_key=s.secret_key,
                region_name=s.region,
                config=config,
            )
        return self._client

    @contextlib.contextmanager
    def _errors(self, loc: Location, action: str) -> Iterator[None]:
        """Translate botocore failures into the storage exception tree."""
        from botocore.exceptions import (
            ClientError,
            NoCredentialsError,
            ReadTimeoutError,
        )
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )

        endpoint = self.settings.endpoint_url or "AWS S3"
        try:
            yield
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise BucketNotFoundError(
                    f"bucket {loc.bucket!r} does not exist on {endpoint} (while trying to "
                    f"{action} {loc}): create it, e.g. `closedloop s3 up --bucket {loc.bucket}`"
                ) from exc
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFoundError(
                    f"{loc} does not exist (while trying to {action})"
                ) from exc
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                raise AlreadyExistsError(
                    f"{loc} already exists: another writer created it first"
                ) from exc
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
                raise AccessDeniedError(
                    f"{endpoint} refused the credentials ({code}) while trying to {action} {loc}: "
                    "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                ) from exc
            message = err.get("Message") or str(exc)
            raise StorageError(f"could not {action} {loc}: {code} {message}".strip()) from exc
        except (BotoConnectionError, ReadTimeoutError) as exc:
            raise StorageUnavailableError(
                f"cannot reach S3 at {endpoint} (while trying to {action} {loc}, "
                f"{self.settings.max_attempts} attempts): is it running? Start the local "
                "store with `closedloop s3 up`, or set CLOSEDLOOP_S3_ENDPOINT"
            ) from exc
        except NoCredentialsError as exc:
            raise AccessDeniedError(
                f"no S3 credentials for {endpoint}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from exc

    # -- reading ----------------------------------------------------------------------
    def read_bytes(self, uri: str) -> bytes:
        """Return the whole content of *uri*."""
        loc = Location.parse(uri)
        if not loc.is_s3:
            try:
                return Path(loc.key).read_bytes()
            except FileNotFoundError as exc:
                raise ObjectNotFoundError(f"{loc} does not exist") from exc
        with self._errors(loc, "read"):
            return self.client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()

    def exists(self, uri: str) -> bool:
        """Whether *uri* exists (a missing bucket is an error, not False)."""
        loc = Location.parse(uri)
        if not loc.is_s3:
            return Path(loc.key).is_file()
        try:
            with self._errors(loc, "check"):
                self.client.head_object(Bucket=loc.bucket, Key=loc.key)
        except ObjectNotFoundError:
            self._require_bucket(loc)
            return False
        return True

    def size(self, uri: str) -> int:
        """Return the size of *uri* in bytes."""
        loc = Location.parse(uri)
        if not loc.is_s3:
            try:
                return Path(loc.key).stat().st_size
            except FileNotFoundError as exc:
                raise ObjectNotFoundError(f"{loc} does not exist") from exc
        with self._errors(loc, "check"):
            return int(self.client.head_object(Bucket=loc.bucket, Key=loc.key)["ContentLength"])

    def list(self, prefix_uri: str) -> list[str]:
        """Return the URIs of every object below *prefix_uri*, sorted.

        Temporary objects of unfinished publications are never listed.
        """
        return [info.uri for info in self.list_objects(prefix_uri)]

    def list_objects(self, prefix_uri: str) -> list[ObjectInfo]:
        """Return every object below *prefix_uri* with its size and age, sorted by URI.

        Temporary objects of unfinished publications are never listed.
        """
        loc = Location.parse(prefix_uri)
        if not loc.is_s3:
            root = Path(loc.key)
            if not root.is_dir():
                return []
            found = []
            for p in root.rglob("*"):
                if p.is_file() and ".closedloop-tmp" not in p.name:
                    stat = p.stat()
                    found.append(ObjectInfo(str(p), stat.st_size, stat.st_mtime))
            return sorted(found, key=lambda info: info.uri)
        prefix = loc.key if not loc.key or loc.key.endswith("/") else loc.key + "/"
        out: list[ObjectInfo] = []
        with self._errors(loc, "list"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=loc.bucket, Prefix=prefix
            )
            for page in pages:
                out.extend(
                    ObjectInfo(
                        f"s3://{loc.bucket}/{obj['Key']}",
                        int(obj["Size"]),
                        obj["LastModified"].timestamp(),
                    )
                    for obj in page.get("Contents", [])
                    if not obj["Key"].startswith(TMP_PREFIX)
                )
        return sorted(out, key=lambda info: info.uri)

    def download_file(self, uri: str, path: str | os.PathLike[str]) -> Path:
        """Copy *uri* to the local *path* (parents created) and return the path."""
        loc = Location.parse(uri)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not loc.is_s3:
            self._publish_local(dest, Path(loc.key).read_bytes())
            return dest
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            with self._errors(loc, "download"):
                self.client.download_file(loc.bucket, loc.key, str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    # -- writing ----------------------------------------------------------------------
    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write *data* to *uri* with one request (locally: atomic replace)."""
        loc = Location.parse(uri)
        if not loc.is_s3:
            self._publish_local(Path(loc.key), data)
            return
        with self._errors(loc, "write"):
            self.client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data)

    def publish(self, uri: str, data: bytes | None = None, *, path: str | None = None) -> str:
        """Atomically make *data* (or the local file *path*) visible at *uri*.

        Returns:
            The sha256 of what was published.
        """
        if (data is None) == (path is None):
            raise TypeError("publish takes exactly one of data= or path=")
        loc = Location.parse(uri)
        if data is None:
            assert path is not None
            digest, size = sha256_file(path), os.path.getsize(path)
        else:
            digest, size = sha256_bytes(data), len(data)
        if not loc.is_s3:
            self._publish_local(
                Path(loc.key), data if data is not None else Path(path).read_bytes()
            )  # type: ignore[arg-type]
            return digest
        tmp = Location(loc.bucket, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            with self._errors(tmp, "upload"):
                if data is not None:
                    self.client.put_object(Bucket=tmp.bucket, Key=tmp.key, Body=data)
                else:
                    self.client.upload_file(str(path), tmp.bucket, tmp.key)
            if self.size(str(tmp)) != size:
                raise StorageError(f"upload of {loc} arrived incomplete; nothing was published")
            with self._errors(loc, "publish"):
                self.client.copy_object(
                    Bucket=loc.bucket,
                    Key=loc.key,
                    CopySource={"Bucket": tmp.bucket, "Key": tmp.key},
                )
        finally:
            with contextlib.suppress(StorageError):
                self.delete(str(tmp))
        return digest

    def create(self, uri: str, data: bytes) -> None:
        """Create *uri* with *data* only if nothing exists there yet (first writer wins).

        Raises:
            AlreadyExistsError: If the object already exists.
        """
        loc = Location.parse(uri)
        if not loc.is_s3:
            target = Path(loc.key)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError as exc:
                raise AlreadyExistsError(
                    f"{loc} already exists: another writer created it first"
                ) from exc
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return
        with self._errors(loc, "create"):
            self.client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data, IfNoneMatch="*")

    def delete(self, uri: str) -> None:
        """Delete *uri*; deleting what does not exist is not an error."""
        loc = Location.parse(uri)
        if not loc.is_s3:
            Path(loc.key).unlink(missing_ok=True)
            return
        with self._errors(loc, "delete"):
            self.client.delete_object(Bucket=loc.bucket, Key=loc.key)

    # -- buckets ----------------------------------------------------------------------
    def ensure_bucket(self, bucket: str) -> None:
        """Create *bucket* if it does not exist yet."""
        loc = Location(bucket, "")
        with self._errors(loc, "create bucket"):
            try:
                self.client.head_bucket(Bucket=bucket)
                return
            except Exception as exc:  # botocore raises ClientError 404 for a missing bucket
                if _status(exc) != 404:
                    raise
            try:
                self.client.create_bucket(Bucket=bucket)
            except Exception as exc:
                if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def _require_bucket(self, loc: Location) -> None:
        with self._errors(loc, "check"):
            try:
                self.client.head_bucket(Bucket=loc.bucket)
            except Exception as exc:
                if _status(exc) == 404:
                    raise BucketNotFoundError(
                        f"bucket {loc.bucket!r} does not exist on "
                        f"{self.settings.endpoint_url or 'AWS S3'}: create it, e.g. "
                        f"`closedloop s3 up --bucket {loc.bucket}`"
                    ) from exc
                raise

    @staticmethod
    def _publish_local(target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".closedloop-tmp"
        )
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _status(exc: BaseException) -> int | None:
    response: Any = getattr(exc, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _code(exc: BaseException) -> str:
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
