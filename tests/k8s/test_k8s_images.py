"""Dockerfiles (hadolint and our own rules), .dockerignore, and the image constants.

No Docker engine runs here, so the images are never built in these tests.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from closedloop import images

IMAGES = ("component", "serving", "monitor")


def _dockerfile(k8s: SimpleNamespace, name: str) -> Path:
    return k8s.repo / "images" / name / "Dockerfile"


def _hadolint(k8s: SimpleNamespace, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(k8s.venv_tool("hadolint")), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_every_image_directory_has_a_dockerfile(k8s: SimpleNamespace) -> None:
    found = {p.parent.name for p in (k8s.repo / "images").glob("*/Dockerfile")}
    assert found == set(IMAGES)


@pytest.mark.parametrize("name", IMAGES)
def test_hadolint_is_clean(k8s: SimpleNamespace, name: str) -> None:
    result = _hadolint(k8s, _dockerfile(k8s, name))
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_can_fail(k8s: SimpleNamespace, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nADD . /app\nRUN pip install requests\n")
    result = _hadolint(k8s, bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3020" in result.stdout


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_policy(k8s: SimpleNamespace, name: str) -> None:
    text = _dockerfile(k8s, name).read_text()
    steps = _instructions(text)
    keywords = [keyword for keyword, _ in steps]
    assert "ADD" not in keywords
    for keyword, rest in steps:
        if keyword == "FROM":
            image = rest.split()[0]
            assert re.fullmatch(r"python:3\.12\.\d+-slim-\w+", image), image
        if keyword in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(?i)(password|secret|token|access_key)\s*=", rest), rest
    final_stage = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    users = [rest for keyword, rest in final_stage if keyword == "USER"]
    assert users == ["10001:10001"], "the final stage runs as the numeric non-root user"
    assert any(keyword == "HEALTHCHECK" for keyword, _ in final_stage)
    assert "requirements/" in text and "--constraint" in text, "installs from the lock file"


def test_serving_image_runs_the_wrapper_with_the_model_class(k8s: SimpleNamespace) -> None:
    text = _dockerfile(k8s, "serving").read_text()
    assert "requirements/serving.lock" in text and "'serving'" in text
    assert "MODEL_NAME=closedloop.serving.model.ClosedLoopModel" in text
    # Seldon's wrapper, started through closedloop's launcher (metrics, bind address).
    assert "python -m closedloop.serving.microservice" in text and "--service-type" in text
    assert "EXPOSE 9000 5000 6000" in text


def test_component_and_monitor_images_carry_the_pipelines_extra(k8s: SimpleNamespace) -> None:
    for name in ("component", "monitor"):
        text = _dockerfile(k8s, name).read_text()
        assert "requirements/dev.lock" in text and "'pipelines'" in text
    assert 'ENTRYPOINT ["closedloop"]' in _dockerfile(k8s, "monitor").read_text()


def test_dockerignore_allows_only_the_build_inputs(k8s: SimpleNamespace) -> None:
    lines = [
        line.strip()
        for line in (k8s.repo / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: exclude everything first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for name in IMAGES:
        for keyword, rest in _instructions(_dockerfile(k8s, name).read_text()):
            if keyword == "COPY" and not rest.startswith("--from"):
                copied |= {src.rstrip("/") for src in rest.split()[:-1]}
    assert copied <= allowed, f"COPY sources missing from .dockerignore: {copied - allowed}"
    assert not {".venv", ".git", ".closedloop", "tests"} & allowed


def test_image_constants_and_overrides() -> None:
    assert images.DEFAULT_COMPONENT_IMAGE == "ghcr.io/closedloop/closedloop-component:0.1.0"
    env = {images.SERVING_IMAGE_ENV: " registry.example/serving:7 "}
    assert (
        images.resolve_image(images.SERVING_IMAGE_ENV, "x:1", env) == "registry.example/serving:7"
    )
    assert images.resolve_image(images.SERVING_IMAGE_ENV, "x:1", {}) == "x:1"
    assert images.resolve_image(
        images.SERVING_IMAGE_ENV, "x:1", {images.SERVING_IMAGE_ENV: ""}
    ) == ("x:1")
    with pytest.raises(ValueError, match="whitespace"):
        images.resolve_image(images.SERVING_IMAGE_ENV, "x:1", {images.SERVING_IMAGE_ENV: "a b"})


def test_environment_overrides_reach_the_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setenv(images.COMPONENT_IMAGE_ENV, "registry.example/component:abc")
    try:
        reloaded = importlib.reload(images)
        assert reloaded.COMPONENT_IMAGE == "registry.example/component:abc"
        assert reloaded.SERVING_IMAGE == reloaded.DEFAULT_SERVING_IMAGE
    finally:
        monkeypatch.delenv(images.COMPONENT_IMAGE_ENV)
        importlib.reload(images)
