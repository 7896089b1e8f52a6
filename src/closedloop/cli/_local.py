"""Local-mode plumbing the commands share: find or start the local S3 store."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from closedloop import config
from closedloop.cli._common import err_console
from closedloop.storage import S3Settings

if TYPE_CHECKING:
    from closedloop.local.s3 import LocalS3


@contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """Let a clean-up finish even if Ctrl-C is pressed again: it stops child processes."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def s3_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment names an S3 store, so the local one is not wanted.

    On a cluster the S3 settings ConfigMap sets ``CLOSEDLOOP_S3_ENDPOINT`` (empty for
    AWS) and the Secret the credentials; either is enough, as the ConfigMap is mapped
    optionally. ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` name a store too.
    """
    env = os.environ if env is None else env
    return "CLOSEDLOOP_S3_ENDPOINT" in env or any(
        env.get(key) for key in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID")
    )


def _attach_or_start(buckets: tuple[str, ...], lifetime: str) -> tuple[LocalS3, bool]:
    """The running local store of ``$CLOSEDLOOP_HOME``, or a new one: (server, started)."""
    from closedloop.local.s3 import LocalS3, LocalS3Error, attach

    try:
        return attach(config.local_s3_dir()), False
    except LocalS3Error:
        pass
    with err_console.status("starting the local S3 store…"):
        server = LocalS3(config.local_s3_dir(), buckets=buckets).start()
    err_console.print(f"started local S3 at {server.endpoint} ({lifetime})")
    return server, True


def ensure_local_s3(buckets: tuple[str, ...] = ("closedloop",)) -> S3Settings:
    """Return S3 settings for this process and export them for child processes.

    When :func:`s3_configured`, the environment's settings are used as they are.
    Otherwise the local store of ``$CLOSEDLOOP_HOME`` is used, started in the
    background if it is not running (``closedloop s3 down`` stops it).
    """
    if s3_configured():
        return S3Settings.from_env()
    server, _ = _attach_or_start(buckets, "stop it with `closedloop s3 down`")
    settings = server.settings()
    os.environ.update(settings.to_env())
    for bucket in buckets:
        server.store().ensure_bucket(bucket)
    return settings


def local_s3_unless_configured(*uris: str) -> S3Settings | None:
    """Return S3 settings for a service that works on *uris*; None if none is on S3.

    How ``sidecar serve`` and ``trigger serve`` find their store: the environment's,
    else the local one, started in the background if need be (see
    :func:`ensure_local_s3`), so neither needs ``eval "$(closedloop s3 status --env)"``.
    """
    if not any(uri.startswith("s3://") for uri in uris):
        return None
    return ensure_local_s3()


@contextmanager
def s3_settings_for(*uris: str) -> Iterator[S3Settings | None]:
    """Yield S3 settings for a command that works on *uris*; None if none is on S3.

    The same discovery as :func:`local_s3_unless_configured`, for a command that should
    leave nothing behind: a local store it had to start is stopped again on exit.
    """
    if not any(uri.startswith("s3://") for uri in uris):
        yield None
        return
    if s3_configured():
        yield S3Settings.from_env()
        return
    server, started = _attach_or_start(("closedloop",), "stopped again on exit")
    try:
        yield server.settings()
    finally:
        if started:
            with ignoring_interrupts():
                server.stop()
