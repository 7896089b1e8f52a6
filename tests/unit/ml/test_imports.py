"""Modules the model server imports must stay light: no pandera, matplotlib, alibi, kfp."""

import subprocess
import sys

SERVER_MODULES = (
    "closedloop.ml",
    "closedloop.ml.schema",
    "closedloop.ml.cleaning_rules",
    "closedloop.ml.features",
    "closedloop.ml.train",
    "closedloop.ml.explain",
    "closedloop.data",
    "closedloop.drift.detector",
)
HEAVY = ("pandera", "matplotlib", "alibi_detect", "kfp", "torch", "tensorflow")


def test_server_side_modules_import_no_heavy_dependency():
    code = (
        "import importlib, sys\n"
        f"for name in {SERVER_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == ""
