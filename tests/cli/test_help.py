"""Every ``--help`` text is whole: rich markup must not eat a ``[default: …]`` from a sentence."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from closedloop.cli.main import app

COMMAND = typer.main.get_command(app)


def _paths(
    command: typer.core.TyperCommand | typer.core.TyperGroup, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    paths = [prefix]
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            paths += _paths(sub, (*prefix, name))
    return paths


@pytest.mark.parametrize("path", _paths(COMMAND), ids=lambda p: " ".join(p) or "closedloop")
def test_help_sentences_keep_their_words(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    # "KFP API endpoint ." is what is left when markup swallows "[default: $X]".
    lost = re.findall(r"\w \.(?=\s|│|$)", result.output)
    assert not lost, f"{' '.join(path)} --help lost words before a full stop:\n{result.output}"
