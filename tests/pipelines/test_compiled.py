"""Golden tests: the committed component specs and pipeline YAML are what the code compiles to.

Compilation runs in a subprocess whose environment lacks ``CLOSEDLOOP_COMPONENT_IMAGE``
(the image is resolved when :mod:`closedloop.images` is imported), twice, into temporary
folders; the committed files are compared with the result ignoring ``sdkVersion``.
Then the compiled training pipeline is checked for what a cluster run relies on:
caching, retries, S3 credentials from a Secret, the gate guarding promotion, one image.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from closedloop.pipelines import compiler
from closedloop.pipelines.registry import pipelines
from kfp import components as kfp_components

from closedloop import images
from closedloop.storage.settings import S3_SECRET, S3_SETTINGS_CONFIG_MAP

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS_DIR = ROOT / "components"
COMPILED_DIR = ROOT / "pipelines" / "compiled"

# What the compiled pipelines must say about their tasks (task names drop any "-<n>").
NETWORK_BOUND = {"ingest-data", "gate-model", "register-model", "promote-model", "deploy-model"}
SIDE_EFFECTS = {"register-model", "promote-model", "deploy-model"}
PURE = {"clean-data", "split-data", "train-model", "evaluate-model"}
# Read S3 (an expected schema) but fail the same way on every try: credentials, no retry.
S3_NO_RETRY = {"validate-data"}
S3_COMPONENTS = {
    "data_processing/ingest_data",
    "data_processing/validate_data",
    "evaluation/gate_model",
    "deployment/register_model",
    "deployment/promote_model",
}
# External services each component's metadata.yaml must declare (none when not listed).
EXTERNAL_SERVICES = {
    **{folder: {"S3"} for folder in S3_COMPONENTS},
    "data_processing/assemble_training_data": {"S3"},
    "inference/batch_predict": {"S3"},
    "inference/check_drift": {"S3"},
    "inference/validate_batch": {"S3"},
    "deployment/deploy_model": {"Seldon Core"},
}

_COMPILE_SCRIPT = """
import sys
from pathlib import Path
from closedloop.pipelines import compiler
for out in sys.argv[1:]:
    root = Path(out)
    for folder in compiler.component_modules():
        (root / "components" / folder).mkdir(parents=True, exist_ok=True)
    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    compiler.compile_all(root / "components", root / "pipelines")
"""


def _compile(outs: list[Path], image: str | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k != images.COMPONENT_IMAGE_ENV}
    if image is not None:
        env[images.COMPONENT_IMAGE_ENV] = image
    subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT, *map(str, outs)],
        check=True,
        env=env,
        cwd=outs[0].parent,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Everything compiled twice, by ``compile_all``, with the default image."""
    base = tmp_path_factory.mktemp("compiled")
    first, second = base / "first", base / "second"
    _compile([first, second])
    return first, second


def _without_volatile(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("sdkVersion:"))


def _component_folders() -> list[str]:
    return sorted(
        p.parent.relative_to(COMPONENTS_DIR).as_posix()
        for p in COMPONENTS_DIR.glob("*/*/component.py")
    )


def _documents(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = docs[0]
    platform = docs[1] if len(docs) > 1 else {}
    return spec, platform


@pytest.fixture(scope="module")
def training() -> tuple[dict[str, Any], dict[str, Any]]:
    return _documents(COMPILED_DIR / "training.yaml")


# -- the registry of things to compile ------------------------------------------------
def test_the_compiler_finds_every_component_folder() -> None:
    assert list(compiler.component_modules()) == _component_folders()
    assert set(_component_folders()) >= S3_COMPONENTS


def test_every_registered_pipeline_has_a_committed_yaml() -> None:
    assert {f"{name}.yaml" for name in pipelines()} == {p.name for p in COMPILED_DIR.glob("*.yaml")}


# -- golden comparison ----------------------------------------------------------------
@pytest.mark.parametrize("folder", _component_folders())
def test_committed_component_spec_is_up_to_date(folder: str, compiled: tuple[Path, Path]) -> None:
    fresh = (compiled[0] / "components" / folder / "component.yaml").read_text()
    committed = (COMPONENTS_DIR / folder / "component.yaml").read_text()
    assert _without_volatile(committed) == _without_volatile(fresh), (
        f"components/{folder}/component.yaml is stale: run `closedloop compile`"
    )


@pytest.mark.parametrize("folder", _component_folders())
def test_committed_readme_is_the_generated_one(folder: str, compiled: tuple[Path, Path]) -> None:
    fresh = (compiled[0] / "components" / folder / "README.md").read_text()
    assert (COMPONENTS_DIR / folder / "README.md").read_text() == fresh
    component = compiler.component_modules()[folder]
    assert fresh == compiler.component_readme(folder, component)


@pytest.mark.parametrize("name", sorted(pipelines()))
def test_committed_pipeline_yaml_is_up_to_date(name: str, compiled: tuple[Path, Path]) -> None:
    fresh = (compiled[0] / "pipelines" / "compiled" / f"{name}.yaml").read_text()
    committed = (COMPILED_DIR / f"{name}.yaml").read_text()
    assert _without_volatile(committed) == _without_volatile(fresh), (
        f"pipelines/compiled/{name}.yaml is stale: run `closedloop compile`"
    )


def test_compiling_twice_gives_the_same_bytes(compiled: tuple[Path, Path]) -> None:
    first, second = compiled
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 2 * len(_component_folders()) + len(pipelines())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_volatile_fields_are_only_the_sdk_version() -> None:
    text = (COMPILED_DIR / "training.yaml").read_text()
    assert re.search(r"^sdkVersion: kfp-2\.17\.0$", text, re.MULTILINE)
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", _without_volatile(text))  # no timestamps


# -- the committed YAML loads ---------------------------------------------------------
@pytest.mark.parametrize("folder", _component_folders())
def test_committed_component_spec_loads(folder: str) -> None:
    loaded = kfp_components.load_component_from_file(
        str(COMPONENTS_DIR / folder / "component.yaml")
    )
    python = compiler.component_modules()[folder]
    assert loaded.name == python.name == folder.split("/")[1].replace("_", "-")
    assert set(loaded.component_spec.inputs or {}) == set(python.component_spec.inputs or {})
    assert set(loaded.component_spec.outputs or {}) == set(python.component_spec.outputs or {})
    # Docstring Args: became the input descriptions the KFP UI shows (kfp 2.17 compiles
    # no descriptions for outputs).
    spec, _ = _documents(COMPONENTS_DIR / folder / "component.yaml")
    inputs = spec["root"]["inputDefinitions"]
    for kind in ("parameters", "artifacts"):
        for name, definition in inputs.get(kind, {}).items():
            assert definition.get("description"), f"{folder}: input {name} has no description"


@pytest.mark.parametrize("name", sorted(pipelines()))
def test_committed_pipeline_yaml_loads(name: str) -> None:
    loaded = kfp_components.load_component_from_file(str(COMPILED_DIR / f"{name}.yaml"))
    python = pipelines()[name]
    assert loaded.name == python.name
    assert set(loaded.component_spec.inputs) == set(python.component_spec.inputs)


# -- what the cluster relies on -------------------------------------------------------
def _all_tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of the root DAG and of every sub-DAG, by task name."""
    found = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        found.update(component.get("dag", {}).get("tasks", {}))
    return found


def _kind(task_name: str) -> str:
    return re.sub(r"-\d+$", "", task_name)


def _spec(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return _documents(COMPILED_DIR / f"{name}.yaml")


@pytest.mark.parametrize("name", sorted(pipelines()))
def test_side_effects_are_never_cached(name: str) -> None:
    tasks = _all_tasks(_spec(name)[0])
    for task_name, task in tasks.items():
        caching = task.get("cachingOptions", {}).get("enableCache", False)
        if _kind(task_name) in SIDE_EFFECTS:
            assert caching is False, f"{name}: {task_name} is cached"
        if _kind(task_name) in PURE:
            assert caching is True, f"{name}: {task_name} is not cached"


def test_training_side_effects_are_never_cached(training: tuple) -> None:
    tasks = _all_tasks(training[0])
    for task_name in ("register-model", "promote-model"):
        assert tasks[task_name]["cachingOptions"].get("enableCache", False) is False


@pytest.mark.parametrize("name", sorted(pipelines()))
def test_network_bound_tasks_retry_with_backoff(name: str) -> None:
    tasks = _all_tasks(_spec(name)[0])
    for task_name, task in tasks.items():
        if _kind(task_name) not in NETWORK_BOUND:
            continue
        policy = task.get("retryPolicy")
        assert policy, f"{name}: {task_name} has no retryPolicy"
        assert policy["maxRetryCount"] >= 1
        assert policy["backoffDuration"] and policy["backoffFactor"] > 1


def test_training_network_bound_tasks_retry(training: tuple) -> None:
    tasks = _all_tasks(training[0])
    for task_name in (
        "ingest-data",
        "gate-model",
        "register-model",
        "promote-model",
    ):
        assert tasks[task_name].get("retryPolicy"), task_name
    # A data problem is deterministic: retrying validation only delays the failure.
    assert "retryPolicy" not in tasks["validate-data"]
    assert "retryPolicy" not in tasks["train-model"]


@pytest.mark.parametrize("name", sorted(pipelines()))
def test_s3_credentials_come_from_the_secret(name: str) -> None:
    spec, platform = _spec(name)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = _all_tasks(spec)
    for config in executors.values():
        (secret,) = config["secretAsEnv"]
        assert secret["secretName"] == S3_SECRET
        assert secret["optional"] is False
        assert {(k["secretKey"], k["envVar"]) for k in secret["keyToEnv"]} == {
            ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
            ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        }
        (config_map,) = config["configMapAsEnv"]
        assert config_map["configMapName"] == S3_SETTINGS_CONFIG_MAP
    # Every task that talks to the network gets the credentials, and only those do.
    needs_s3 = {
        task["componentRef"]["name"].replace("comp-", "exec-")
        for task_name, task in tasks.items()
        if "retryPolicy" in task
        or (name in ("training", "retraining") and _kind(task_name) in S3_NO_RETRY)
    }
    assert set(executors) == needs_s3


def test_training_s3_tasks_get_the_secret(training: tuple) -> None:
    executors = training[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for task_name in (
        "ingest-data",
        "validate-data",
        "gate-model",
        "register-model",
        "promote-model",
    ):
        assert f"exec-{task_name}" in executors, task_name
    assert "exec-train-model" not in executors


@pytest.mark.parametrize("name", sorted(pipelines()))
def test_no_credentials_are_written_literally(name: str) -> None:
    spec, _ = _spec(name)
    for executor_name, executor in spec["deploymentSpec"]["executors"].items():
        env = {e["name"] for e in executor["container"].get("env", [])}
        assert not env & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, executor_name
    text = (COMPILED_DIR / f"{name}.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text.split("\n---\n")[0]
    assert not re.search(r"(?i)(secret_key|access_key|password)\s*[:=]\s*['\"]?\w", text)


def test_the_gate_guards_promotion(training: tuple) -> None:
    spec, _ = training
    root_tasks = spec["root"]["dag"]["tasks"]
    assert "promote-model" not in root_tasks
    assert "deploy-model" not in root_tasks
    (condition_name,) = [
        name for name, task in root_tasks.items() if "promote-model" in _sub_dag(spec, task)
    ]
    condition = root_tasks[condition_name]
    assert condition["taskInfo"]["name"] == "gate-passed"
    assert "gate-model" in condition["dependentTasks"]
    expression = condition["triggerPolicy"]["condition"]
    # The condition must test the gate's single ``Output``: kfp 2.17's local runner
    # resolves only ``<task>-Output`` channels in conditions, and silently skips the
    # branch for a named output of a NamedTuple (so nothing would ever be promoted).
    assert re.fullmatch(
        r"inputs\.parameter_values\['pipelinechannel--gate-model-Output'\]\s*==\s*'promote'",
        expression.strip(),
    ), expression
    channel = condition["inputs"]["parameters"]["pipelinechannel--gate-model-Output"]
    assert channel["taskOutputParameter"] == {
        "outputParameterKey": "Output",
        "producerTask": "gate-model",
    }
    guarded = _sub_dag(spec, condition)
    assert set(guarded) >= {"promote-model"}
    if "deploy-model" in guarded:  # deployment follows promotion, inside the same guard
        assert "promote-model" in guarded["deploy-model"].get("dependentTasks", [])
    # register-model runs whatever the gate says; promote only inside the condition.
    assert "register-model" in root_tasks
    assert "triggerPolicy" not in root_tasks["register-model"]


def _sub_dag(spec: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    component = spec["components"][task["componentRef"]["name"]]
    return component.get("dag", {}).get("tasks", {})


def test_candidates_train_in_parallel(training: tuple) -> None:
    spec, _ = training
    loops = [t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 1
    assert "train-candidate" in _sub_dag(spec, loops[0])


def _images(path: Path) -> set[str]:
    spec, _ = _documents(path)
    return {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}


@pytest.mark.parametrize("name", sorted(pipelines()))
def test_every_step_runs_in_the_one_component_image(name: str) -> None:
    assert _images(COMPILED_DIR / f"{name}.yaml") == {images.DEFAULT_COMPONENT_IMAGE}


def test_component_specs_use_the_one_component_image() -> None:
    found = set()
    for folder in _component_folders():
        found |= _images(COMPONENTS_DIR / folder / "component.yaml")
    assert found == {images.DEFAULT_COMPONENT_IMAGE}


def test_the_image_constant_is_the_only_place_to_change_it(tmp_path: Path) -> None:
    other = "registry.example.com/team/closedloop-component:9.9.9"
    _compile([tmp_path / "out"], image=other)
    compiled = tmp_path / "out" / "pipelines" / "compiled"
    for name in pipelines():
        assert _images(compiled / f"{name}.yaml") == {other}
    component = tmp_path / "out" / "components" / "deployment" / "promote_model"
    assert _images(component / "component.yaml") == {other}


# -- the folder layout of the community's convention ----------------------------------
@pytest.mark.parametrize("folder", _component_folders())
def test_component_folder_layout(folder: str) -> None:
    path = COMPONENTS_DIR / folder
    for name in ("component.py", "component.yaml", "README.md", "metadata.yaml"):
        assert (path / name).is_file(), f"{folder} lacks {name}"
    for name in ("test_component_unit.py", "test_component_local.py"):
        assert (path / "tests" / name).is_file(), f"{folder}/tests lacks {name}"
    unit = (path / "tests" / "test_component_unit.py").read_text()
    assert ".python_func(" in unit
    local = (path / "tests" / "test_component_local.py").read_text()
    assert "run_local(" in local and "pytest.mark.slow" in local


@pytest.mark.parametrize("folder", _component_folders())
def test_component_metadata(folder: str) -> None:
    text = (COMPONENTS_DIR / folder / "metadata.yaml").read_text()
    metadata = yaml.safe_load(text)
    required = ["name", "stability", "dependencies", "lastVerified"]
    # The community validator wants the required fields first, in this order.
    assert [k for k in metadata if k in required] == required
    assert set(metadata) <= {*required, "tags", "ci", "links"}
    assert metadata["name"] == folder.split("/")[1]
    assert metadata["stability"] == "alpha"
    assert isinstance(metadata["lastVerified"], dt.datetime)
    assert metadata["lastVerified"].tzinfo is not None
    deps = metadata["dependencies"]
    assert set(deps) <= {"kubeflow", "external_services"}
    assert {"name": "Pipelines", "version": ">=2.17.0"} in deps["kubeflow"]
    services = {s["name"] for s in deps.get("external_services") or []}
    assert services == EXTERNAL_SERVICES.get(folder, set())
    for dependency in [*deps["kubeflow"], *(deps.get("external_services") or [])]:
        assert re.fullmatch(r"(>=|<=|==)?\d+\.\d+\.\d+", dependency["version"]), dependency
    assert metadata["tags"] and all(isinstance(t, str) for t in metadata["tags"])
    assert folder.split("/")[0].replace("_", "-") in metadata["tags"]
    documentation = metadata["links"]["documentation"]
    assert documentation == f"components/{folder}/README.md"
    assert (ROOT / documentation).is_file()
