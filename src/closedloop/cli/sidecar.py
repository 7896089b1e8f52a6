"""``closedloop sidecar serve``: the drift-detector sidecar beside a model server."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Annotated

import typer

from closedloop import config
from closedloop.cli._common import one_line_errors
from closedloop.serving.parameters import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_ROWS

app = typer.Typer(
    help="Run the drift-detector sidecar (request-logger CloudEvents in, drift events out).",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    """Add the ``sidecar`` command group to *root*."""
    root.add_typer(app, name="sidecar")


def default_replica(state_dir: Path) -> str:
    """``$POD_NAME`` in a pod; locally the host name plus a hash of the state directory."""
    pod = os.environ.get("POD_NAME")
    if pod:
        return pod
    digest = hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{digest}"


def exit_on_sigterm(signum: int, _frame: object) -> None:
    """Turn SIGTERM outside the server (start-up, or re-raised after a drain) into exit 0."""
    raise SystemExit(0)


@app.command()
@one_line_errors
def serve(
    registry_uri: Annotated[
        str, typer.Option(help="Model registry root, e.g. s3://closedloop/registry.")
    ],
    model_name: Annotated[str, typer.Option(help="Registered model name.")],
    policy: Annotated[Path, typer.Option(help="Drift policy JSON (see closedloop.drift.policy).")],
    model_version: Annotated[
        str, typer.Option(help="Version to watch: v<N>, or 'champion' (resolved at start-up).")
    ] = "champion",
    host: Annotated[
        str, typer.Option(help="Interface for request-logger CloudEvents.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port for CloudEvents (0: a free one).", min=0, max=65535)
    ] = 8080,
    metrics_host: Annotated[
        str, typer.Option(help="Interface for /healthz and /metrics.")
    ] = "127.0.0.1",
    metrics_port: Annotated[
        int, typer.Option(help="Port for /healthz and /metrics (0: a free one).", min=0, max=65535)
    ] = 9102,
    trigger_url: Annotated[
        str, typer.Option(help="Where drift CloudEvents go (the retrain trigger).")
    ] = "http://127.0.0.1:8090/",
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoints, journal and outbox (default: $CLOSEDLOOP_HOME/sidecar/<model>)."
        ),
    ] = None,
    archive_uri: Annotated[
        str | None,
        typer.Option(
            help="Root of the labelled-feedback archive (default: s3://<registry bucket>/feedback)."
        ),
    ] = None,
    replica_id: Annotated[
        str | None,
        typer.Option(
            help="Id of this sidecar in alarm ids (default: $POD_NAME, or host + state dir)."
        ),
    ] = None,
    checkpoint_interval: Annotated[
        float,
        typer.Option(help="Seconds between checkpoints (bounds the journal replay).", min=0.1),
    ] = 10.0,
    dedupe_size: Annotated[int, typer.Option(help="(source, id) keys remembered.", min=1)] = 20_000,
    archive_batch_rows: Annotated[
        int, typer.Option(help="Feedback rows per archive file.", min=1)
    ] = 1000,
    archive_flush_seconds: Annotated[
        float, typer.Option(help="Longest a feedback row waits for its file.", min=0.1)
    ] = 60.0,
    emit_backoff_max: Annotated[
        float, typer.Option(help="Longest delay between drift-event delivery attempts.", min=0.1)
    ] = 30.0,
    max_rows: Annotated[
        int, typer.Option(help="The model server's max_rows: most rows of one message.", min=1)
    ] = DEFAULT_MAX_ROWS,
    max_request_bytes: Annotated[
        int,
        typer.Option(help="The model server's max_request_bytes: larger bodies are 413.", min=1),
    ] = DEFAULT_MAX_REQUEST_BYTES,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Watch a served model version's traffic for drift and alarm the retrain trigger."""
    from closedloop.cli._local import local_s3_unless_configured
    from closedloop.drift.sidecar.app import SidecarOptions, run_sidecar
    from closedloop.drift.sidecar.archive import default_archive_uri
    from closedloop.drift.sidecar.monitor import MonitorSettings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    local_s3_unless_configured(registry_uri, archive_uri or "")
    directory = state_dir or config.home() / "sidecar" / model_name
    settings = MonitorSettings(
        replica=replica_id or default_replica(directory),
        state_dir=directory,
        trigger_url=trigger_url,
        archive_uri=archive_uri or default_archive_uri(registry_uri),
        checkpoint_interval=checkpoint_interval,
        dedupe_capacity=dedupe_size,
        archive_batch_rows=archive_batch_rows,
        archive_flush_seconds=archive_flush_seconds,
        emit_backoff_max=emit_backoff_max,
        max_rows=max_rows,
    )
    run_sidecar(
        SidecarOptions(
            host=host,
            port=port,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            registry_uri=registry_uri,
            model_name=model_name,
            model_version=model_version,
            policy_path=policy,
            monitor=settings,
            log_level=log_level.lower(),
            max_request_bytes=max_request_bytes,
        )
    )
