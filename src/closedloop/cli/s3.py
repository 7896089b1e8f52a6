"""``closedloop s3 up|down|status``: the local S3 store (SeaweedFS on loopback)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from closedloop import config
from closedloop.cli._common import console, one_line_errors

app = typer.Typer(help="Run the local S3 store (SeaweedFS on 127.0.0.1).", no_args_is_help=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="SeaweedFS data directory (default: $CLOSEDLOOP_HOME/s3)."),
]


@app.command()
@one_line_errors
def up(
    port: Annotated[
        int | None,
        typer.Option(help="S3 port on 127.0.0.1 (default: a free one).", min=1, max=65535),
    ] = None,
    bucket: Annotated[
        list[str] | None, typer.Option(help="Bucket to create (repeatable) (default: closedloop).")
    ] = None,
    data_dir: DataDir = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for S3 to answer.", min=1)] = 60.0,
) -> None:
    """Start the local S3 store in the background and print how to reach it."""
    from closedloop.local.s3 import DEFAULT_BUCKET, LocalS3

    directory = data_dir or config.local_s3_dir()
    with console.status("starting SeaweedFS…"):
        server = LocalS3(
            directory,
            s3_port=port,
            buckets=tuple(bucket or [DEFAULT_BUCKET]),
            ready_timeout=timeout,
        ).start()
    assert server.state is not None
    console.print(
        f"[green]local S3 up[/] at {server.endpoint} (pid {server.state.pid}, "
        f"buckets: {', '.join(server.state.buckets)}, data: {directory})"
    )
    console.print(f'environment: eval "$(closedloop s3 status --env --data-dir {directory})"')


@app.command()
@one_line_errors
def down(data_dir: DataDir = None) -> None:
    """Stop the local S3 store and every process it started."""
    from closedloop.local.s3 import attach

    server = attach(data_dir or config.local_s3_dir())
    pid = server.state.pid if server.state else None
    server.stop()
    console.print(f"local S3 stopped (pid {pid})")


@app.command()
@one_line_errors
def status(
    data_dir: DataDir = None,
    env: Annotated[bool, typer.Option("--env", help="Print shell exports instead.")] = False,
) -> None:
    """Say whether the local S3 store runs, where, and with which buckets."""
    from closedloop.local.s3 import attach

    server = attach(data_dir or config.local_s3_dir())
    if env:
        for key, value in server.settings().to_env().items():
            typer.echo(f"export {key}={value}")
        return
    assert server.state is not None
    buckets = [b["Name"] for b in server.store().client.list_buckets().get("Buckets", [])]
    console.print(
        f"local S3 running at {server.endpoint} (pid {server.state.pid}); buckets: "
        f"{', '.join(buckets) or 'none'}; data: {server.data_dir}"
    )
