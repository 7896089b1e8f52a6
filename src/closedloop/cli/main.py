"""The ``closedloop`` command line."""

from __future__ import annotations

import typer

from closedloop.cli import backtest as backtest_commands
from closedloop.cli import demo as demo_commands
from closedloop.cli import registry as registry_commands
from closedloop.cli import run as run_commands
from closedloop.cli import serve as serve_commands
from closedloop.cli import sidecar as sidecar_commands
from closedloop.cli import submit as submit_commands
from closedloop.cli import trigger as trigger_commands
from closedloop.cli.s3 import app as s3_app

app = typer.Typer(
    name="closedloop",
    help="KFP components, Seldon serving and drift-triggered retraining for tabular models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(s3_app, name="s3")
run_commands.register(app)
serve_commands.register(app)
submit_commands.register(app)
sidecar_commands.register(app)
trigger_commands.register(app)
demo_commands.register(app)
backtest_commands.register(app)
registry_commands.register(app)


@app.command()
def version() -> None:
    """Print the installed closedloop version."""
    from closedloop import __version__

    typer.echo(__version__)
