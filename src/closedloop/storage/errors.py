"""The storage layer's exception tree.

Every message says what failed and how to fix it, in one line, so the CLI can print it
as is. Callers catch :class:`StorageError` (or a subclass) and never botocore's types.
"""

from __future__ import annotations

from closedloop.errors import ClosedLoopError


class StorageError(ClosedLoopError):
    """Base class of every storage failure."""


class InvalidURIError(StorageError, ValueError):
    """A location that is neither ``s3://bucket/key`` nor a local path."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The object (or local file) does not exist."""


class BucketNotFoundError(StorageError):
    """The bucket does not exist on the S3 endpoint."""


class AlreadyExistsError(StorageError, FileExistsError):
    """A conditional create lost: another writer created the object first."""


class AccessDeniedError(StorageError, PermissionError):
    """The endpoint refused the credentials (unknown key, wrong secret, no permission)."""


class StorageUnavailableError(StorageError, ConnectionError):
    """The S3 endpoint could not be reached, or did not answer in time, after retries."""
