"""The model server's modules load in the serving environment without kfp."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import SERVING_PYTHON, serving_environment_or_skip

pytestmark = [pytest.mark.slow, pytest.mark.serving]

CHECK = (
    "import closedloop.serving.model, closedloop.serving.request_logger, sys; "
    "loaded = sorted(m for m in sys.modules if m.startswith('kfp')); "
    "assert not loaded, loaded"
)


def test_serving_modules_never_import_kfp() -> None:
    serving_environment_or_skip()
    done = subprocess.run(
        [str(SERVING_PYTHON), "-c", CHECK], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
