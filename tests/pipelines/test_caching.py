"""KFP's step cache never replays a step that reads or writes mutable state.

The committed YAML is read through a stand-in for KFP v2's cache (``kfp_cache.py``,
which names the backend sources it follows): on a rerun with the same parameters,
e.g. a recurring run or a rerun on an ``s3://`` URI whose content changed, every step
that reads data, the archive or the live champion, and every step that changes the
registry or the cluster, executes again; so does everything downstream of new data.
``closedloop submit --no-cache`` (:func:`closedloop.pipelines.package.retarget`)
switches the cache off for every step.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from closedloop.pipelines.package import retarget

ROOT = Path(__file__).resolve().parents[2]
COMPILED = ROOT / "pipelines" / "compiled"

# Steps whose output depends on more than their inputs' names and values, or which
# change the world: the data read by URI, the archive, the champion pointer, the
# registry, the cluster, the predictions file, the drift policy in force.
MUTABLE_STATE = {
    "ingest-data",
    "assemble-training-data",
    "validate-data",
    "validate-batch",
    "gate-model",
    "register-model",
    "promote-model",
    "deploy-model",
    "batch-predict",
    "check-drift",
}


def _stand_in():  # type: ignore[no-untyped-def]
    if "kfp_cache" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "kfp_cache", Path(__file__).with_name("kfp_cache.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["kfp_cache"] = module
        spec.loader.exec_module(module)
    return sys.modules["kfp_cache"]


def _kind(task: str) -> str:
    """``gate-passed/deploy-model-2`` → ``deploy-model``."""
    name = task.rsplit("/", 1)[-1]
    head, _, tail = name.rpartition("-")
    return head if tail.isdigit() else name


PACKAGES = sorted(COMPILED.glob("*.yaml"))


@pytest.mark.parametrize("package", PACKAGES, ids=[p.stem for p in PACKAGES])
def test_a_rerun_executes_every_step_that_reads_or_changes_mutable_state(package: Path) -> None:
    executed = _stand_in().executed_on_rerun(package)
    mutable = {task for task in executed if _kind(task) in MUTABLE_STATE}
    assert mutable, f"{package.name}: no step reads data? the stand-in found {sorted(executed)}"
    replayed = sorted(task for task in mutable if not executed[task])
    assert not replayed, f"{package.name}: a rerun would replay {replayed} from the cache"


def test_new_data_reaches_training_and_the_gate_through_artifact_names() -> None:
    executed = _stand_in().executed_on_rerun(COMPILED / "training.yaml")
    # Cacheable themselves, but their inputs are the new run's artifacts.
    for task in ("clean-data", "split-data", "train-model", "evaluate-model"):
        assert executed[task] is True, task
    assert any(_kind(t) == "train-candidate" and done for t, done in executed.items())


def test_the_stand_in_replays_what_kfp_would() -> None:
    """A step that takes no artifact and keeps its cache is served from the cache."""
    replayed = _stand_in().replayed(COMPILED / "training.yaml")
    assert "propose-candidates" in replayed


def test_the_stand_in_catches_a_cached_data_read(tmp_path: Path) -> None:
    """Re-enable the cache on ingest, as the first build compiled it: it and its
    cacheable consumers would replay the first run's data."""
    spec = next(iter(yaml.safe_load_all((COMPILED / "training.yaml").read_text())))
    spec["root"]["dag"]["tasks"]["ingest-data"]["cachingOptions"] = {"enableCache": True}
    spec["root"]["dag"]["tasks"]["validate-data"]["cachingOptions"] = {"enableCache": True}
    replayed = _stand_in().replayed(spec)
    assert {"ingest-data", "validate-data", "clean-data", "split-data", "train-model"} <= replayed


@pytest.mark.parametrize("package", PACKAGES, ids=[p.stem for p in PACKAGES])
def test_no_cache_replays_nothing(package: Path, tmp_path: Path) -> None:
    out = retarget(package, tmp_path / package.name, no_cache=True)
    assert _stand_in().replayed(out) == set()


def test_the_default_is_the_compiled_caching(tmp_path: Path) -> None:
    """--cache (the default) keeps each step's compiled setting."""
    out = retarget(COMPILED / "training.yaml", tmp_path / "training.yaml")
    assert _stand_in().replayed(out) == _stand_in().replayed(COMPILED / "training.yaml")


@pytest.mark.parametrize("name", ["training", "retraining"])
def test_the_compiled_pipelines_deploy_to_the_cluster_by_default(name: str) -> None:
    """A run started from the KFP UI with its defaults rolls the SeldonDeployment out."""
    spec = next(iter(yaml.safe_load_all((COMPILED / f"{name}.yaml").read_text())))
    parameter = spec["root"]["inputDefinitions"]["parameters"]["deploy_backend"]
    assert parameter["defaultValue"] == "kubernetes"


def test_on_the_cluster_the_deploy_step_moves_the_champion() -> None:
    """Promote only checks the gate there; deploy gets the gate and promotes once served."""
    spec = next(iter(yaml.safe_load_all((COMPILED / "training.yaml").read_text())))
    condition = spec["components"]["comp-condition-2"]["dag"]["tasks"]
    deploy, promote = condition["deploy-model"], condition["promote-model"]
    assert "gate" in deploy["inputs"]["artifacts"]
    assert promote["inputs"]["parameters"]["backend"] == deploy["inputs"]["parameters"]["backend"]
    assert deploy["retryPolicy"]["maxRetryCount"] == 1
