"""A stand-in for KFP v2's step cache: which tasks a rerun would take from the cache.

It follows the KFP backend, not our wishes:

* ``backend/src/v2/cacheutils/cache.go`` (``GenerateCacheKey``): the key is the input
  parameter **values**, the input artifacts' **names** (the MLMD artifact each producer
  wrote, new whenever the producer executes), the output specs, the image, the
  command and args, and the env. What an ``s3://`` URI or the registry holds is not
  in it.
* ``backend/src/v2/driver/driver.go`` (container driver): a task looks the key up only
  when its ``cachingOptions.enableCache`` is true; the compiler writes ``{}`` (false)
  for ``set_caching_options(False)``. A hit reuses the earlier execution's outputs, so
  its output artifacts keep their names.

A rerun with the same parameters therefore executes a task again only if caching is
off for it or one of its input artifacts comes from a task that executed again. An
input *parameter* taken from an upstream output may well have the same value after
that upstream executed again (a version id, a path), so it is assumed not to break
the key: the stand-in errs towards replaying, as the platform may.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def _load(package: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(package, Mapping):
        return package
    return next(iter(yaml.safe_load_all(Path(package).read_text())))


def executed_on_rerun(package: str | Path | Mapping[str, Any]) -> dict[str, bool]:
    """For every container task (``dag/sub-dag/task``), whether a same-parameter rerun executes it.

    ``False`` means the rerun takes the first run's outputs from the cache.
    """
    spec = _load(package)
    components = spec["components"]
    result: dict[str, bool] = {}

    def walk(dag: Mapping[str, Any], prefix: str, fresh_inputs: set[str]) -> dict[str, bool]:
        """Return, per task of *dag*, whether its outputs are new on the rerun."""
        tasks: Mapping[str, Any] = dag.get("tasks", {})
        fresh: dict[str, bool] = {}

        def artifact_fresh(binding: Mapping[str, Any]) -> bool:
            if "taskOutputArtifact" in binding:
                return visit(binding["taskOutputArtifact"]["producerTask"])
            if "componentInputArtifact" in binding:
                return binding["componentInputArtifact"] in fresh_inputs
            return False

        def visit(name: str) -> bool:
            if name in fresh:
                return fresh[name]
            task = tasks[name]
            artifacts = (task.get("inputs") or {}).get("artifacts", {})
            fresh_bindings = {key for key, b in artifacts.items() if artifact_fresh(b)}
            component = components[task["componentRef"]["name"]]
            if "dag" in component:
                inner = walk(component["dag"], f"{prefix}{name}/", fresh_bindings)
                fresh[name] = any(inner.values())
                return fresh[name]
            cached = bool((task.get("cachingOptions") or {}).get("enableCache", False))
            fresh[name] = not cached or bool(fresh_bindings)
            result[f"{prefix}{name}"] = fresh[name]
            return fresh[name]

        for name in tasks:
            visit(name)
        return fresh

    walk(spec["root"]["dag"], "", set())
    return result


def replayed(package: str | Path | Mapping[str, Any]) -> set[str]:
    """Container tasks whose first-run outputs a same-parameter rerun reuses."""
    return {task for task, executed in executed_on_rerun(package).items() if not executed}
