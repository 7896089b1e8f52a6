"""The model registry: immutable versions on S3 (or a local directory).

Layout below the registry root (e.g. ``s3://closedloop/registry``)::

    models/<model>/versions/<version>/.claim           version id taken (first writer wins)
    models/<model>/versions/<version>/<files…>         model.joblib, detector/…, schema.json, …
    models/<model>/versions/<version>/MANIFEST.json    written last: the version exists
    models/<model>/champion.json                       the served version (moved after a gate)
    models/<model>/history/<ts>-<version>.json         every pointer move, for audit

A version is visible only once its manifest is written, and the manifest is written
after every file with a conditional create, so a crash mid-registration leaves no
visible half version and a version can never be overwritten. The manifest carries the
sha256 of every file; :meth:`Registry.fetch` refuses a file whose digest differs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from closedloop.errors import ClosedLoopError
from closedloop.storage import (
    AlreadyExistsError,
    ObjectNotFoundError,
    Store,
    join_uri,
    sha256_bytes,
    sha256_file,
)

MANIFEST = "MANIFEST.json"
CLAIM = ".claim"
CHAMPION = "champion.json"
CHAMPION_ALIAS = "champion"
_VERSION_RE = re.compile(r"^v(\d+)$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class RegistryError(ClosedLoopError):
    """A registry operation failed."""


class VersionNotFoundError(RegistryError):
    """No such model version (or no champion yet)."""


class IntegrityError(RegistryError):
    """A file of a version is missing or its sha256 differs from the manifest."""


@dataclass(frozen=True)
class Lineage:
    """Where a model version came from.

    Attributes:
        dataset_uri: The training data's location.
        dataset_sha256: Its content digest.
        parameters: Every parameter of the run that produced it.
        code_version: Package version and, when known, the git commit.
        parent_version: The champion it was compared against, if any.
        run_id: The pipeline run that registered it.
    """

    dataset_uri: str
    dataset_sha256: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    code_version: str = ""
    parent_version: str | None = None
    run_id: str = ""


@dataclass(frozen=True)
class FileEntry:
    """One file of a version: path relative to the version prefix, digest and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """The record that makes a version exist."""

    model_name: str
    version: str
    files: tuple[FileEntry, ...]
    lineage: Lineage
    metrics: Mapping[str, float]
    created_at: float

    def to_json(self) -> str:
        """Serialize to JSON (stable key order)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse what :meth:`to_json` wrote."""
        raw = json.loads(text)
        return cls(
            model_name=raw["model_name"],
            version=raw["version"],
            files=tuple(FileEntry(**f) for f in raw["files"]),
            lineage=Lineage(**raw["lineage"]),
            metrics=dict(raw["metrics"]),
            created_at=float(raw["created_at"]),
        )

    def file(self, path: str) -> FileEntry:
        """Return the entry of *path*."""
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)


@dataclass(frozen=True)
class ChampionPointer:
    """Which version serves, since when, and why."""

    model_name: str
    version: str
    previous: str | None
    reason: str
    updated_at: float


@dataclass(frozen=True)
class LocalVersion:
    """A version fetched to local disk and verified against its manifest."""

    path: Path
    manifest: Manifest

    @property
    def version(self) -> str:
        """The version id."""
        return self.manifest.version


def code_version() -> str:
    """Return the package version plus the git commit when run from a checkout."""
    from closedloop import __version__

    commit = os.environ.get("CLOSEDLOOP_CODE_VERSION", "")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short=12", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
                cwd=Path(__file__).parent,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def _check_name(model_name: str) -> None:
    if not _NAME_RE.match(model_name):
        raise RegistryError(
            f"invalid model name {model_name!r}: use lowercase letters, digits and '-', "
            "starting with a letter or digit (it becomes part of S3 keys and Kubernetes names)"
        )


class Registry:
    """Register, list, promote and fetch model versions.

    Args:
        store: The storage layer to use.
        root: The registry root, ``s3://bucket/prefix`` or a local directory.
    """

    def __init__(self, store: Store, root: str) -> None:
        self.store = store
        self.root = root.rstrip("/")

    def _model(self, model_name: str, *parts: str) -> str:
        _check_name(model_name)
        return join_uri(self.root, "models", model_name, *parts)

    # -- reading ----------------------------------------------------------------------
    def versions(self, model_name: str) -> list[str]:
        """Return the visible versions of *model_name*, oldest first."""
        found = []
        prefix = self._model(model_name, "versions")
        for uri in self.store.list(prefix):
            rel = uri[len(prefix) :].strip("/").split("/")
            if len(rel) == 2 and rel[1] == MANIFEST and _VERSION_RE.match(rel[0]):
                found.append(rel[0])
        return sorted(found, key=lambda v: int(v[1:]))

    def manifest(self, model_name: str, version: str) -> Manifest:
        """Return the manifest of a version (``"champion"`` resolves the pointer)."""
        version = self.resolve(model_name, version)
        try:
            return Manifest.from_json(
                self.store.read_bytes(self._model(model_name, "versions", version, MANIFEST))
            )
        except ObjectNotFoundError as exc:
            raise VersionNotFoundError(
                f"{model_name} has no version {version!r} in {self.root}"
            ) from exc

    def champion(self, model_name: str) -> ChampionPointer | None:
        """Return the champion pointer, or None before the first promotion."""
        try:
            raw = json.loads(self.store.read_bytes(self._model(model_name, CHAMPION)))
        except ObjectNotFoundError:
            return None
        return ChampionPointer(**raw)

    def resolve(self, model_name: str, version: str) -> str:
        """Turn ``"champion"`` (or a version id) into a version id."""
        if version != CHAMPION_ALIAS:
            if not _VERSION_RE.match(version):
                raise RegistryError(f"invalid version {version!r}: use v<N> or 'champion'")
            return version
        pointer = self.champion(model_name)
        if pointer is None:
            raise VersionNotFoundError(
                f"{model_name} has no champion yet in {self.root}: train and promote a first version"
            )
        return pointer.version

    def read_file(self, model_name: str, version: str, path: str) -> bytes:
        """Return one file of a version, verified against the manifest.

        Raises:
            IntegrityError: The file is not in the manifest, missing, or its digest differs.
        """
        manifest = self.manifest(model_name, version)
        try:
            entry = manifest.file(path)
        except KeyError as exc:
            raise IntegrityError(f"{model_name} {manifest.version} has no file {path!r}") from exc
        uri = self._model(model_name, "versions", manifest.version, path)
        try:
            data = self.store.read_bytes(uri)
        except ObjectNotFoundError as exc:
            raise IntegrityError(
                f"{model_name} {manifest.version}: {path} is listed in the manifest but missing"
            ) from exc
        if sha256_bytes(data) != entry.sha256:
            raise IntegrityError(
                f"{model_name} {manifest.version}: {path} does not match its manifest digest; refusing to use it"
            )
        return data

    def fetch(self, model_name: str, version: str, dest: str | os.PathLike[str]) -> LocalVersion:
        """Download a version into *dest* and verify every file against the manifest.

        Raises:
            IntegrityError: A file is missing or its digest differs; nothing is returned.
        """
        manifest = self.manifest(model_name, version)
        base = self._model(model_name, "versions", manifest.version)
        dest = Path(dest)
        for entry in manifest.files:
            target = dest / entry.path
            try:
                self.store.download_file(join_uri(base, entry.path), target)
            except ObjectNotFoundError as exc:
                raise IntegrityError(
                    f"{model_name} {manifest.version}: {entry.path} is listed in the manifest but missing"
                ) from exc
            actual = sha256_file(target)
            if actual != entry.sha256:
                target.unlink(missing_ok=True)
                raise IntegrityError(
                    f"{model_name} {manifest.version}: {entry.path} has sha256 {actual[:12]}…, "
                    f"the manifest says {entry.sha256[:12]}…; refusing to load it"
                )
        return LocalVersion(dest, manifest)

    # -- writing ----------------------------------------------------------------------
    def register(
        self,
        model_name: str,
        source_dir: str | os.PathLike[str],
        lineage: Lineage,
        metrics: Mapping[str, float] | None = None,
    ) -> Manifest:
        """Publish every file below *source_dir* as a new immutable version.

        The version id is the next free ``v<N>``, claimed with a conditional create so
        concurrent registrations never share one. The manifest is written last.
        """
        source = Path(source_dir)
        files = sorted(p for p in source.rglob("*") if p.is_file())
        if not files:
            raise RegistryError(f"nothing to register: {source} holds no files")
        if any(p.name == MANIFEST for p in files):
            raise RegistryError(
                f"{source} already holds a {MANIFEST}; it is written by the registry"
            )
        version = self._claim_version(model_name)
        base = self._model(model_name, "versions", version)
        entries = []
        for path in files:
            rel = path.relative_to(source).as_posix()
            digest = self.store.publish(join_uri(base, rel), path=str(path))
            entries.append(FileEntry(rel, digest, path.stat().st_size))
        manifest = Manifest(
            model_name=model_name,
            version=version,
            files=tuple(entries),
            lineage=lineage,
            metrics={k: float(v) for k, v in (metrics or {}).items()},
            created_at=time.time(),
        )
        self.store.create(join_uri(base, MANIFEST), manifest.to_json().encode())
        return manifest

    def _claim_version(self, model_name: str) -> str:
        prefix = self._model(model_name, "versions")
        taken = [
            int(m.group(1))
            for uri in self.store.list(prefix)
            if (m := _VERSION_RE.match(uri[len(prefix) :].strip("/").split("/")[0]))
        ]
        number = max(taken, default=0) + 1
        for _ in range(100):
            try:
                self.store.create(join_uri(prefix, f"v{number}", CLAIM), b"")
                return f"v{number}"
            except AlreadyExistsError:
                number += 1
        raise RegistryError(f"could not claim a version id for {model_name} after 100 tries")

    def promote(self, model_name: str, version: str, reason: str) -> ChampionPointer:
        """Point the champion at *version* (which must exist) and record the move."""
        self.manifest(model_name, version)  # raises if the version is not visible
        current = self.champion(model_name)
        pointer = ChampionPointer(
            model_name=model_name,
            version=version,
            previous=current.version if current else None,
            reason=reason,
            updated_at=time.time(),
        )
        body = json.dumps(asdict(pointer), indent=2, sort_keys=True).encode()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(pointer.updated_at))
        self.store.write_bytes(self._model(model_name, "history", f"{stamp}-{version}.json"), body)
        self.store.publish(self._model(model_name, CHAMPION), body)
        return pointer
