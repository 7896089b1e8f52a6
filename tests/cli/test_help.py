"""Every ``--help`` text is whole: rich markup must not eat a ``[default: …]`` from a sentence.

Each command of the app, groups walked recursively, is rendered with ``--help``; every
option and argument must have help, and that help must appear in the rendering word
for word. A last test shows the check catches the two defects reported ("Where
everything goes ." and "KFP API endpoint .") on a small app written the old way.
"""

from __future__ import annotations

import re
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from closedloop.cli.main import app

COMMAND = typer.main.get_command(app)
# The frame rich draws around options; what is left is the text, in reading order.
_BOX = re.compile(r"[│╭╮╰╯─]")


Command = typer.core.TyperCommand | typer.core.TyperGroup


def _paths(command: Command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths += _paths(sub, (*prefix, name))
    return paths


def _command(root: Command, path: tuple[str, ...]) -> Command:
    command = root
    for name in path:
        command = command.commands[name]  # type: ignore[union-attr]
    return command


def _words(text: str) -> str:
    return " ".join(text.split())


def help_problems(application: typer.Typer, path: tuple[str, ...]) -> list[str]:
    """What is wrong with the ``--help`` of *path*: missing help, words lost on the way."""
    command = _command(typer.main.get_command(application), path)
    # Wide enough that no cell wraps in the middle of another column's text.
    result = CliRunner().invoke(application, [*path, "--help"], env={"COLUMNS": "1000"})
    if result.exit_code != 0:
        return [f"--help failed: {result.output}"]
    rendered = _words(_BOX.sub(" ", result.output))
    # "KFP API endpoint ." is what is left when markup swallows "[default: $X]" (a lone
    # full stop; ".csv or .parquet" is fine).
    lost = re.findall(r"\S+ \.(?=\s|$)", rendered)
    problems = [f"lost a word before a full stop: {m!r}" for m in lost]
    if not (command.help or "").strip():
        problems.append("the command has no help")
    for param in command.params:
        text = (getattr(param, "help", None) or "").strip()
        if not text:
            problems.append(f"{param.name} has no help")
        elif _words(text) not in rendered:
            problems.append(f"{param.name}: {text!r} is not shown whole")
    return problems


@pytest.mark.parametrize("path", _paths(COMMAND), ids=lambda p: " ".join(p) or "closedloop")
def test_help_sentences_keep_their_words(path: tuple[str, ...]) -> None:
    assert help_problems(app, path) == []


def test_the_check_catches_a_default_eaten_by_markup() -> None:
    old = typer.Typer(add_completion=False)

    @old.command()
    def demo(
        workdir: Annotated[
            str | None,
            typer.Option(help="Where everything goes [default: $CLOSEDLOOP_HOME/demo-<time>]."),
        ] = None,
        host: Annotated[
            str | None, typer.Option(help="KFP API endpoint [default: $KF_PIPELINES_ENDPOINT].")
        ] = None,
        seed: Annotated[int, typer.Option()] = 0,
    ) -> None:
        """Run the demo."""

    problems = help_problems(old, ())
    assert "lost a word before a full stop: 'goes .'" in problems
    assert "lost a word before a full stop: 'endpoint .'" in problems
    assert any(p.startswith("workdir:") for p in problems)
    assert any(p.startswith("host:") for p in problems)
    assert "seed has no help" in problems
