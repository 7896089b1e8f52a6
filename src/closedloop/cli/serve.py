"""``closedloop serve`` and ``closedloop predict``: the model server on this machine."""

from __future__ import annotations

import json
import math
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from closedloop import config
from closedloop.cli._common import console, err_console, one_line_errors
from closedloop.errors import ClosedLoopError

if TYPE_CHECKING:
    import pandas as pd

    from closedloop.storage import S3Settings

DEFAULT_MODEL = "fraud"
DEFAULT_REGISTRY = "s3://closedloop/registry"
DEFAULT_PORT = 9000
DEFAULT_HOST = "127.0.0.1"
PREDICTIONS_PATH = "/api/v1.0/predictions"


class ServeError(ClosedLoopError):
    """The model server could not be run or reached, or refused the rows sent to it."""


def register(app: typer.Typer) -> None:
    """Add the ``serve`` and ``predict`` commands to *app*."""
    app.command("serve")(serve)
    app.command("predict")(predict)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Make SIGTERM stop the foreground command the way Ctrl-C does."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@one_line_errors
def serve(
    version: Annotated[
        str, typer.Option(help="Version to serve: 'champion' (follow the pointer) or v<N>.")
    ] = "champion",
    model_name: Annotated[str, typer.Option(help="Registered model name.")] = DEFAULT_MODEL,
    registry_uri: Annotated[
        str, typer.Option(help="Registry root: s3://bucket/prefix or a local directory.")
    ] = DEFAULT_REGISTRY,
    port: Annotated[
        int, typer.Option(help="REST port on --host (gRPC and metrics get free ones).")
    ] = DEFAULT_PORT,
    host: Annotated[
        str,
        typer.Option(
            help="IPv4 address REST, gRPC and metrics listen on: 127.0.0.1 is this machine "
            "only, 0.0.0.0 every interface (reachable from the network, without "
            "authentication)."
        ),
    ] = DEFAULT_HOST,
    workers: Annotated[int, typer.Option(help="gunicorn worker processes.", min=1)] = 1,
    poll_seconds: Annotated[
        float, typer.Option(help="How often the champion pointer is read (0: once).", min=0)
    ] = 2.0,
    request_logger_url: Annotated[
        str | None,
        typer.Option(help="Post request-logger CloudEvents here (the drift sidecar)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the server to be ready.", min=1)
    ] = 120.0,
) -> None:
    """Run the model server in the foreground (local S3 is started if needed); Ctrl-C stops it."""
    from closedloop.cli._local import ignoring_interrupts, s3_settings_for
    from closedloop.deploy.local import LocalDeployer, bind_host
    from closedloop.local.s3 import port_is_free

    try:
        host = bind_host(host)
    except ValueError as exc:
        raise ServeError(f"--host: {exc}") from exc
    if not port_is_free(port, host):
        raise ServeError(f"port {port} on {host} is already in use: choose another with --port")
    with _sigterm_as_interrupt(), s3_settings_for(registry_uri) as s3:
        _check_version(registry_uri, s3, model_name, version)
        deployer = LocalDeployer(
            registry_uri,
            s3=s3,
            http_port=port,
            workers=workers,
            poll_seconds=poll_seconds,
            request_logger_url=request_logger_url,
            state_dir=config.home() / "serve" / model_name,
            ready_timeout=timeout,
            host=host,
        )
        try:
            with console.status(f"starting the model server for {model_name} {version}…"):
                info = deployer.deploy(model_name, version)
            server = deployer.server
            assert server is not None
            console.print(
                f"[green]serving[/] {model_name} {info.serving_version} "
                f"({'following the champion' if version == 'champion' else 'pinned'}) at "
                f"{info.url}{PREDICTIONS_PATH}\n"
                f"metrics: {server.metrics_url}  gRPC: {server.grpc_endpoint}  "
                f"log: {server.log_file}\nlistening on {host}"
                f"{' (every interface)' if host == '0.0.0.0' else ''}. Ctrl-C stops it."
            )
            while server.running:
                time.sleep(0.5)
            raise ServeError(f"the model server exited; see {server.log_file}")
        except KeyboardInterrupt:
            console.print("stopping the model server…")
        finally:
            with ignoring_interrupts():
                deployer.teardown()


def _check_version(registry_uri: str, s3: S3Settings | None, model_name: str, version: str) -> None:
    """Fail at once, not after the ready timeout, for a version that does not exist."""
    from closedloop.registry import Registry
    from closedloop.storage import Store

    registry = Registry(Store(s3), registry_uri)
    registry.manifest(model_name, version)


def _read_rows(path: Path) -> pd.DataFrame:
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise ServeError(f"cannot read {path}: {exc}") from exc
    raise ServeError(f"{path}: expected a .csv or .parquet file")


def _call(url: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """GET (no body) or POST JSON; return the JSON answer or raise ServeError."""
    data = None if body is None else json.dumps(body, allow_nan=False).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            info = json.loads(text)["status"]["info"]
        except (ValueError, KeyError, TypeError):
            info = text[:300]
        raise ServeError(f"the model server answered HTTP {exc.code}: {info}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServeError(
            f"cannot reach the model server at {url} ({reason}): start one with `closedloop serve`"
        ) from exc


def _json_value(value: Any) -> Any:
    """A cell as JSON: missing (None, NaN, NaT) → null, timestamps → ISO text, numpy → Python."""
    import pandas as pd

    if not isinstance(value, str) and pd.isna(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


@one_line_errors
def predict(
    url: Annotated[str, typer.Option(help="Model server base URL, e.g. http://127.0.0.1:9000.")],
    data: Annotated[
        Path, typer.Option(help="Rows to score: a .csv or .parquet file.", dir_okay=False)
    ],
    batch: Annotated[int, typer.Option(help="Rows per request.", min=1)] = 100,
) -> None:
    """Send rows from a file to a running model server and print the predictions as CSV."""
    base = url.rstrip("/")
    if not data.is_file():
        raise ServeError(f"{data} does not exist")
    frame = _read_rows(data)
    if frame.empty:
        raise ServeError(f"{data} holds no rows")
    metadata = _call(base + "/metadata")
    inputs = metadata.get("inputs") or [{}]
    names = (inputs[0].get("schema") or {}).get("names")
    if names:
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise ServeError(f"{data} lacks columns {missing} that the model takes ({names})")
        frame = frame.loc[:, names]
    names = [str(c) for c in frame.columns]
    versions: set[str] = set()
    started = time.perf_counter()
    for first in range(0, len(frame), batch):
        chunk = frame.iloc[first : first + batch]
        rows = [[_json_value(v) for v in row] for row in chunk.itertuples(index=False)]
        try:
            answer = _call(base + PREDICTIONS_PATH, {"data": {"names": names, "ndarray": rows}})
        except ServeError as exc:
            raise ServeError(f"rows {first}-{first + len(chunk) - 1}: {exc}") from exc
        versions.add(str((answer.get("meta") or {}).get("tags", {}).get("model_version")))
        values = _output_values(answer.get("data") or {})
        output_names = (answer.get("data") or {}).get("names") or []
        if first == 0:
            typer.echo(",".join(["row", "prediction", *(f"p_{n}" for n in output_names)]))
        for offset, value in enumerate(values):
            if output_names:
                best = max(range(len(value)), key=value.__getitem__)
                cells = [output_names[best], *(f"{p:.6g}" for p in value)]
            else:
                cells = [f"{(value[0] if isinstance(value, list) else value):.6g}"]
            typer.echo(",".join([str(first + offset), *cells]))
    err_console.print(
        f"predicted {len(frame)} rows in {math.ceil(len(frame) / batch)} requests "
        f"({time.perf_counter() - started:.2f}s), model version(s): {', '.join(sorted(versions))}",
        highlight=False,
    )


def _output_values(data: dict[str, Any]) -> list[Any]:
    """The rows of a Seldon ``data`` answer (``ndarray`` or ``tensor``)."""
    if "ndarray" in data:
        return list(data["ndarray"])
    tensor = data.get("tensor") or {}
    values, shape = tensor.get("values") or [], tensor.get("shape") or [0]
    width = shape[1] if len(shape) == 2 else 1
    return [values[i : i + width] for i in range(0, len(values), width)]
