"""The local deploy backend: Seldon's model server as a process group on loopback.

:class:`LocalSeldonServer` runs ``seldon-core-microservice`` from the serving
environment (its own virtual environment: seldon-core pins protobuf 5, kfp needs 6)
with the model class, the parameters and the environment the Seldon operator would
give it in a cluster, on free ports, and waits until ``/health/status`` answers.

Two facts about seldon-core 1.19 shape it:

* the wrapper binds REST, gRPC and metrics on ``0.0.0.0`` (hard-coded): the server is
  started through :mod:`closedloop.serving.microservice`, which binds all three to the
  ``host`` asked for (``CLOSEDLOOP_BIND_HOST``), 127.0.0.1 unless told otherwise, so
  the server is reachable from this machine only. The ports are chosen free on that
  host; clients use it (127.0.0.1 when it is ``0.0.0.0``, every interface);
* gunicorn 27 puts its control socket at ``$XDG_RUNTIME_DIR/gunicorn.ctl``, else
  ``~/.gunicorn/gunicorn.ctl``, the same path for every server, and unlinks and
  re-creates it on every worker fork: each server gets a private ``XDG_RUNTIME_DIR``
  (not a private ``HOME``, which would also hide ``~/.aws`` and other user settings).

:class:`LocalDeployer` implements :class:`closedloop.deploy.base.Deployer`. Moving
the champion is the registry's job, so ``deploy(model, "champion")`` starts a server
that follows the champion pointer (if none runs yet) and leaves the swap to the
server's hot reload: no restart, no failed request. ``deploy(model, "v3")`` pins a
version: the server restarts on the same port (a pause of a few seconds, which a
pinned roll-back accepts), after checking the version exists so a typo never stops a
running server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from closedloop import __version__
from closedloop.deploy import DeployError
from closedloop.deploy.base import DeploymentInfo
from closedloop.deploy.seldon import MODEL_CLASS, MODEL_CONTAINER
from closedloop.local.s3 import free_port, terminate_group
from closedloop.registry import CHAMPION_ALIAS, Registry, RegistryError
from closedloop.serving.microservice import BIND_HOST_ENV
from closedloop.serving.parameters import seldon_parameters
from closedloop.storage import S3Settings, StorageError, Store

HOST = "127.0.0.1"
MICROSERVICE = "seldon-core-microservice"
SERVING_VENV_ENV = "CLOSEDLOOP_SERVING_VENV"
METRICS_PATH = "/prometheus"
"""Metrics path, as the Seldon operator sets it (``PREDICTIVE_UNIT_METRICS_ENDPOINT``)."""
LOG_FILE = "server.log"
REFUSED_REASON = "MODEL_REFUSED"
_REPO = Path(__file__).resolve().parents[3]
_STATUS_RETRY_SECONDS = 10.0
_POLL_SECONDS = 0.25
# The server is on loopback: a proxy from the environment must not be asked for it.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalServerError(DeployError):
    """The local model server could not be found, started, reached or stopped."""


def find_microservice(env: Mapping[str, str] | None = None) -> Path:
    """Locate ``seldon-core-microservice`` of the serving environment.

    Looked up in ``$CLOSEDLOOP_SERVING_VENV/bin``, then ``<repository>/.venv-serving/bin``
    (a source checkout), then on ``PATH`` (a serving image).

    Raises:
        LocalServerError: If none is found.
    """
    env = os.environ if env is None else env
    configured = env.get(SERVING_VENV_ENV)
    if configured:
        candidate = Path(configured).expanduser() / "bin" / MICROSERVICE
        if candidate.is_file():
            return candidate
        raise LocalServerError(
            f"{SERVING_VENV_ENV}={configured} has no bin/{MICROSERVICE}: point it at the "
            "serving virtual environment (created by `make install`)"
        )
    checkout = _REPO / ".venv-serving" / "bin" / MICROSERVICE
    if checkout.is_file():
        return checkout
    found = shutil.which(MICROSERVICE, path=env.get("PATH"))
    if found:
        return Path(found)
    raise LocalServerError(
        f"{MICROSERVICE} not found: run `make install` (it creates .venv-serving), or set "
        f"{SERVING_VENV_ENV} to a virtual environment with closedloop[serving] installed"
    )


@dataclass(frozen=True)
class ServerPorts:
    """The three ports of one model server."""

    http: int
    grpc: int
    metrics: int

    @classmethod
    def allocate(cls, http: int | None = None, host: str = HOST) -> ServerPorts:
        """Pick distinct free ports on *host*, keeping *http* if given."""
        taken: set[int] = set() if http is None else {http}
        chosen: list[int] = []
        while len(chosen) < (3 if http is None else 2):
            port = free_port(host)
            if port not in taken:
                taken.add(port)
                chosen.append(port)
        if http is not None:
            chosen.insert(0, http)
        return cls(*chosen)


def model_parameters(
    registry_uri: str,
    model_name: str,
    version: str = CHAMPION_ALIAS,
    *,
    poll_seconds: float | None = None,
    max_rows: int | None = None,
    max_request_bytes: int | None = None,
    request_logger_url: str | None = None,
    request_logger_mode: str | None = None,
) -> dict[str, Any]:
    """Return the constructor parameters of :class:`closedloop.serving.model.ClosedLoopModel`.

    Parameters left at None are not passed, so the model's defaults apply.

    Raises:
        ValueError: A value that does not fit its declared type
            (:mod:`closedloop.serving.parameters`).
    """
    parameters = {"registry_uri": registry_uri, "model_name": model_name, "version": version}
    optional: dict[str, Any] = {
        "poll_seconds": poll_seconds,
        "max_rows": max_rows,
        "max_request_bytes": max_request_bytes,
        "request_logger_url": request_logger_url,
        "request_logger_mode": request_logger_mode,
    }
    parameters.update({k: v for k, v in optional.items() if v is not None})
    seldon_parameters(parameters)  # refuse a value that does not fit now, not at start
    return parameters


def bind_host(host: str) -> str:
    """Return *host* if it is an IPv4 address (what the model server can listen on).

    Raises:
        ValueError: If it is not.
    """
    try:
        return str(ipaddress.IPv4Address(host.strip()))
    except ValueError as exc:
        raise ValueError(
            f"host must be an IPv4 address, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 "
            f"(every interface), got {host!r}"
        ) from exc


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(line.strip() for line in text[-lines:]) or "empty log"


class LocalSeldonServer:
    """One ``seldon-core-microservice`` process group on free loopback ports.

    Args:
        parameters: Constructor parameters of the model class
            (see :func:`model_parameters`), passed as ``PREDICTIVE_UNIT_PARAMETERS``,
            typed as :mod:`closedloop.serving.parameters` declares them (for another
            model class, as strings).
        interface: The model class, ``module.Class``.
        s3: S3 settings passed to the server as environment variables; None leaves
            the caller's environment as it is.
        http_port: The REST port; None picks a free one (gRPC and metrics always do).
        workers: gunicorn worker processes (``GUNICORN_WORKERS``).
        threads: Threads per worker (``GUNICORN_THREADS``).
        grpc: Whether to run the gRPC server too.
        pythonpath: Directories the server imports from (e.g. a benchmark's model);
            the caller's ``PYTHONPATH`` is not passed on, as it may hold kfp.
        state_dir: Where the log and the private runtime directory go; when None a
            temporary directory, removed by :meth:`stop` (and kept when :meth:`start`
            fails, for its log).
        deployment_name: Stand-in SeldonDeployment name (``SELDON_DEPLOYMENT_ID``).
        ready_timeout: Seconds :meth:`start` waits for ``/health/status``.
        stop_timeout: Seconds :meth:`stop` waits after SIGTERM before SIGKILL.
        extra_env: More environment variables for the server.
        bare: Start Seldon's own ``seldon-core-microservice`` instead of
            :mod:`closedloop.serving.microservice` (which adds closedloop's metrics,
            gRPC statuses and bind address: a bare server listens on every interface
            whatever *host* says); for benchmark anchors.
        host: IPv4 address the REST, gRPC and metrics servers listen on: 127.0.0.1
            (this machine only), ``0.0.0.0`` (every interface) or one interface's.

    Raises:
        ValueError: Fewer than one worker or thread, or *host* not an IPv4 address.
    """

    def __init__(
        self,
        parameters: Mapping[str, Any],
        *,
        interface: str = MODEL_CLASS,
        s3: S3Settings | None = None,
        http_port: int | None = None,
        workers: int = 1,
        threads: int = 1,
        grpc: bool = True,
        pythonpath: Sequence[str | os.PathLike[str]] = (),
        state_dir: str | os.PathLike[str] | None = None,
        deployment_name: str = "local",
        ready_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        extra_env: Mapping[str, str] | None = None,
        bare: bool = False,
        host: str = HOST,
    ) -> None:
        if workers < 1 or threads < 1:
            raise ValueError("workers and threads must be >= 1")
        self.host = bind_host(host)
        self.parameters = dict(parameters)
        self.interface = interface
        self.s3 = s3
        self.requested_http_port = http_port
        self.workers = workers
        self.threads = threads
        self.grpc = grpc
        self.pythonpath = [str(Path(p).absolute()) for p in pythonpath]
        self._given_state_dir = Path(state_dir).absolute() if state_dir is not None else None
        self.deployment_name = deployment_name
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.extra_env = dict(extra_env or {})
        self.bare = bare
        self.ports: ServerPorts | None = None
        self.state_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- information ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the server (leader of its process group)."""
        return self._proc.pid if self._proc is not None else None

    def _require_ports(self) -> ServerPorts:
        if self.ports is None:
            raise LocalServerError("the model server was not started")
        return self.ports

    @property
    def client_host(self) -> str:
        """Where clients here reach the server: the host, or 127.0.0.1 for ``0.0.0.0``."""
        return HOST if ipaddress.IPv4Address(self.host).is_unspecified else self.host

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://{self.client_host}:{self._require_ports().http}"

    @property
    def grpc_endpoint(self) -> str:
        """``host:port`` of the gRPC API."""
        return f"{self.client_host}:{self._require_ports().grpc}"

    @property
    def metrics_url(self) -> str:
        """URL of the Prometheus metrics."""
        return f"http://{self.client_host}:{self._require_ports().metrics}{METRICS_PATH}"

    @property
    def log_file(self) -> Path:
        """The server's combined stdout and stderr."""
        if self.state_dir is None:
            raise LocalServerError("the model server was not started")
        return self.state_dir / LOG_FILE

    @property
    def runtime_dir(self) -> Path:
        """The private ``XDG_RUNTIME_DIR`` (gunicorn's control socket lives there)."""
        if self.state_dir is None:
            raise LocalServerError("the model server was not started")
        return self.state_dir / "run"

    def environment(self, ports: ServerPorts, state_dir: Path) -> dict[str, str]:
        """Return the server's environment: the caller's, plus what Seldon would set."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        if self.s3 is not None:
            env.update(self.s3.to_env())
        parameters = (
            seldon_parameters(self.parameters)
            if self.interface == MODEL_CLASS
            else [
                {"name": k, "value": str(v), "type": "STRING"} for k, v in self.parameters.items()
            ]
        )
        env.update(
            {
                "MODEL_NAME": self.interface,
                "SERVICE_TYPE": "MODEL",
                "PREDICTIVE_UNIT_PARAMETERS": json.dumps(parameters),
                "GUNICORN_WORKERS": str(self.workers),
                "GUNICORN_THREADS": str(self.threads),
                # XGBoost's OpenMP threads collapse under contention: scale with workers.
                "OMP_NUM_THREADS": "1",
                "XDG_RUNTIME_DIR": str(state_dir / "run"),
                "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(ports.http),
                "PREDICTIVE_UNIT_GRPC_SERVICE_PORT": str(ports.grpc),
                "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(ports.metrics),
                "PREDICTIVE_UNIT_METRICS_ENDPOINT": METRICS_PATH,
                BIND_HOST_ENV: self.host,
                "PREDICTIVE_UNIT_ID": MODEL_CONTAINER,
                # Seldon labels metrics and meta.requestPath with the image; say it is local.
                "PREDICTIVE_UNIT_IMAGE": f"local/closedloop-serving:{__version__}",
                "PREDICTOR_ID": "default",
                "SELDON_DEPLOYMENT_ID": self.deployment_name,
                "POD_NAMESPACE": "local",
                # Custom metrics belong on the metrics port, not in every response body.
                "INCLUDE_METRICS_IN_CLIENT_RESPONSE": "false",
            }
        )
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(self.pythonpath)
        env.update(self.extra_env)
        return env

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> LocalSeldonServer:
        """Start the server and return once ``/health/status`` answers 200.

        Raises:
            LocalServerError: The executable is missing, the process exits, the model
                is refused (digest mismatch, unusable artifact), or it is not ready
                within ``ready_timeout``. The process group is stopped first.
        """
        if self.running:
            raise LocalServerError(f"the model server already runs at {self.url}")
        executable = find_microservice()
        state_dir = self._given_state_dir or Path(tempfile.mkdtemp(prefix="closedloop-serve-"))
        (state_dir / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
        ports = ServerPorts.allocate(self.requested_http_port, self.host)
        self.state_dir, self.ports = state_dir, ports
        launcher = (
            [str(executable)]
            if self.bare
            else [str(executable.parent / "python"), "-m", "closedloop.serving.microservice"]
        )
        command = [
            *launcher,
            self.interface,
            "--service-type",
            "MODEL",
            "--http-port",
            str(ports.http),
            "--grpc-port",
            str(ports.grpc),
            "--metrics-port",
            str(ports.metrics),
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--grpc-workers",
            "1" if self.grpc else "0",
        ]
        log = (state_dir / LOG_FILE).open("ab")
        try:
            # A session of its own: stop() signals the whole group (gunicorn arbiters,
            # workers, the gRPC process, the metrics manager) and nothing outlives it.
            # The working directory is the state directory because the wrapper adds
            # its working directory to sys.path.
            self._proc = subprocess.Popen(
                command,
                cwd=state_dir,
                env=self.environment(ports, state_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            # The state directory stays, temporary or not: its log says what happened.
            self._terminate()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        # Each worker loads the version on its own and the port hands a request to any
        # of them: ready means several answers in a row say so, not the first one.
        wanted, in_a_row = 3 * self.workers, 0
        while time.monotonic() < deadline:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise LocalServerError(
                    f"the model server exited during start-up (code {code}): "
                    f"{_tail(self.log_file)} (full log: {self.log_file})"
                )
            status, body = self._get("/health/status", timeout=2.0)
            if status == 200:
                in_a_row += 1
                if in_a_row >= wanted:
                    return
                time.sleep(0.05)
                continue
            in_a_row = 0
            info, reason = _seldon_status(body)
            if status == 503 and reason == REFUSED_REASON:
                raise LocalServerError(f"the model server refused the model: {info}")
            if status is not None:
                last = f"HTTP {status}: {info}"
            time.sleep(_POLL_SECONDS)
        raise LocalServerError(
            f"the model server was not ready within {self.ready_timeout:g}s ({last}); "
            f"see {self.log_file}"
        )

    def _get(self, path: str, timeout: float) -> tuple[int | None, bytes]:
        """GET *path*; (None, b"") when nothing answers."""
        try:
            with _LOOPBACK.open(self.url + path, timeout=timeout) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError):
            return None, b""

    def health(self) -> dict[str, Any]:
        """Return what ``/health/status`` reports when the server is ready.

        Raises:
            LocalServerError: If it does not answer 200.
        """
        status, body = self._get("/health/status", timeout=5.0)
        if status != 200:
            info, _ = _seldon_status(body)
            raise LocalServerError(
                f"the model server at {self.url} is not ready: "
                + (f"HTTP {status}: {info}" if status is not None else "no answer")
            )
        return json.loads(body).get("jsonData") or {}

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, bounded wait, then SIGKILL."""
        self._terminate()
        if self._given_state_dir is None and self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = None

    def _terminate(self) -> None:
        if self._proc is not None:
            terminate_group(self._proc.pid, self.stop_timeout)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
            self._proc = None

    def __enter__(self) -> LocalSeldonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _seldon_status(body: bytes) -> tuple[str, str]:
    """Return (info, reason) of a Seldon error body, or the body's text."""
    try:
        status = json.loads(body).get("status") or {}
        return str(status.get("info", "")), str(status.get("reason", ""))
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:300], ""


class LocalDeployer:
    """Serve a model version on this machine with :class:`LocalSeldonServer`.

    Args:
        registry_uri: Registry root the server loads from.
        s3: S3 settings for the server (and the version check); None uses the
            environment.
        http_port: REST port, kept across restarts; None picks a free one.
        workers: gunicorn worker processes.
        poll_seconds: Champion poll interval of the server.
        request_logger_url: Where the server posts request-logger CloudEvents (the
            drift sidecar); None for none.
        request_logger_mode: ``request``, ``response`` or ``all``.
        max_rows: Most rows per request (the model's default when None).
        state_dir: Where the server's log goes (a temporary directory when None).
        grpc: Whether to run the gRPC server too.
        ready_timeout: Seconds to wait for the server to be ready.
        host: IPv4 address the server listens on (see :class:`LocalSeldonServer`).
    """

    backend = "local"

    def __init__(
        self,
        registry_uri: str,
        *,
        s3: S3Settings | None = None,
        http_port: int | None = None,
        workers: int = 1,
        poll_seconds: float = 2.0,
        request_logger_url: str | None = None,
        request_logger_mode: str | None = None,
        max_rows: int | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        grpc: bool = True,
        ready_timeout: float = 120.0,
        host: str = HOST,
    ) -> None:
        self.registry_uri = registry_uri
        self.host = bind_host(host)
        self.s3 = s3
        self.http_port = http_port
        self.workers = workers
        self.poll_seconds = poll_seconds
        self.request_logger_url = request_logger_url
        self.request_logger_mode = request_logger_mode
        self.max_rows = max_rows
        self.state_dir = state_dir
        self.grpc = grpc
        self.ready_timeout = ready_timeout
        self.server: LocalSeldonServer | None = None
        self._model_name: str | None = None
        self._version: str | None = None

    def deploy(self, model_name: str, version: str = CHAMPION_ALIAS) -> DeploymentInfo:
        """Serve *version* of *model_name* (see the module docstring for the choices).

        Raises:
            LocalServerError: The version does not exist, or the server did not start.
        """
        version = version or CHAMPION_ALIAS
        running = self.server is not None and self.server.running
        if running and (self._model_name, self._version) == (model_name, version):
            return self.status()
        if version != CHAMPION_ALIAS:
            self._check_version(model_name, version)
        previous = (self._model_name, self._version) if running else None
        port = self.http_port
        if self.server is not None:
            if self.server.ports is not None:
                port = self.server.ports.http
            self.server.stop()
            self.server = None
        try:
            self._start(model_name, version, port)
        except LocalServerError as exc:
            if previous is None:
                raise
            # Put back what served before, so a failed pinned deploy leaves a server up.
            try:
                self._start(previous[0], previous[1], port)  # type: ignore[arg-type]
                detail = f"; {previous[0]} {previous[1]} serves again"
            except LocalServerError as again:
                detail = f"; restarting {previous[0]} {previous[1]} failed too: {again}"
            raise LocalServerError(f"{exc}{detail}") from exc
        return self.status()

    def _start(self, model_name: str, version: str, port: int | None) -> None:
        server = LocalSeldonServer(
            model_parameters(
                self.registry_uri,
                model_name,
                version,
                poll_seconds=self.poll_seconds,
                max_rows=self.max_rows,
                request_logger_url=self.request_logger_url,
                request_logger_mode=self.request_logger_mode,
            ),
            s3=self.s3,
            http_port=port,
            workers=self.workers,
            grpc=self.grpc,
            state_dir=self.state_dir,
            deployment_name=model_name,
            ready_timeout=self.ready_timeout,
            host=self.host,
        )
        server.start()
        self.server, self._model_name, self._version = server, model_name, version

    def _check_version(self, model_name: str, version: str) -> None:
        registry = Registry(Store(self.s3 or S3Settings.from_env()), self.registry_uri)
        try:
            registry.manifest(model_name, version)
        except (RegistryError, StorageError) as exc:
            raise LocalServerError(f"cannot deploy {model_name} {version}: {exc}") from exc

    def status(self) -> DeploymentInfo:
        """Report the served version (from ``/health/status``).

        Raises:
            LocalServerError: If nothing was deployed.
        """
        server = self.server
        if server is None or self._model_name is None or self._version is None:
            raise LocalServerError("nothing is deployed locally: call deploy() first")
        if not server.running:
            return DeploymentInfo(
                self.backend,
                self._model_name,
                self._version,
                None,
                None,
                ready=False,
                detail=f"the model server exited; see {server.log_file}",
            )
        # A worker still loading answers 503 while another serves: ask again briefly.
        deadline = time.monotonic() + _STATUS_RETRY_SECONDS
        while True:
            try:
                health = server.health()
                break
            except LocalServerError as exc:
                if time.monotonic() >= deadline or not server.running:
                    return DeploymentInfo(
                        self.backend,
                        self._model_name,
                        self._version,
                        None,
                        server.url,
                        False,
                        str(exc),
                    )
                time.sleep(_POLL_SECONDS)
        error = health.get("last_load_error")
        return DeploymentInfo(
            backend=self.backend,
            model_name=self._model_name,
            requested_version=self._version,
            serving_version=health.get("model_version"),
            url=server.url,
            ready=True,
            detail=f"last load failed: {error}" if error else "",
        )

    def teardown(self) -> None:
        """Stop the server (idempotent)."""
        if self.server is not None:
            self.server.stop()
        self.server = None
