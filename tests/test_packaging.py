"""One distribution, one import root: the built wheel, installed outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def packages_on_disk() -> set[str]:
    """Every folder holding an __init__.py, named as the package-dir mapping names it."""
    found: set[str] = set()
    for name, folder in SETUPTOOLS["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "tests" in rel.parts:
                continue
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    return found


def test_package_list_matches_the_folders() -> None:
    assert set(SETUPTOOLS["packages"]) == packages_on_disk()
    assert all(p == "closedloop" or p.startswith("closedloop.") for p in SETUPTOOLS["packages"])


@pytest.mark.slow
def test_built_wheel_imports_from_outside_the_repository(tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("closedloop-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {n.split("/", 1)[0] for n in zf.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"closedloop"}
    venv = tmp_path / "venv"
    uv = str(bindir / "uv")
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    py = str(venv / "bin" / "python")
    lock = ROOT / "requirements" / "dev.lock"
    subprocess.run([uv, "pip", "sync", "--quiet", "--python", py, str(lock)], check=True)
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", py, "--no-deps", str(wheel)], check=True
    )
    probe = (
        "import importlib.util as u, closedloop, closedloop.components, closedloop.pipelines, "
        "closedloop.storage, closedloop.cli.main\n"
        "assert u.find_spec('components') is None and u.find_spec('pipelines') is None\n"
        "print(closedloop.__file__)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    out = subprocess.run(
        [py, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.stdout.strip().startswith(str(venv))
    cli = subprocess.run(
        [str(venv / "bin" / "closedloop"), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert cli.returncode == 0 and "s3" in cli.stdout
