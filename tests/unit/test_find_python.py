"""The Python 3.12 finder, against fake interpreters in a fake PATH and pyenv root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from closedloop.devtools import find_python as fp

SCRIPT = Path(fp.__file__)


def fake_python(path: Path, version: str | None) -> Path:
    """Write an executable that answers like an interpreter of *version* (None: a broken shim)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if version is None:
        body = "#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n"
    else:
        body = f"#!/bin/sh\necho {version}\n"
    path.write_text(body)
    path.chmod(0o755)
    return path


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": str(tmp_path / "bin"), "HOME": str(tmp_path / "home"), **extra}


def test_inactive_pyenv_shim_is_skipped_for_pyenv_version(tmp_path: Path) -> None:
    fake_python(tmp_path / "bin" / "python3.12", None)  # exists on PATH, fails when run
    fake_python(tmp_path / "bin" / "python3", "3.11")
    root = tmp_path / "pyenv"
    fake_python(root / "versions" / "3.12.1" / "bin" / "python", "3.12")
    newest = fake_python(root / "versions" / "3.12.10" / "bin" / "python", "3.12")
    fake_python(root / "versions" / "3.13.0" / "bin" / "python", "3.13")
    found = fp.find_python(env_for(tmp_path, PYENV_ROOT=str(root)))
    assert found == str(newest)  # 3.12.10 sorts above 3.12.1 numerically, not as text


def test_path_interpreter_wins_when_it_is_312(tmp_path: Path) -> None:
    on_path = fake_python(tmp_path / "bin" / "python3", "3.12")
    fake_python(tmp_path / "home" / ".pyenv" / "versions" / "3.12.5" / "bin" / "python", "3.12")
    assert fp.find_python(env_for(tmp_path)) == str(on_path)


def test_home_pyenv_is_searched_without_pyenv_root(tmp_path: Path) -> None:
    fake_python(tmp_path / "bin" / "python3", "3.11")
    target = fake_python(
        tmp_path / "home" / ".pyenv" / "versions" / "3.12.4" / "bin" / "python", "3.12"
    )
    assert fp.find_python(env_for(tmp_path)) == str(target)


def test_forced_interpreter_must_be_312(tmp_path: Path) -> None:
    wrong = fake_python(tmp_path / "x" / "python", "3.11")
    with pytest.raises(fp.PythonNotFoundError, match=r"CLOSEDLOOP_PYTHON=.* is 3\.11"):
        fp.find_python(env_for(tmp_path, CLOSEDLOOP_PYTHON=str(wrong)))
    right = fake_python(tmp_path / "y" / "python", "3.12")
    assert fp.find_python(env_for(tmp_path, CLOSEDLOOP_PYTHON=str(right))) == str(right)


def test_none_found_fails_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp, "SYSTEM_DIRS", ())
    fake_python(tmp_path / "bin" / "python3", "3.11")
    with pytest.raises(fp.PythonNotFoundError, match=r"pyenv install 3\.12"):
        fp.find_python(env_for(tmp_path), extra=())


def test_script_prints_path_or_one_line_error(tmp_path: Path) -> None:
    fake_python(tmp_path / "bin" / "python3", "3.11")
    env = env_for(tmp_path)
    # Run the finder with the real interpreter but a PATH/HOME holding only fakes.
    bad = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True)
    if any(os.path.exists(f"{d}/python3.12") for d in fp.SYSTEM_DIRS):
        pytest.skip("this machine has a system python3.12, so 'none found' cannot be staged")
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: no Python 3.12")
    good_path = fake_python(tmp_path / "bin" / "python3.12", "3.12")
    good = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True)
    assert good.returncode == 0 and good.stdout.strip() == str(good_path)
