"""The one place that names the project's container images.

Every KFP component uses :data:`COMPONENT_IMAGE` as its ``base_image``; the
SeldonDeployment builder uses :data:`SERVING_IMAGE` (model server) and
:data:`MONITOR_IMAGE` (drift-detector sidecar and retrain trigger). The Dockerfiles
live in ``images/``, ``skaffold.yaml`` builds them under the same names, and the
manifests in ``manifests/`` refer to the same references.

To use another registry or tag, set ``CLOSEDLOOP_COMPONENT_IMAGE``,
``CLOSEDLOOP_SERVING_IMAGE`` or ``CLOSEDLOOP_MONITOR_IMAGE`` before the package is
imported (compiling pipelines bakes the component image into the compiled YAML).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

REGISTRY = "ghcr.io/closedloop"
"""Registry and namespace the default references point to."""

IMAGE_TAG = "0.1.0"
"""Tag of the default references; bumped together with the package version."""

DEFAULT_COMPONENT_IMAGE = f"{REGISTRY}/closedloop-component:{IMAGE_TAG}"
DEFAULT_SERVING_IMAGE = f"{REGISTRY}/closedloop-serving:{IMAGE_TAG}"
DEFAULT_MONITOR_IMAGE = f"{REGISTRY}/closedloop-monitor:{IMAGE_TAG}"

COMPONENT_IMAGE_ENV = "CLOSEDLOOP_COMPONENT_IMAGE"
SERVING_IMAGE_ENV = "CLOSEDLOOP_SERVING_IMAGE"
MONITOR_IMAGE_ENV = "CLOSEDLOOP_MONITOR_IMAGE"


def resolve_image(env_var: str, default: str, env: Mapping[str, str] | None = None) -> str:
    """Return the image reference from ``env_var`` if it is set and non-empty, else ``default``.

    Args:
        env_var: Name of the overriding environment variable.
        default: Reference used when the variable is unset or blank.
        env: Environment to read; ``os.environ`` when None.

    Returns:
        The image reference, stripped of surrounding whitespace.

    Raises:
        ValueError: If the override contains whitespace inside the reference.
    """
    env = os.environ if env is None else env
    value = (env.get(env_var) or "").strip()
    if not value:
        return default
    if any(ch.isspace() for ch in value):
        raise ValueError(f"{env_var}={value!r} is not an image reference (it contains whitespace)")
    return value


COMPONENT_IMAGE: str = resolve_image(COMPONENT_IMAGE_ENV, DEFAULT_COMPONENT_IMAGE)
"""Image every KFP step runs in (``images/component/Dockerfile``)."""

SERVING_IMAGE: str = resolve_image(SERVING_IMAGE_ENV, DEFAULT_SERVING_IMAGE)
"""Seldon Core python-wrapper model server (``images/serving/Dockerfile``)."""

MONITOR_IMAGE: str = resolve_image(MONITOR_IMAGE_ENV, DEFAULT_MONITOR_IMAGE)
"""Drift-detector sidecar and retrain trigger (``images/monitor/Dockerfile``)."""
