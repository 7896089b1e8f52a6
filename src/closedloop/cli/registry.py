"""``closedloop registry``: inspect, roll back and clean up the model registry by hand."""

from __future__ import annotations

import getpass
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from closedloop.cli._common import console, one_line_errors
from closedloop.cli.serve import DEFAULT_MODEL, DEFAULT_REGISTRY

if TYPE_CHECKING:
    from rich.table import Table

    from closedloop.registry import ChampionPointer, Registry, VersionStatus

app = typer.Typer(
    help="Operate the model registry: list versions, show one, see or roll back the "
    "champion, remove incomplete registrations.",
    no_args_is_help=True,
)

NONE = "—"  # what was never recorded

RegistryOption = Annotated[
    str,
    typer.Option(
        "--registry",
        "--registry-uri",
        help="Registry root: s3://bucket/prefix or a local directory. S3 is reached through "
        "CLOSEDLOOP_S3_ENDPOINT and AWS credentials when set, else the local store is used "
        "(started for the command if it is not running).",
    ),
]
ModelOption = Annotated[str, typer.Option("--model", "--model-name", help="Registered model name.")]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print JSON for scripts instead of the human-readable output."),
]


def register(root: typer.Typer) -> None:
    """Add the ``registry`` command group to *root*."""
    root.add_typer(app, name="registry")


@contextmanager
def _open(registry_uri: str) -> Iterator[Registry]:
    from closedloop.cli._local import s3_settings_for
    from closedloop.registry import Registry
    from closedloop.storage import Store

    with s3_settings_for(registry_uri) as settings:
        yield Registry(Store(settings), registry_uri)


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


# -- formatting -------------------------------------------------------------------------
def _utc(ts: float | None) -> str | None:
    """ISO 8601 in UTC, or None for no time."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else NONE


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _short(digest: str) -> str:
    return digest[:12] if digest else NONE


def _gate(status: VersionStatus) -> str:
    passed = status.gate_passed
    return NONE if passed is None else ("passed" if passed else "rejected")


def _metric(value: float | None) -> str:
    return NONE if value is None else f"{value:.4f}"


def _emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, allow_nan=False))


def _table(title: str | None = None, caption: str | None = None) -> Table:
    from rich.table import Table

    return Table(
        title=escape(title) if title else None,
        caption=escape(caption) if caption else None,
        title_justify="left",
        caption_justify="left",
    )


def _add_row(table: Table, *cells: str) -> None:
    """Add a row of plain text: a '[' in a reason or a path is not rich markup."""
    table.add_row(*(escape(cell) for cell in cells))


def _version_json(status: VersionStatus, champion_version: str | None) -> dict[str, Any]:
    """One version as JSON; what was never recorded is null."""
    manifest = status.manifest
    files = status.files()
    return {
        "version": status.version,
        "state": status.state,
        "champion": status.version == champion_version,
        "created_at": _utc(manifest.created_at) if manifest else None,
        "last_written": _utc(status.last_modified),
        "gate": {
            "passed": status.gate_passed,
            "reason": status.gate_reason or None,
        },
        "metrics": dict(manifest.metrics) if manifest else {},
        "manifest_sha256": status.manifest_sha256 or None,
        "dataset_uri": manifest.lineage.dataset_uri if manifest else None,
        "dataset_sha256": (manifest.lineage.dataset_sha256 or None) if manifest else None,
        "files": len(files),
        "size": sum(o.size for o in files.values()),
    }


# -- commands ---------------------------------------------------------------------------
@app.command("list")
@one_line_errors
def list_versions(
    registry_uri: RegistryOption = DEFAULT_REGISTRY,
    model_name: ModelOption = DEFAULT_MODEL,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            help="Metric to show as a column (repeatable) (default: every recorded metric)."
        ),
    ] = None,
    all_versions: Annotated[
        bool,
        typer.Option(
            "--all", help="Also list versions garbage collection removed (their ids stay taken)."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List the versions of a model: state, gate verdict, metrics and digests; '*' marks the champion.

    A version whose registration died part-way (no manifest) is listed as incomplete; `closedloop registry gc` removes it.
    """
    with _open(registry_uri) as registry:
        statuses = registry.scan(model_name)
        pointer = registry.champion(model_name)
    current = pointer.version if pointer else None
    if not all_versions:
        statuses = [s for s in statuses if s.state != "collected"]
    if as_json:
        _emit_json(
            {
                "model": model_name,
                "registry": registry_uri,
                "champion": current,
                "versions": [_version_json(s, current) for s in statuses],
            }
        )
        return
    if not statuses:
        console.print(f"no versions of {model_name} in {escape(registry_uri)}", highlight=False)
        return
    names = list(metric or [])
    if not metric:
        for status in statuses:
            for name in status.manifest.metrics if status.manifest else ():
                if name not in names:
                    names.append(name)
    incomplete = sum(s.state == "incomplete" for s in statuses)
    caption = "* the champion" + (
        f"; {incomplete} incomplete (no manifest, shown with their last write): a "
        "registration running or one that died; `closedloop registry gc` removes them after an hour"
        if incomplete
        else ""
    )
    table = _table(f"{model_name} in {registry_uri}", caption)
    table.add_column("version")
    table.add_column("state")
    table.add_column("created (UTC)")
    table.add_column("gate")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("manifest sha256")
    table.add_column("data sha256")
    table.add_column("files", justify="right")
    table.add_column("size", justify="right")
    for status in statuses:
        manifest = status.manifest
        mark = " *" if status.version == current else ""
        if manifest is None:
            written = _when(status.last_modified)
            cells = [NONE] * (len(names) + 3)
        else:
            written = _when(manifest.created_at)
            cells = [
                _gate(status),
                *(_metric(manifest.metrics.get(n)) for n in names),
                _short(status.manifest_sha256),
                _short(manifest.lineage.dataset_sha256),
            ]
        files = status.files()
        _add_row(
            table,
            status.version + mark,
            status.state,
            written,
            *cells,
            str(len(files)),
            _size(sum(o.size for o in files.values())),
        )
    console.print(table)


@app.command()
@one_line_errors
def show(
    version: Annotated[str, typer.Argument(help="The version: v<N>, or 'champion'.")],
    registry_uri: RegistryOption = DEFAULT_REGISTRY,
    model_name: ModelOption = DEFAULT_MODEL,
    as_json: JsonOption = False,
) -> None:
    """Show one version: its lineage (data, code, parameters, parent), gate, metrics and files."""
    from rich.table import Table

    from closedloop.registry import format_span

    with _open(registry_uri) as registry:
        status = registry.status(model_name, version)
        pointer = registry.champion(model_name)
    current = pointer.version if pointer else None
    manifest = status.manifest
    stored = status.stored()
    files: list[dict[str, Any]] = []
    if manifest is not None:
        for entry in manifest.files:
            found = stored.get(entry.path)
            state = (
                "missing"
                if found is None
                else ("ok" if found.size == entry.size else f"size differs ({found.size} B)")
            )
            files.append(
                {"path": entry.path, "size": entry.size, "sha256": entry.sha256, "stored": state}
            )
    else:
        files = [
            {"path": path, "size": o.size, "sha256": None, "written": _utc(o.modified)}
            for path, o in status.files().items()
        ]
    claim = stored.get(".claim")
    if as_json:
        _emit_json(
            {
                "model": model_name,
                "registry": registry_uri,
                **_version_json(status, current),
                "claimed_at": _utc(claim.modified) if claim else None,
                "lineage": asdict(manifest.lineage) if manifest else None,
                "files": files,
            }
        )
        return
    head = f"[bold]{model_name} {status.version}[/]: {status.state}"
    if status.version == current:
        head += " (the champion)"
    if status.state == "incomplete":
        head += ": no manifest, so its registration is still running or died part-way"
    elif status.state == "collected":
        head += ": an incomplete registration removed by garbage collection"
    console.print(head, highlight=False)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if manifest is None:
        age = time.time() - status.last_modified
        if claim is not None:
            _add_row(grid, "claimed", f"{_when(claim.modified)} UTC")
        _add_row(grid, "last write", f"{_when(status.last_modified)} UTC ({format_span(age)} ago)")
        _add_row(grid, "files", f"{len(files)}, {_size(sum(f['size'] for f in files))}")
        console.print(grid)
        table = _table()
        table.add_column("file")
        table.add_column("size", justify="right")
        table.add_column("written (UTC)")
        for item in files:
            _add_row(table, item["path"], _size(item["size"]), _when(stored[item["path"]].modified))
        console.print(table)
        return
    lineage = manifest.lineage
    gate = _gate(status)
    _add_row(grid, "created", f"{_when(manifest.created_at)} UTC")
    _add_row(grid, "gate", gate + (f": {status.gate_reason}" if status.gate_reason else ""))
    _add_row(
        grid,
        "metrics",
        "  ".join(f"{k} {_metric(v)}" for k, v in manifest.metrics.items()) or NONE,
    )
    _add_row(grid, "manifest", f"sha256 {status.manifest_sha256}")
    _add_row(grid, "data", lineage.dataset_uri or NONE)
    _add_row(grid, "data sha256", lineage.dataset_sha256 or NONE)
    _add_row(grid, "code", lineage.code_version or NONE)
    _add_row(grid, "parent", lineage.parent_version or NONE)
    _add_row(grid, "run", lineage.run_id or NONE)
    shown = {k: v for k, v in lineage.parameters.items() if k not in ("gate_passed", "gate_reason")}
    if not shown:
        _add_row(grid, "parameters", NONE)
    for i, (key, value) in enumerate(shown.items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        _add_row(grid, "parameters" if i == 0 else "", f"{key} = {text}")
    console.print(grid, highlight=False)
    table = _table(caption=f"{len(files)} files, {_size(sum(f['size'] for f in files))}")
    table.add_column("file")
    table.add_column("size", justify="right")
    table.add_column("sha256")
    table.add_column("stored")
    for item in files:
        _add_row(table, item["path"], _size(item["size"]), _short(item["sha256"]), item["stored"])
    console.print(table)


def _pointer_json(pointer: ChampionPointer) -> dict[str, Any]:
    return {**asdict(pointer), "updated_at": _utc(pointer.updated_at)}


@app.command()
@one_line_errors
def champion(
    registry_uri: RegistryOption = DEFAULT_REGISTRY,
    model_name: ModelOption = DEFAULT_MODEL,
    limit: Annotated[
        int, typer.Option(help="Show the last N moves of the pointer (0: all).", min=0)
    ] = 20,
    as_json: JsonOption = False,
) -> None:
    """Show the champion pointer (the version a following model server serves) and its history."""
    with _open(registry_uri) as registry:
        pointer = registry.champion(model_name)
        history = registry.champion_history(model_name)
    shown = history[-limit:] if limit else history
    if as_json:
        _emit_json(
            {
                "model": model_name,
                "registry": registry_uri,
                "champion": _pointer_json(pointer) if pointer else None,
                "history": [_pointer_json(p) for p in shown],
            }
        )
        return
    if pointer is None:
        console.print(
            f"{model_name} has no champion yet in {escape(registry_uri)}", highlight=False
        )
    else:
        console.print(
            f"champion of {model_name}: [bold]{pointer.version}[/] since "
            f"{_when(pointer.updated_at)} UTC ({escape(pointer.reason)})",
            highlight=False,
        )
    if not history:
        return
    older = len(history) - len(shown)
    table = _table(
        caption=f"{older} older moves not shown (--limit 0 shows all)" if older else None
    )
    table.add_column("#", justify="right")
    table.add_column("moved (UTC)")
    table.add_column("from")
    table.add_column("to")
    table.add_column("reason")
    for number, move in enumerate(shown, start=older + 1):
        _add_row(
            table,
            str(number),
            _when(move.updated_at),
            move.previous or NONE,
            move.version,
            move.reason,
        )
    console.print(table, highlight=False)


@app.command()
@one_line_errors
def rollback(
    version: Annotated[str, typer.Argument(help="The complete version to serve again, v<N>.")],
    registry_uri: RegistryOption = DEFAULT_REGISTRY,
    model_name: ModelOption = DEFAULT_MODEL,
    reason: Annotated[str, typer.Option(help="Why, appended to the audit record's reason.")] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Also roll back to a version the gate rejected.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Move the champion pointer back to an earlier version, recorded like a promotion.

    The history gets 'rollback to vN by USER'. Model servers that follow the champion load the version at their next poll of the pointer. Incomplete and unknown versions are refused, and so are versions the gate rejected unless --force is given.
    """
    with _open(registry_uri) as registry:
        moved = registry.rollback(model_name, version, by=_user(), note=reason, force=force)
    if as_json:
        _emit_json({"model": model_name, "registry": registry_uri, **_pointer_json(moved)})
        return
    console.print(
        f"champion of {model_name}: {moved.previous or NONE} → [bold]{moved.version}[/] "
        f"({escape(moved.reason)})\nmodel servers following the champion switch at their next poll",
        highlight=False,
    )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_duration(text: str) -> float:
    match = _DURATION.match(text.lower())
    if not match:
        raise typer.BadParameter(
            f"{text!r}: give a duration such as 90s, 30m, 1h or 2d", param_hint="--min-age"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@app.command()
@one_line_errors
def gc(
    registry_uri: RegistryOption = DEFAULT_REGISTRY,
    model_name: ModelOption = DEFAULT_MODEL,
    min_age: Annotated[
        str,
        typer.Option(
            help="Remove an incomplete version only when its last write is older than this "
            "(90s, 30m, 1h, 2d), so a registration in progress is never touched."
        ),
    ] = "1h",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove incomplete versions (no manifest) left by registrations that died, and nothing else.

    Versions with a manifest are never touched. A removed version keeps only a small tombstone in place of its claim, so its id is never handed out again.
    """
    from closedloop.registry import format_span

    seconds = _parse_duration(min_age)
    with _open(registry_uri) as registry:
        decisions = registry.collect_garbage(
            model_name, min_age=seconds, dry_run=dry_run, by=_user()
        )
    if as_json:
        _emit_json(
            {
                "model": model_name,
                "registry": registry_uri,
                "dry_run": dry_run,
                "min_age_seconds": seconds,
                "versions": [asdict(d) for d in decisions],
            }
        )
        return
    if not decisions:
        console.print(
            f"no incomplete versions of {model_name} in {escape(registry_uri)}", highlight=False
        )
        return
    going = [d for d in decisions if d.remove]
    table = _table(
        f"{model_name} in {registry_uri}: incomplete versions"
        + (" (dry run: nothing removed)" if dry_run else ""),
        f"{'would remove' if dry_run else 'removed'} {len(going)} of {len(decisions)}, "
        f"{sum(d.objects for d in going)} objects, {_size(sum(d.size for d in going))}; "
        f"kept {len(decisions) - len(going)}",
    )
    table.add_column("version")
    table.add_column("last write", justify="right")
    table.add_column("objects", justify="right")
    table.add_column("size", justify="right")
    table.add_column("action")
    for d in decisions:
        _add_row(
            table,
            d.version,
            f"{format_span(d.age_seconds)} ago",
            str(d.objects),
            _size(d.size),
            d.detail,
        )
    console.print(table, highlight=False)
