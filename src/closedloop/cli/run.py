"""``closedloop compile``, ``closedloop run <pipeline>`` and ``closedloop data generate``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from closedloop import config
from closedloop.cli._common import console, err_console, one_line_errors
from closedloop.pipelines.params import ParameterError

data_app = typer.Typer(help="Generate demo data.", no_args_is_help=True)


def pipeline_parameters(name: str) -> dict[str, tuple[str, Any]]:
    """Return the pipeline's parameters: name -> (KFP type, default or None if required)."""
    from closedloop.pipelines.registry import get

    spec = get(name).component_spec
    return {
        key: (value.type, value.default if value.optional else None)
        for key, value in (spec.inputs or {}).items()
    }


def parse_params(name: str, pairs: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` strings into typed pipeline arguments."""
    from closedloop.pipelines.params import ParameterError, coerce, types_of_function
    from closedloop.pipelines.registry import get

    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ParameterError(f"--param {pair!r}: write it as key=value")
        raw[key] = value
    return coerce(raw, types_of_function(get(name)), f"pipeline {name!r}")


def register(app: typer.Typer) -> None:
    """Add ``compile``, ``run`` and ``data`` to *app*."""
    app.add_typer(data_app, name="data")

    @app.command("compile")
    @one_line_errors
    def compile_command() -> None:
        """Write every component spec (component.yaml + README) and pipeline YAML."""
        from closedloop.pipelines.compiler import compile_all

        paths = compile_all()
        console.print(
            f"wrote {len(paths)} files (components/*/*/component.yaml, pipelines/compiled/*.yaml)"
        )

    @app.command("run")
    @one_line_errors
    def run_command(
        pipeline: Annotated[
            str, typer.Argument(help="Pipeline name: training, feature-ablation, ….")
        ],
        data: Annotated[str, typer.Option("--data", help="Input data URI (s3:// or local path).")],
        target: Annotated[str | None, typer.Option(help="Label column.")] = None,
        model_name: Annotated[str | None, typer.Option(help="Registered model name.")] = None,
        registry_uri: Annotated[str | None, typer.Option(help="Model registry URI.")] = None,
        param: Annotated[
            list[str] | None,
            typer.Option(help="Further pipeline parameter key=value (repeatable)."),
        ] = None,
        workdir: Annotated[
            Path | None,
            typer.Option(help="Where run artifacts go (default: $CLOSEDLOOP_HOME/runs)."),
        ] = None,
    ) -> None:
        """Run a pipeline locally with kfp.local against the local S3 store, with progress."""
        from closedloop.local.pipelines import TaskEvent, run_pipeline

        known = pipeline_parameters(pipeline)
        arguments = parse_params(pipeline, list(param or []))
        for key, value in (
            ("data_uri", data),
            ("target", target),
            ("model_name", model_name),
            ("registry_uri", registry_uri),
        ):
            if value is not None:
                if key not in known:
                    raise ParameterError(f"pipeline {pipeline!r} takes no {key.replace('_', '-')}")
                arguments[key] = value
        ensure_s3 = any(str(v).startswith("s3://") for v in arguments.values()) or any(
            str(d).startswith("s3://") for _, d in known.values() if d is not None
        )
        if ensure_s3:
            from closedloop.cli._local import ensure_local_s3

            ensure_local_s3()
        done: list[str] = []
        failed: set[str] = set()
        started = time.monotonic()
        started_at = time.time()
        with err_console.status(f"{pipeline}: starting…") as status:

            def show(event: TaskEvent) -> None:
                elapsed = time.monotonic() - started
                if event.status == "started":
                    if event.task in failed:
                        err_console.print(f"  [yellow]↻[/] {event.task} again (retry)")
                    status.update(
                        f"{pipeline}: running {event.task} ({len(done)} done, {elapsed:.0f}s)"
                    )
                elif event.status == "succeeded":
                    done.append(event.task)
                    err_console.print(f"  [green]✓[/] {event.task}  [dim]{elapsed:.0f}s[/]")
                elif event.status == "skipped":
                    err_console.print(f"  [yellow]-[/] {event.task} skipped (condition false)")
                else:
                    failed.add(event.task)
                    err_console.print(f"  [red]✗[/] {event.task}  [dim]{elapsed:.0f}s[/]")
                    # Network-bound steps are retried after a backoff (set_retry).
                    status.update(
                        f"{pipeline}: {event.task} failed; retried if it has retries left"
                    )

            run = run_pipeline(
                pipeline, arguments, workdir or config.home() / "runs", on_event=show
            )
        console.print(
            f"[green]{pipeline} finished[/] in {time.monotonic() - started:.0f}s; log: {run.log_file}"
        )
        defaults = {k: d for k, (_, d) in known.items() if d is not None}
        _print_outcome(pipeline, {**defaults, **arguments}, run.root, started_at)
        _print_predictions(run.outputs)

    @data_app.command("generate")
    @one_line_errors
    def generate_command(
        out: Annotated[
            str,
            typer.Option(
                "--out", help="Where to write: s3://… or a local path (.csv or .parquet)."
            ),
        ],
        rows: Annotated[int, typer.Option(min=1, help="Number of rows.")] = 200_000,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        covariate_shift: Annotated[
            float, typer.Option(min=0.0, max=1.0, help="Move the channel mix and amounts.")
        ] = 0.0,
        concept_drift: Annotated[
            float, typer.Option(min=0.0, max=1.0, help="Change the fraud pattern.")
        ] = 0.0,
        dirty: Annotated[
            float,
            typer.Option(
                min=0.0, max=1.0, help="Inject missing values, duplicates, outliers, mixed dates."
            ),
        ] = 0.0,
        start: Annotated[str, typer.Option(help="First transaction date.")] = "2026-01-01",
    ) -> None:
        """Generate seeded card transactions with a fraud label (and optional drift)."""
        import tempfile

        from closedloop.data.generate import generate_transactions
        from closedloop.storage import Store

        if out.startswith("s3://"):
            from closedloop.cli._local import ensure_local_s3

            ensure_local_s3()
        frame = generate_transactions(
            rows,
            seed=seed,
            covariate_shift=covariate_shift,
            concept_drift=concept_drift,
            start=start,
            dirty=dirty,
        )
        suffix = ".csv" if out.endswith(".csv") else ".parquet"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"data{suffix}"
            frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(
                path, index=False
            )
            Store().publish(out, path=str(path))
        console.print(f"wrote {len(frame)} rows to {out}")


def _print_predictions(outputs: dict[str, Any]) -> None:
    """Say where a batch-inference run put its predictions, with the rows scored and refused."""
    from closedloop.ml.batch import REFUSED_COLUMN

    predictions = outputs.get("predictions")
    if predictions is None or "predictions_uri" not in outputs:
        return
    metadata = predictions.metadata
    # KFP keeps metadata as JSON numbers: counts come back as floats.
    scored, refused = int(metadata["scored_rows"]), int(metadata["refused_rows"])
    where = outputs["predictions_uri"] or f"{predictions.path} (not published: output_uri is empty)"
    console.print(
        f"predictions of {metadata.get('model_version', '?')}: {where}\n"
        f"  {scored} rows scored, {refused} refused"
    )
    if refused:
        console.print(
            f"  why: the {REFUSED_COLUMN!r} column of each refused row, and the "
            "validate-batch report above"
        )


def _print_outcome(pipeline: str, arguments: dict[str, Any], root: Path, started_at: float) -> None:
    """Say which version was registered, whether it was promoted, and where the reports are."""
    names = {"report", "chart", "verdict", "comparison", "leaderboard", "record", "summary"}
    for path in sorted(root.rglob("*")):
        # Only this run's reports: kfp.local keeps every earlier run under the same root.
        if path.is_file() and path.name in names and path.stat().st_mtime >= started_at:
            console.print(f"  report {path.parent.name}/{path.name}: {path}")
    registry_uri, model_name = arguments.get("registry_uri"), arguments.get("model_name")
    if pipeline not in ("training", "retraining") or registry_uri is None or model_name is None:
        return
    from closedloop.registry import Registry
    from closedloop.storage import Store

    registry = Registry(Store(), str(registry_uri))
    versions = registry.versions(str(model_name))
    champion = registry.champion(str(model_name))
    if versions:
        manifest = registry.manifest(str(model_name), versions[-1])
        gate = manifest.lineage.parameters.get("gate_reason", "")
        console.print(f"registered [bold]{model_name} {versions[-1]}[/] in {registry_uri}")
        console.print(f"gate: {gate}")
    if champion is not None:
        console.print(f"champion: {champion.version} ({champion.reason})")
    else:
        err_console.print("no champion: the gate has not accepted any version yet")
