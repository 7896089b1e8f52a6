"""S3 connection settings: endpoint, credentials, retries and timeouts, all explicit.

On a cluster the settings reach every process as environment variables, from two
objects the user creates in each namespace that runs closedloop pods (KFP's, or the
profile's, and the serving namespace). This module owns their names and keys; the
manifests, the pipeline tasks (``pipelines/_cluster.py``) and the SeldonDeployment
builder all use them, and a test cross-checks the rendered overlays against the
compiled pipelines:

* the Secret :data:`S3_SECRET`, keys :data:`S3_SECRET_KEYS` (key → env var);
* the ConfigMap :data:`S3_SETTINGS_CONFIG_MAP`, keys :data:`S3_SETTINGS_KEYS`
  (``endpoint``: empty for AWS S3; ``region``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from closedloop.storage.errors import StorageError

RetryMode = Literal["standard", "adaptive", "legacy"]

S3_SECRET = "closedloop-s3-credentials"
S3_SECRET_KEYS: Mapping[str, str] = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
}
S3_SETTINGS_CONFIG_MAP = "closedloop-s3-settings"
S3_SETTINGS_KEYS: Mapping[str, str] = {
    "endpoint": "CLOSEDLOOP_S3_ENDPOINT",
    "region": "AWS_DEFAULT_REGION",
}
# Set by the KFP v2 backend in every task pod (backend/src/v2/compiler: KFP_POD_NAME from
# metadata.name): how a step knows it runs on a cluster.
_KFP_POD_ENV = "KFP_POD_NAME"


class S3SettingsMissingError(StorageError):
    """A pipeline step on a cluster did not receive the S3 settings ConfigMap."""


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible endpoint.

    The retry budget is deliberately larger than botocore's default (3 attempts in
    standard mode ride out well under a second of downtime): with 10 attempts and
    standard mode's capped exponential backoff a client waits out a few seconds of an
    endpoint restarting, and each attempt is bounded by the connect/read timeouts.

    Attributes:
        endpoint_url: ``http://127.0.0.1:8333`` for SeaweedFS/MinIO; None for AWS.
        access_key: Access key id; None means boto3's default credential chain.
        secret_key: Secret access key.
        region: Signing region.
        retry_mode: botocore retry mode.
        max_attempts: Total attempts per call, the first one included.
        connect_timeout: Seconds to open a connection.
        read_timeout: Seconds to wait for a response.
    """

    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    region: str = "us-east-1"
    retry_mode: RetryMode = "standard"
    max_attempts: int = 10
    connect_timeout: float = 2.0
    read_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("connect_timeout and read_timeout must be positive")
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("set both access_key and secret_key, or neither")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        """Read settings from ``CLOSEDLOOP_S3_*`` variables, falling back to ``AWS_*`` ones.

        Recognised: ``CLOSEDLOOP_S3_ENDPOINT`` (or ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``),
        ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
        ``CLOSEDLOOP_S3_MAX_ATTEMPTS``, ``CLOSEDLOOP_S3_CONNECT_TIMEOUT``,
        ``CLOSEDLOOP_S3_READ_TIMEOUT``.
        """
        env = os.environ if env is None else env
        endpoint_env = S3_SETTINGS_KEYS["endpoint"]
        if _KFP_POD_ENV in env and endpoint_env not in env:
            # The ConfigMap is mapped optionally; without it boto3 would quietly call
            # AWS with another store's credentials and retry for minutes.
            raise S3SettingsMissingError(
                f"this pipeline step got no {endpoint_env}: create the ConfigMap "
                f"{S3_SETTINGS_CONFIG_MAP} with keys {sorted(S3_SETTINGS_KEYS)} (endpoint "
                "empty for AWS S3) in the namespace the run's pods use; see docs/kubernetes.md"
            )
        endpoint = (
            env.get("CLOSEDLOOP_S3_ENDPOINT")
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
            or None
        )
        base = cls()
        return cls(
            endpoint_url=endpoint,
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            region=env.get("AWS_DEFAULT_REGION") or base.region,
            max_attempts=int(env.get("CLOSEDLOOP_S3_MAX_ATTEMPTS", base.max_attempts)),
            connect_timeout=float(env.get("CLOSEDLOOP_S3_CONNECT_TIMEOUT", base.connect_timeout)),
            read_timeout=float(env.get("CLOSEDLOOP_S3_READ_TIMEOUT", base.read_timeout)),
        )

    def to_env(self) -> dict[str, str]:
        """Return the environment variables that :meth:`from_env` reads back to these settings."""
        env = {
            "AWS_DEFAULT_REGION": self.region,
            "CLOSEDLOOP_S3_MAX_ATTEMPTS": str(self.max_attempts),
            "CLOSEDLOOP_S3_CONNECT_TIMEOUT": str(self.connect_timeout),
            "CLOSEDLOOP_S3_READ_TIMEOUT": str(self.read_timeout),
        }
        if self.endpoint_url:
            env["CLOSEDLOOP_S3_ENDPOINT"] = self.endpoint_url
        if self.access_key is not None and self.secret_key is not None:
            env["AWS_ACCESS_KEY_ID"] = self.access_key
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        return env

    def with_(self, **changes: object) -> S3Settings:
        """Return a copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]
