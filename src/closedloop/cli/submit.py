"""``closedloop submit``: compile a pipeline and start it on a Kubeflow Pipelines cluster."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Annotated

import typer

from closedloop.cli._common import console, one_line_errors
from closedloop.errors import ClosedLoopError


class SubmitError(ClosedLoopError):
    """The run could not be submitted; the message says why and what to check."""


def submit_pipeline(
    pipeline: str,
    host: str,
    arguments: dict[str, object],
    experiment: str,
    run_name: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    cron: str | None = None,
    component_image: str | None = None,
    image_pull_secrets: tuple[str, ...] = (),
    no_cache: bool = False,
) -> tuple[str, str]:
    """Compile *pipeline* and create a run (or, with *cron*, a recurring run) through ``kfp.Client``.

    Args:
        pipeline: A registered pipeline name.
        host: The KFP API endpoint.
        arguments: Typed pipeline arguments.
        experiment: The experiment to file the run under.
        run_name: The run's name, or KFP's.
        namespace: The user namespace in multi-user Kubeflow.
        token: A bearer token.
        cron: A schedule: create a recurring run instead.
        component_image: The image every step runs in (the deployment's; skaffold's tag).
        image_pull_secrets: Secrets the step pods pull images with.
        no_cache: Run every step afresh; otherwise the compiled per-task settings hold
            (steps that read mutable state or have side effects never cache).

    Returns:
        The run (or recurring run) id and its URL in the KFP UI.

    Raises:
        SubmitError: Unreachable host, authentication refused, or the API rejected the run.
    """
    import kfp
    from kfp import compiler
    from kfp_server_api.exceptions import ApiException

    from closedloop.pipelines.package import retarget
    from closedloop.pipelines.registry import get

    func = get(pipeline)
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / f"{pipeline}.yaml"
        compiler.Compiler().compile(func, str(package))
        if component_image or image_pull_secrets or no_cache:
            package = retarget(
                package,
                Path(tmp) / f"{pipeline}-retargeted.yaml",
                component_image=component_image,
                image_pull_secrets=image_pull_secrets,
                no_cache=no_cache,
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # kfp's notice about server versions
                client = kfp.Client(
                    host=host, existing_token=token, namespace=namespace or "kubeflow"
                )
            if cron:
                # Scheduled retraining beside the drift-triggered one: KFP's own scheduler.
                experiment_id = client.create_experiment(
                    experiment, namespace=namespace
                ).experiment_id
                job = client.create_recurring_run(
                    experiment_id,
                    run_name or f"{pipeline}-scheduled",
                    cron_expression=cron,
                    max_concurrency=1,
                    no_catchup=True,
                    params=arguments,
                    pipeline_package_path=str(package),
                )
                return (
                    job.recurring_run_id,
                    f"{host.rstrip('/')}/#/recurringrun/details/{job.recurring_run_id}",
                )
            result = client.create_run_from_pipeline_package(
                str(package),
                arguments=arguments,
                run_name=run_name,
                experiment_name=experiment,
                namespace=namespace,
            )
        except ApiException as exc:
            if exc.status in (401, 403):
                raise SubmitError(
                    f"{host} refused the request ({exc.status} {exc.reason}): pass a valid --token "
                    "(or KF_PIPELINES_TOKEN) with access to the namespace"
                ) from exc
            raise SubmitError(
                f"{host} rejected the run ({exc.status} {exc.reason}): {str(exc.body)[:300]}"
            ) from exc
        except (OSError, ValueError) as exc:
            raise SubmitError(
                f"cannot reach Kubeflow Pipelines at {host}: {exc.__class__.__name__}: {exc}"
            ) from exc
        except Exception as exc:
            # urllib3 wraps connection failures in its own MaxRetryError, not an OSError.
            if exc.__class__.__name__ in ("MaxRetryError", "NewConnectionError", "ProtocolError"):
                raise SubmitError(f"cannot reach Kubeflow Pipelines at {host}: {exc}") from exc
            raise
    run_id = result.run_id
    return run_id, f"{host.rstrip('/')}/#/runs/details/{run_id}"


def register(app: typer.Typer) -> None:
    """Add ``submit`` to *app*."""

    @app.command()
    @one_line_errors
    def submit(
        pipeline: Annotated[
            str, typer.Argument(help="Pipeline name: training, retraining, batch-inference, ….")
        ],
        host: Annotated[
            str | None, typer.Option(help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT).")
        ] = None,
        experiment: Annotated[
            str, typer.Option(help="Experiment to file the run under.")
        ] = "closedloop",
        param: Annotated[
            list[str] | None, typer.Option(help="Pipeline parameter key=value (repeatable).")
        ] = None,
        run_name: Annotated[str | None, typer.Option(help="Run name (default: KFP's).")] = None,
        namespace: Annotated[
            str | None, typer.Option(help="User namespace in multi-user Kubeflow.")
        ] = None,
        token: Annotated[
            str | None,
            typer.Option(help="Bearer token (default: $KF_PIPELINES_TOKEN).", show_default=False),
        ] = None,
        cron: Annotated[
            str | None,
            typer.Option(
                help="Create a recurring run on this schedule instead, e.g. '0 0 3 * * *' (KFP cron has seconds)."
            ),
        ] = None,
        component_image: Annotated[
            str | None,
            typer.Option(
                help="Image every step runs in, e.g. the tag skaffold or `make images` pushed "
                "(default: the compiled closedloop.images.COMPONENT_IMAGE).",
                show_default=False,
            ),
        ] = None,
        image_pull_secret: Annotated[
            list[str] | None,
            typer.Option(help="Secret the step pods pull images with (repeatable)."),
        ] = None,
        cache: Annotated[
            bool,
            typer.Option(
                "--cache/--no-cache",
                help="--no-cache runs every step afresh. --cache keeps the compiled settings: "
                "steps that read data, the champion or the time, and every side effect, never cache.",
            ),
        ] = True,
    ) -> None:
        """Compile a pipeline and start a run (or a recurring run) on Kubeflow Pipelines; print its URL."""
        from closedloop.cli.run import parse_params

        endpoint = host or os.environ.get("KF_PIPELINES_ENDPOINT")
        if not endpoint:
            raise SubmitError("no KFP host: pass --host https://… or set KF_PIPELINES_ENDPOINT")
        arguments = parse_params(pipeline, list(param or []))
        run_id, url = submit_pipeline(
            pipeline,
            endpoint,
            arguments,
            experiment,
            run_name,
            namespace,
            token or os.environ.get("KF_PIPELINES_TOKEN"),
            cron,
            component_image=component_image,
            image_pull_secrets=tuple(image_pull_secret or ()),
            no_cache=not cache,
        )
        what = f"recurring run ({cron})" if cron else "run"
        console.print(f"submitted {pipeline} as {what} {run_id}: {url}")
