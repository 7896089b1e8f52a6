"""Lineage on a cluster records the commit an image was built from, not just the version.

``.dockerignore`` keeps ``.git`` out of the build context, so the commit reaches the
image only as the build argument ``CLOSEDLOOP_CODE_VERSION`` (skaffold: the gitCommit
tag; ``make images``: ``git rev-parse``), which ``code_version()`` reads.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from closedloop import __version__
from closedloop.registry import code_version

REPO = Path(__file__).parents[2]
IMAGES = ("component", "serving", "monitor")


@pytest.mark.parametrize("name", IMAGES)
def test_every_image_takes_the_commit_as_a_build_argument(name: str) -> None:
    text = (REPO / "images" / name / "Dockerfile").read_text()
    final_stage = text[text.rindex("\nFROM ") :]
    assert re.search(r"^ARG CLOSEDLOOP_CODE_VERSION=", final_stage, re.M)
    assert re.search(r"^ENV CLOSEDLOOP_CODE_VERSION=\$CLOSEDLOOP_CODE_VERSION", final_stage, re.M)


def test_skaffold_and_make_pass_the_commit() -> None:
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    for artifact in config["build"]["artifacts"]:
        assert artifact["docker"]["buildArgs"]["CLOSEDLOOP_CODE_VERSION"] == "{{.IMAGE_TAG}}"
    images_target = (REPO / "Makefile").read_text().split("\nimages:", 1)[1].split("\n\n", 1)[0]
    assert "--build-arg CLOSEDLOOP_CODE_VERSION=" in images_target


def test_code_version_records_the_build_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOSEDLOOP_CODE_VERSION", "3f2a9c1b7d40")
    assert code_version() == f"{__version__}+3f2a9c1b7d40"
