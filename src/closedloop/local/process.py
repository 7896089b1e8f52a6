"""Run a long-lived local service (sidecar, trigger) as a supervised process group."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from closedloop.errors import ClosedLoopError
from closedloop.local.s3 import terminate_group


class ServiceError(ClosedLoopError):
    """A local service did not start or become healthy."""


class Service:
    """A ``closedloop …`` command in a process group of its own, with a log file.

    Args:
        name: Shown in errors.
        args: Arguments after ``closedloop``.
        log_file: Where its output goes.
        health_url: Polled until it answers 200.
        env: Extra environment variables.
        ready_timeout: Seconds to wait for health.
        stop_timeout: Seconds between SIGTERM and SIGKILL.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_file: Path,
        health_url: str,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 90.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_file = log_file
        self.health_url = health_url
        self.env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        """Start and wait until healthy; on failure stop it and raise with the log's tail."""
        import requests

        cli = Path(sys.executable).with_name("closedloop")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(cli), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if requests.get(self.health_url, timeout=1).status_code == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        code = self._proc.poll()
        self.stop()
        tail = " | ".join(self.log_file.read_text(errors="replace").strip().splitlines()[-3:])
        what = (
            f"exited with code {code}"
            if code is not None
            else f"not healthy within {self.ready_timeout:.0f}s"
        )
        raise ServiceError(f"{self.name} {what}: {tail} (log: {self.log_file})")

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the group (so it can checkpoint), bounded wait, then SIGKILL."""
        if self._proc is None:
            return
        terminate_group(self._proc.pid, self.stop_timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        self._proc = None
