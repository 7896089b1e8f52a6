"""Run a registered pipeline on this machine with ``kfp.local``, with progress.

``kfp.local`` prints every task's full log to stdout. Here that stream goes to a log
file instead, and is read as it is written: task starts and ends become
:class:`TaskEvent` callbacks (the CLI draws progress from them), and when a task fails
the last exception line of its log becomes the error message, so a user sees
"data validation failed for s3://…: column 'amount' …" rather than a traceback.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from closedloop.errors import ClosedLoopError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_SKIP = re.compile(r"Skipping conditional task (\S+)")
_EXC = re.compile(r"^\s*((?:[A-Za-z_][\w.]*)?(?:Error|Exception|Exit)): (.+)$")

TaskStatus = Literal["started", "succeeded", "failed", "skipped"]


class PipelineRunError(ClosedLoopError):
    """A local pipeline run failed; the message names the task and its error."""


@dataclass(frozen=True)
class TaskEvent:
    """A task started, ended or was skipped."""

    task: str
    status: TaskStatus
    at: float


@dataclass
class PipelineRun:
    """What a finished local run produced.

    Attributes:
        pipeline: The pipeline's registered name.
        root: Where its artifacts went.
        log_file: The run's full log.
        outputs: The pipeline's outputs by name: parameters as values, artifacts as
            ``dsl`` artifacts (``.path``, ``.metadata``); empty if it returns none.
        events: Every task start, end and skip, in order.
    """

    pipeline: str
    root: Path
    log_file: Path
    outputs: dict[str, Any] = field(default_factory=dict)
    events: list[TaskEvent] = field(default_factory=list)

    @property
    def tasks_succeeded(self) -> list[str]:
        """Names of the tasks that succeeded, in order."""
        return [e.task for e in self.events if e.status == "succeeded"]


class _LogTap(io.TextIOBase):
    """A text stream that writes to a file and reports task events line by line."""

    def __init__(self, path: Path, on_event: Callable[[TaskEvent], None]) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._on_event = on_event
        self._partial = ""
        self.last_error: str | None = None
        self.failed_task: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._file.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._scan(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        super().close()  # flushes through self.flush() while the file is still open
        self._file.close()

    def _scan(self, line: str) -> None:
        now = time.time()
        if m := _START.search(line):
            if self.failed_task in (None, m.group(1)):
                # A new task, or a retry of the failed one: only its own error counts.
                self.failed_task, self.last_error = None, None
            self._on_event(TaskEvent(m.group(1), "started", now))
        elif m := _END.search(line):
            ok = m.group(2) == "SUCCESS"
            if not ok:
                self.failed_task = m.group(1)
            self._on_event(TaskEvent(m.group(1), "succeeded" if ok else "failed", now))
        elif m := _SKIP.search(line):
            self._on_event(TaskEvent(m.group(1), "skipped", now))
        elif (m := _EXC.match(line)) and self.failed_task is None:
            self.last_error = _error_line(m.group(1), m.group(2))


def _error_line(exception: str, message: str) -> str:
    """A task's error for a person, never with a module path.

    closedloop's own errors are whole sentences, so their message alone; others keep
    their short class name.
    """
    if exception.startswith("closedloop."):
        return message
    return f"{exception.rsplit('.', 1)[-1]}: {message}"


LOCAL_DEFAULTS: Mapping[str, Any] = {"deploy_backend": "local"}
"""Arguments a run on this machine passes unless told otherwise.

The compiled pipelines are for a cluster, so their defaults are a cluster's
(``deploy_backend="kubernetes"``: a run started from the KFP UI rolls the
SeldonDeployment out). A local run serves from local model servers instead.
"""


def with_local_defaults(declared: Iterable[str], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """*arguments* plus each of :data:`LOCAL_DEFAULTS` the pipeline declares and the caller left out."""
    names = set(declared)
    filled = {k: v for k, v in LOCAL_DEFAULTS.items() if k in names and k not in arguments}
    return {**filled, **arguments}


def run_pipeline(
    name: str,
    arguments: Mapping[str, Any],
    workdir: str | Path,
    on_event: Callable[[TaskEvent], None] | None = None,
) -> PipelineRun:
    """Run the pipeline registered as *name* with ``kfp.local.SubprocessRunner``.

    Tasks run in this environment (the package and its dependencies are installed
    here, as in the component image), with this process's environment — which is how
    local runs get their S3 settings.

    Args:
        name: A name from :mod:`closedloop.pipelines.registry`.
        arguments: Pipeline parameters.
        workdir: Where the run's artifacts (``pipeline_root``) and log go.
        on_event: Called for every task start, end and skip.

    Raises:
        PipelineRunError: A task failed; the message carries its error line and the log path.
    """
    from kfp import local

    from closedloop.pipelines.registry import get

    pipeline = get(name)
    root = Path(workdir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    log_file = root / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    run = PipelineRun(pipeline=name, root=root, log_file=log_file)

    real_out, real_err = sys.stdout, sys.stderr

    def record(event: TaskEvent) -> None:
        run.events.append(event)
        if on_event is not None:
            # The run's output goes to its log; progress goes where the caller's did.
            with contextlib.redirect_stdout(real_out), contextlib.redirect_stderr(real_err):
                on_event(event)

    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True
    )
    tap = _LogTap(log_file, record)
    try:
        with contextlib.redirect_stdout(tap), contextlib.redirect_stderr(tap):
            spec = getattr(pipeline, "component_spec", None)
            declared = (spec.inputs or {}) if spec is not None else {}
            finished = pipeline(**with_local_defaults(declared, arguments))
            run.outputs = dict(getattr(finished, "outputs", None) or {})
    except Exception as exc:
        task = tap.failed_task or "the pipeline"
        cause = tap.last_error or f"{type(exc).__name__}: {exc}"
        raise PipelineRunError(f"{name}: {task} failed: {cause} (full log: {log_file})") from exc
    finally:
        tap.close()
    return run
