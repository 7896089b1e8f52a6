"""Where local state lives.

``CLOSEDLOOP_HOME`` (default ``./.closedloop``) holds everything local mode keeps
between commands: the SeaweedFS data directory, run outputs and reports.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Return the local state directory (not created)."""
    return Path(os.environ.get("CLOSEDLOOP_HOME", ".closedloop")).absolute()


def local_s3_dir() -> Path:
    """Return the data directory of the local S3 store."""
    return home() / "s3"
