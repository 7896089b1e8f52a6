"""What every command shares: one-line errors and the console."""

from __future__ import annotations

import functools
from collections.abc import Callable

import typer
from rich.console import Console

from closedloop.errors import ClosedLoopError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


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
