"""What every command shares: one-line errors and the console."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import typer
from rich.console import Console

from closedloop.errors import ClosedLoopError

# Bound to the real streams now: local pipeline runs redirect sys.stdout/sys.stderr into
# their log file, and progress must still reach the terminal.
console = Console(soft_wrap=True, file=sys.stdout)
err_console = Console(soft_wrap=True, file=sys.stderr)


def one_line_errors[**P, R](func: Callable[P, R]) -> Callable[P, R]:
    """Print a :class:`ClosedLoopError` as ``error: …`` on stderr and exit 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ClosedLoopError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from exc

    return wrapper
