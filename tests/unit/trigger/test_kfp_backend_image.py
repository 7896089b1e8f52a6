"""The trigger's KFP runs use the deployment's component image and image pull secrets.

``KfpBackend`` is real, ``kfp.Client`` is real, the compiled ``retraining`` package is
the committed one; only the KFP API server is a stand-in (it cannot run here), and it
judges nothing: it keeps the body of every run created, and the assertions read the
pipeline and platform spec KFP would execute.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from fake_kfp_api import FakeKfp, fake_kfp
from typer.testing import CliRunner

from closedloop import images
from closedloop.trigger.backends import KfpBackend, RunRequest, pipeline_package
from closedloop.trigger.errors import TriggerError

IMAGE = "registry.example/team/closedloop-component:3f2a9c1"
SECRETS = ("regcred", "mirror-cred")


@pytest.fixture()
def kfp_host() -> Iterator[str]:
    with fake_kfp() as host:
        yield host


@pytest.fixture(autouse=True)
def _no_kfp_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)


def _submit(backend: KfpBackend) -> dict[str, Any]:
    """Create one run through *backend* and return the spec the API received."""
    request = RunRequest("retrain-fraud-0001", {"reference_uri": "s3://c/ref.parquet"})
    try:
        assert backend.submit(request) == "run-42"
    finally:
        backend.close()
    (body,) = FakeKfp.runs
    assert body["display_name"] == "retrain-fraud-0001"
    return body["pipeline_spec"]


def _executor_images(spec: dict[str, Any]) -> set[str]:
    executors = spec["pipeline_spec"]["deploymentSpec"]["executors"]
    return {e["container"]["image"] for e in executors.values()}


def _tasks(pipeline: dict[str, Any]) -> list[dict[str, Any]]:
    dags = [pipeline["root"], *pipeline.get("components", {}).values()]
    return [t for dag in dags for t in dag.get("dag", {}).get("tasks", {}).values()]


def test_runs_use_the_configured_component_image_and_pull_secrets(kfp_host: str) -> None:
    backend = KfpBackend(
        kfp_host,
        pipeline_package("retraining"),
        "closedloop-retraining",
        component_image=IMAGE,
        image_pull_secrets=SECRETS,
    )
    spec = _submit(backend)
    assert _executor_images(spec) == {IMAGE}
    executors = spec["pipeline_spec"]["deploymentSpec"]["executors"]
    platform = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(platform) == set(executors), "every step pod carries the pull secrets"
    for name, config in platform.items():
        assert [s["secretName"] for s in config["imagePullSecret"]] == list(SECRETS), name
    # The compiled platform settings (the S3 credentials Secret) survive the retargeting.
    assert "closedloop-s3-credentials" in json.dumps(platform)


def test_without_settings_the_compiled_package_is_submitted_unchanged(kfp_host: str) -> None:
    compiled = pipeline_package("retraining")
    backend = KfpBackend(kfp_host, compiled, "closedloop-retraining")
    assert backend.package == compiled
    spec = _submit(backend)
    executors = next(yaml.safe_load_all(compiled.read_text()))["deploymentSpec"]["executors"]
    compiled_images = {e["container"]["image"] for e in executors.values()}
    assert _executor_images(spec) == compiled_images
    assert "imagePullSecret" not in json.dumps(spec["platform_spec"])
    assert IMAGE not in compiled_images


def test_no_cache_switches_caching_off_in_every_task(kfp_host: str) -> None:
    backend = KfpBackend(
        kfp_host, pipeline_package("retraining"), "closedloop-retraining", cache=False
    )
    spec = _submit(backend)
    tasks = _tasks(spec["pipeline_spec"])
    compiled = _tasks(next(yaml.safe_load_all(pipeline_package("retraining").read_text())))
    assert len(tasks) == len(compiled)
    assert any(t.get("cachingOptions", {}).get("enableCache") for t in compiled)
    # The client drops enableCache=false (the proto default) when it sends the spec.
    assert not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks)


def test_the_retargeted_copy_is_written_once_and_removed_on_close(tmp_path: Path) -> None:
    compiled = pipeline_package("retraining")
    backend = KfpBackend("http://unused", compiled, "e", component_image=IMAGE)
    copy = backend.package
    assert copy != compiled and copy.is_file()
    assert backend.declared_inputs() == KfpBackend("http://unused", compiled, "e").declared_inputs()
    assert compiled.read_text().count(IMAGE) == 0, "the committed package is never modified"
    backend.close()
    assert not copy.exists()
    backend.close()  # idempotent


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"component_image": "registry.example/c omponent:1"}, "is not an image reference"),
        ({"component_image": ""}, "is not an image reference"),
        ({"image_pull_secrets": ("regcred", " ")}, "image pull secret name must not be empty"),
    ],
)
def test_bad_settings_fail_at_start_with_a_clear_message(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TriggerError, match=message):
        KfpBackend("http://unused", pipeline_package("retraining"), "e", **kwargs)


def test_a_file_that_is_not_a_compiled_pipeline_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.yaml"
    bogus.write_text("kind: ConfigMap\n")
    with pytest.raises(TriggerError, match="not a compiled KFP v2 pipeline"):
        KfpBackend("http://unused", bogus, "e", component_image=IMAGE)


# -- the CLI: options, then environment -------------------------------------------------
SERVE = [
    "trigger", "serve", "--backend", "kfp", "--kfp-host", "http://unused",
    "--registry-uri", "s3://closedloop/registry", "--state-uri", "s3://closedloop/trigger",
]  # fmt: skip


def _serve_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str], env: dict[str, str]
) -> Any:
    """Run ``closedloop trigger serve`` up to the point it would serve; return its options."""
    import closedloop.trigger.app as trigger_app
    from closedloop.cli import trigger

    captured: list[Any] = []
    monkeypatch.setattr(trigger_app, "run_trigger", captured.append)
    for name in (images.COMPONENT_IMAGE_ENV, trigger.IMAGE_PULL_SECRETS_ENV):
        monkeypatch.delenv(name, raising=False)
    root = typer.Typer()
    trigger.register(root)
    policy = tmp_path / "policy.json"
    policy.write_text("{}")
    result = CliRunner().invoke(
        root,
        [*SERVE, "--policy", str(policy), *args],
        env={"CLOSEDLOOP_S3_ENDPOINT": "http://s3.invalid", **env},
    )
    return result, (captured[0] if captured else None)


def test_cli_options_reach_the_trigger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    args = ["--component-image", IMAGE, "--image-pull-secret", "regcred", "--no-cache"]
    args += ["--image-pull-secret", "mirror-cred"]
    env = {images.COMPONENT_IMAGE_ENV: "ignored:1", "CLOSEDLOOP_IMAGE_PULL_SECRETS": "ignored"}
    result, options = _serve_options(monkeypatch, tmp_path, args, env)
    assert result.exit_code == 0, result.output
    assert options.component_image == IMAGE
    assert options.image_pull_secrets == SECRETS
    assert options.cache is False


def test_cli_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        images.COMPONENT_IMAGE_ENV: f" {IMAGE} ",
        "CLOSEDLOOP_IMAGE_PULL_SECRETS": "regcred, mirror-cred,,",
    }
    result, options = _serve_options(monkeypatch, tmp_path, [], env)
    assert result.exit_code == 0, result.output
    assert options.component_image == IMAGE
    assert options.image_pull_secrets == SECRETS
    assert options.cache is True


def test_cli_without_settings_keeps_the_compiled_image(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The Downward API gives "" when the pod has no `image` annotation.
    result, options = _serve_options(
        monkeypatch,
        tmp_path,
        [],
        {images.COMPONENT_IMAGE_ENV: "", "CLOSEDLOOP_IMAGE_PULL_SECRETS": ""},
    )
    assert result.exit_code == 0, result.output
    assert options.component_image is None and options.image_pull_secrets == ()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--image-pull-secret", "Reg_Cred"], {}, "is not a Secret name"),
        ([], {"CLOSEDLOOP_IMAGE_PULL_SECRETS": "regcred,bad name"}, "is not a Secret name"),
        (["--component-image", " "], {}, "is not an image reference"),
        ([], {images.COMPONENT_IMAGE_ENV: "a b:1"}, "is not an image reference"),
    ],
)
def test_cli_rejects_bad_names(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    result, options = _serve_options(monkeypatch, tmp_path, args, env)
    assert result.exit_code == 2 and options is None
    # typer draws the error in a box: join its wrapped lines before looking.
    assert message in " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
