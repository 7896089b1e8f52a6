"""Local-mode plumbing the commands share: find or start the local S3 store."""

from __future__ import annotations

import os

from closedloop import config
from closedloop.cli._common import err_console
from closedloop.storage import S3Settings


def ensure_local_s3(buckets: tuple[str, ...] = ("closedloop",)) -> S3Settings:
    """Return S3 settings for this process and export them for child processes.

    An endpoint already configured (``CLOSEDLOOP_S3_ENDPOINT``) is used as is.
    Otherwise the local store of ``$CLOSEDLOOP_HOME`` is used, started in the
    background if it is not running (``closedloop s3 down`` stops it).
    """
    if os.environ.get("CLOSEDLOOP_S3_ENDPOINT"):
        return S3Settings.from_env()
    from closedloop.local.s3 import LocalS3, LocalS3Error, attach

    try:
        server = attach(config.local_s3_dir())
    except LocalS3Error:
        with err_console.status("starting the local S3 store…"):
            server = LocalS3(config.local_s3_dir(), buckets=buckets).start()
        err_console.print(
            f"started local S3 at {server.endpoint} (stop it with `closedloop s3 down`)"
        )
    settings = server.settings()
    os.environ.update(settings.to_env())
    for bucket in buckets:
        server.store().ensure_bucket(bucket)
    return settings


def local_s3_unless_configured(*uris: str) -> None:
    """Use the local S3 store for these ``s3://`` URIs when nothing else is configured.

    What ``closedloop serve`` does for the services: on a cluster the S3 settings
    ConfigMap always sets ``CLOSEDLOOP_S3_ENDPOINT`` (empty for AWS) and the Secret
    the credentials; with neither in the environment, this is local mode, so the
    local store of ``$CLOSEDLOOP_HOME`` is attached (or started in the background)
    and its settings exported.
    """
    if not any(uri.startswith("s3://") for uri in uris):
        return
    if "CLOSEDLOOP_S3_ENDPOINT" in os.environ or os.environ.get("AWS_ACCESS_KEY_ID"):
        return
    ensure_local_s3()
