"""Point a compiled pipeline at the deployment: component image, pull secrets, caching.

The compiled YAML in ``compiled/`` names ``closedloop.images.COMPONENT_IMAGE`` at the
version the package was built with. A cluster built with skaffold (commit tags) or an
overlay's ``images:`` pulls something else, so whoever submits a run — ``closedloop
submit`` or the retrain trigger — writes a copy of the package whose every executor
runs the deployment's component image and, on a private registry, carries the
``imagePullSecrets`` (the same ``imagePullSecret`` entries that
``kfp.kubernetes.set_image_pull_secrets`` writes into the platform spec).

Caching is switched off here, in every task of every DAG, rather than with
``kfp.Client(...).create_run_from_pipeline_package(enable_caching=False)``: the client's
``_override_caching_options`` (kfp/client/client.py, kfp 2.17) only rewrites the
*root* DAG's tasks, so steps inside ``ParallelFor`` or ``dsl.If`` would still cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from closedloop.errors import ClosedLoopError

# A Secret's name is a DNS-1123 subdomain (Kubernetes' validation.IsDNS1123Subdomain).
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class PackageError(ClosedLoopError, ValueError):
    """A compiled pipeline package cannot be read or retargeted."""


def check_component_image(image: str) -> str:
    """Return *image* stripped, or raise :class:`PackageError` if it is no image reference."""
    value = image.strip()
    if not value or any(ch.isspace() for ch in value):
        raise PackageError(f"{image!r} is not an image reference (empty or containing spaces)")
    return value


def check_secret_names(names: Sequence[str]) -> tuple[str, ...]:
    """Return the Secret names stripped, once each, or raise :class:`PackageError`.

    A name must be a lower-case DNS subdomain, as the API server validates it; a bad
    one would otherwise surface only when a step pod fails to be created.
    """
    cleaned = [n.strip() for n in names]
    for name in cleaned:
        if not name:
            raise PackageError("an image pull secret name must not be empty")
        if len(name) > 253 or not _SECRET_NAME.fullmatch(name):
            raise PackageError(
                f"{name!r} is not a Secret name (lower-case DNS subdomain, e.g. regcred)"
            )
    return tuple(dict.fromkeys(cleaned))


def _documents(path: Path) -> list[dict[str, Any]]:
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise PackageError(f"cannot read the compiled pipeline {path}: {exc}") from exc
    if not docs or "deploymentSpec" not in docs[0]:
        raise PackageError(f"{path} is not a compiled KFP v2 pipeline (no deploymentSpec)")
    return docs


def retarget(
    package: str | Path,
    out: str | Path,
    *,
    component_image: str | None = None,
    image_pull_secrets: Sequence[str] = (),
    no_cache: bool = False,
) -> Path:
    """Write a copy of *package* that runs *component_image* with *image_pull_secrets*.

    Args:
        package: A compiled pipeline YAML.
        out: Where the copy goes.
        component_image: The image every step runs in; ``None`` keeps the compiled one.
        image_pull_secrets: Secrets the step pods pull images with.
        no_cache: Switch caching off for every task, nested ones included.

    Returns:
        *out*.

    Raises:
        PackageError: If the package is not a compiled pipeline, or an image or Secret
            name is malformed.
    """
    import yaml

    source, target = Path(package), Path(out)
    docs = _documents(source)
    pipeline = docs[0]
    executors = pipeline["deploymentSpec"].get("executors", {})
    if component_image is not None:
        component_image = check_component_image(component_image)
        for executor in executors.values():
            if "container" in executor:
                executor["container"]["image"] = component_image
    secrets = check_secret_names(image_pull_secrets)
    if secrets:
        platform = next((d for d in docs[1:] if "platforms" in d), None)
        if platform is None:
            platform = {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {}}}}}
            docs.append(platform)
        configs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for name in executors:
            configs.setdefault(name, {})["imagePullSecret"] = [
                {"secretName": s, "secretNameParameter": {"runtimeValue": {"constant": s}}}
                for s in secrets
            ]
    if no_cache:
        dags = [pipeline["root"], *pipeline.get("components", {}).values()]
        for dag in dags:
            for task in dag.get("dag", {}).get("tasks", {}).values():
                task["cachingOptions"] = {"enableCache": False}
    target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return target
