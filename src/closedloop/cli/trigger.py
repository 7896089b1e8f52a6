"""``closedloop trigger serve``: the retrain trigger for every sidecar and replica."""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path
from typing import Annotated

import typer

from closedloop import config
from closedloop.cli._common import one_line_errors
from closedloop.cli.sidecar import exit_on_sigterm
from closedloop.images import COMPONENT_IMAGE_ENV

IMAGE_PULL_SECRETS_ENV = "CLOSEDLOOP_IMAGE_PULL_SECRETS"
"""Comma-separated Secret names, the default of ``--image-pull-secret``."""

app = typer.Typer(
    help="Run the retrain trigger (drift CloudEvents in, retraining runs out).",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    """Add the ``trigger`` command group to *root*."""
    root.add_typer(app, name="trigger")


def _pipeline_arguments(values: list[str]) -> dict[str, str]:
    arguments = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: use key=value", param_hint="--pipeline-arg")
        arguments[key] = value
    return arguments


def component_image_of(option: str | None, env: dict[str, str] | None = None) -> str | None:
    """Return the component image of the runs: *option*, else ``$CLOSEDLOOP_COMPONENT_IMAGE``.

    A blank environment variable counts as unset (the Downward API gives ``""`` for a
    missing annotation); ``None`` means "keep the image compiled into the package".

    Raises:
        typer.BadParameter: If the option is blank or either value is no image reference.
    """
    from closedloop.pipelines.package import PackageError, check_component_image

    env = dict(os.environ) if env is None else env
    if option is not None:
        value, hint = option, "--component-image"
    else:
        value, hint = env.get(COMPONENT_IMAGE_ENV) or "", COMPONENT_IMAGE_ENV
        if not value.strip():
            return None
    try:
        return check_component_image(value)
    except PackageError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from exc


def image_pull_secrets_of(
    options: list[str] | None, env: dict[str, str] | None = None
) -> tuple[str, ...]:
    """Return the Secrets step pods pull images with: the options, else ``$CLOSEDLOOP_IMAGE_PULL_SECRETS``.

    The variable holds comma-separated names; blanks around and between them are ignored.

    Raises:
        typer.BadParameter: If a name is not a valid Secret name.
    """
    from closedloop.pipelines.package import PackageError, check_secret_names

    env = dict(os.environ) if env is None else env
    if options:
        names, hint = options, "--image-pull-secret"
    else:
        raw = env.get(IMAGE_PULL_SECRETS_ENV) or ""
        names, hint = [n for n in raw.split(",") if n.strip()], IMAGE_PULL_SECRETS_ENV
    try:
        return check_secret_names(names)
    except PackageError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from exc


@app.command()
@one_line_errors
def serve(
    policy: Annotated[Path, typer.Option(help="Drift policy JSON (see closedloop.drift.policy).")],
    registry_uri: Annotated[
        str, typer.Option(help="Model registry root, passed to the pipeline as registry_uri.")
    ],
    state_uri: Annotated[
        str,
        typer.Option(
            help="Root of the trigger's state and audit trail, e.g. s3://closedloop/trigger."
        ),
    ],
    backend: Annotated[
        str,
        typer.Option(help="Where runs execute: 'kfp' (Kubeflow Pipelines) or 'local' (kfp.local)."),
    ] = "local",
    pipeline: Annotated[
        str,
        typer.Option(
            help="Registered pipeline name; kfp: or a compiled YAML path; local: or module:function."
        ),
    ] = "retraining",
    host: Annotated[str, typer.Option(help="Interface for drift CloudEvents.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port for drift CloudEvents (0: a free one).", min=0, max=65535)
    ] = 8090,
    metrics_host: Annotated[
        str, typer.Option(help="Interface for /healthz and /metrics.")
    ] = "127.0.0.1",
    metrics_port: Annotated[
        int, typer.Option(help="Port for /healthz and /metrics (0: a free one).", min=0, max=65535)
    ] = 9103,
    kfp_host: Annotated[
        str | None, typer.Option(help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT).")
    ] = None,
    experiment: Annotated[
        str, typer.Option(help="KFP experiment of the runs.")
    ] = "closedloop-retraining",
    kfp_namespace: Annotated[
        str | None, typer.Option(help="User namespace in multi-user Kubeflow.")
    ] = None,
    component_image: Annotated[
        str | None,
        typer.Option(
            help="kfp: image every step of a run runs in, e.g. the tag skaffold pushed "
            f"(default: ${COMPONENT_IMAGE_ENV}, else the image compiled into the package).",
            show_default=False,
        ),
    ] = None,
    image_pull_secret: Annotated[
        list[str] | None,
        typer.Option(
            help="kfp: Secret the step pods pull images with (repeatable; default: "
            f"${IMAGE_PULL_SECRETS_ENV}, comma-separated).",
            show_default=False,
        ),
    ] = None,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache/--no-cache",
            help="kfp: --no-cache runs every step afresh. --cache keeps the compiled settings: "
            "steps that read data, the champion or the time, and every side effect, never cache.",
        ),
    ] = True,
    local_root: Annotated[
        Path | None,
        typer.Option(help="Artifacts of kfp.local runs (default: $CLOSEDLOOP_HOME/trigger/runs)."),
    ] = None,
    pipeline_arg: Annotated[
        list[str] | None, typer.Option(help="Fixed pipeline argument key=value (repeatable).")
    ] = None,
    replica_id: Annotated[
        str | None,
        typer.Option(help="Id of this trigger in records (default: $POD_NAME or host name)."),
    ] = None,
    retry_initial_seconds: Annotated[
        float,
        typer.Option(help="First delay before re-submitting to a backend that is down.", min=0.01),
    ] = 1.0,
    retry_max_seconds: Annotated[
        float, typer.Option(help="Largest delay between submission attempts.", min=0.01)
    ] = 60.0,
    reconcile_seconds: Annotated[
        float, typer.Option(help="How often pending and running runs are looked at.", min=0.05)
    ] = 2.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Decide drift alarms against the policy and start retraining runs."""
    from closedloop.cli._local import local_s3_unless_configured
    from closedloop.trigger.app import TriggerOptions, run_trigger
    from closedloop.trigger.service import TriggerSettings

    if backend not in ("kfp", "local"):
        raise typer.BadParameter(f"{backend!r}: use 'kfp' or 'local'", param_hint="--backend")
    image = component_image_of(component_image)
    pull_secrets = image_pull_secrets_of(image_pull_secret)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    local_s3_unless_configured(state_uri, registry_uri)
    settings = TriggerSettings(
        state_uri=state_uri,
        registry_uri=registry_uri,
        replica=replica_id or os.environ.get("POD_NAME") or socket.gethostname(),
        pipeline_arguments=_pipeline_arguments(pipeline_arg or []),
        reconcile_seconds=reconcile_seconds,
        retry_initial_seconds=retry_initial_seconds,
        retry_max_seconds=retry_max_seconds,
    )
    run_trigger(
        TriggerOptions(
            host=host,
            port=port,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            policy_path=policy,
            backend=backend,  # type: ignore[arg-type]
            pipeline=pipeline,
            kfp_host=kfp_host or os.environ.get("KF_PIPELINES_ENDPOINT"),
            experiment=experiment,
            kfp_namespace=kfp_namespace,
            local_root=local_root or config.home() / "trigger" / "runs",
            settings=settings,
            log_level=log_level.lower(),
            component_image=image,
            image_pull_secrets=pull_secrets,
            cache=cache,
        )
    )
