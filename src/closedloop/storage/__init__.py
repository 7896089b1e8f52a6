"""Storage layer: ``s3://`` URIs and local paths behind one :class:`Store`."""

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
from closedloop.storage.store import (
    Location,
    ObjectInfo,
    Store,
    join_uri,
    sha256_bytes,
    sha256_file,
)

__all__ = [
    "AccessDeniedError",
    "AlreadyExistsError",
    "BucketNotFoundError",
    "InvalidURIError",
    "Location",
    "ObjectInfo",
    "ObjectNotFoundError",
    "S3Settings",
    "StorageError",
    "StorageUnavailableError",
    "Store",
    "join_uri",
    "sha256_bytes",
    "sha256_file",
]
