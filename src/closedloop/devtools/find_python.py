"""Find a Python 3.12 interpreter for the project's virtual environments.

Runs as a plain script before any environment exists (``python3 find_python.py``),
so it uses the standard library only. Search order:

1. ``$CLOSEDLOOP_PYTHON`` if set (it must be 3.12, or the search fails);
2. ``python3.12``, ``python3`` and ``python`` on ``PATH``;
3. pyenv's installed versions (``$PYENV_ROOT``, ``pyenv root``, ``~/.pyenv``), newest 3.12.x first;
4. common system locations.

Every candidate is *run* to read its version: a pyenv shim for an inactive version
exists on PATH but fails when run, so existence proves nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

WANTED = (3, 12)
SYSTEM_DIRS = ("/usr/local/bin", "/usr/bin", "/opt/python/bin")
_HINT = (
    "no Python 3.12 interpreter found: install one (e.g. `pyenv install 3.12` or your "
    "distribution's python3.12 package) or set CLOSEDLOOP_PYTHON=/path/to/python3.12"
)


class PythonNotFoundError(RuntimeError):
    """No interpreter of the wanted version was found."""


def interpreter_version(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """Return ``(major, minor)`` of the interpreter at *path*, or None if it does not run."""
    try:
        out = subprocess.run(
            [os.fspath(path), "-c", "import sys; print('{}.{}'.format(*sys.version_info[:2]))"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.fullmatch(r"(\d+)\.(\d+)", out.stdout.strip())
    if out.returncode != 0 or match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def _pyenv_roots(env: dict[str, str]) -> Iterator[Path]:
    if env.get("PYENV_ROOT"):
        yield Path(env["PYENV_ROOT"])
    pyenv = shutil.which("pyenv", path=env.get("PATH", ""))
    if pyenv:
        try:
            root = subprocess.run(
                [pyenv, "root"], capture_output=True, text=True, timeout=20, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            root = ""
        if root:
            yield Path(root)
    home = env.get("HOME")
    if home:
        yield Path(home) / ".pyenv"


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.\-]", name))


def candidates(env: dict[str, str]) -> Iterator[str]:
    """Yield interpreter paths to try, best first (may repeat or not exist)."""
    path = env.get("PATH", "")
    for name in ("python3.12", "python3", "python"):
        found = shutil.which(name, path=path)
        if found:
            yield found
    for root in _pyenv_roots(env):
        versions = root / "versions"
        if not versions.is_dir():
            continue
        prefix = "{}.{}.".format(*WANTED)
        names = sorted(
            (p.name for p in versions.iterdir() if p.name.startswith(prefix)),
            key=_version_key,
            reverse=True,
        )
        for name in names:
            yield str(versions / name / "bin" / "python")
    for base in SYSTEM_DIRS:
        yield f"{base}/python3.12"


def find_python(env: dict[str, str] | None = None, extra: Iterable[str] = ()) -> str:
    """Return the path of a Python 3.12 interpreter.

    Args:
        env: Environment to search (defaults to ``os.environ``).
        extra: Further candidates tried after the built-in ones.

    Raises:
        PythonNotFoundError: With a message saying how to provide one.
    """
    env = dict(os.environ if env is None else env)
    forced = env.get("CLOSEDLOOP_PYTHON")
    if forced:
        version = interpreter_version(forced)
        if version != WANTED:
            got = "does not run" if version is None else "is {}.{}".format(*version)
            raise PythonNotFoundError(
                f"CLOSEDLOOP_PYTHON={forced} {got}; it must point at a Python 3.12 interpreter"
            )
        return forced
    seen: set[str] = set()
    for cand in (*candidates(env), *extra):
        if cand in seen or not os.path.exists(cand):
            continue
        seen.add(cand)
        if interpreter_version(cand) == WANTED:
            return cand
    raise PythonNotFoundError(_HINT)


def main() -> int:
    """Print the interpreter path, or a one-line error on stderr and exit 1."""
    try:
        print(find_python())
    except PythonNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
