"""The model registry: immutable versions on S3 (or a local directory).

Layout below the registry root (e.g. ``s3://closedloop/registry``)::

    models/<model>/versions/<version>/.claim           version id taken (first writer wins)
    models/<model>/versions/<version>/<files…>         model.joblib, detector/…, schema.json, …
    models/<model>/versions/<version>/MANIFEST.json    written last: the version exists
    models/<model>/champion.json                       the served version (moved after a gate)
    models/<model>/history/<ts>-<version>-<id>.json    every pointer move, for audit (append-only)

A version is visible only once its manifest is written, and the manifest is written
after every file with a conditional create, so a crash mid-registration leaves no
visible half version and a version can never be overwritten. The manifest carries the
sha256 of every file; :meth:`Registry.fetch` refuses a file whose digest differs.

A registration that dies part-way leaves an *incomplete* version: a claim and some
files, no manifest. :meth:`Registry.scan` reports it and :meth:`Registry.collect_garbage`
deletes its files once it is older than a minimum age. The claim itself stays, rewritten
as a tombstone, so the version id is never handed out again and a registration that
wakes up after its version was collected fails instead of publishing a manifest over
deleted files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from closedloop.errors import ClosedLoopError
from closedloop.storage import (
    AlreadyExistsError,
    ObjectInfo,
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
GC_MIN_AGE_SECONDS = 3600.0
"""Default minimum age of an incomplete version before garbage collection removes it.

Far longer than a registration takes (seconds to minutes), so a running one is never
touched."""


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


VersionState = Literal["complete", "incomplete", "collected"]


@dataclass(frozen=True)
class VersionStatus:
    """A version folder as the store holds it, whether its registration finished or not.

    Attributes:
        model_name: The model.
        version: The version id.
        state: ``complete`` (its manifest exists), ``incomplete`` (claimed but no
            manifest: a registration still running, or one that died) or ``collected``
            (removed by garbage collection; only its tombstone claim is left).
        prefix: The URI of the version's folder.
        objects: Every object below it, claim and manifest included.
        manifest: The manifest of a complete version, else None.
        manifest_sha256: The sha256 of the manifest's bytes, one digest that covers
            every file of the version; empty unless complete.
    """

    model_name: str
    version: str
    state: VersionState
    prefix: str
    objects: tuple[ObjectInfo, ...]
    manifest: Manifest | None = None
    manifest_sha256: str = ""

    def stored(self) -> dict[str, ObjectInfo]:
        """Return the stored objects by path relative to the version folder."""
        return {o.uri[len(self.prefix) :].strip("/"): o for o in self.objects}

    def files(self) -> dict[str, ObjectInfo]:
        """Return the version's stored files: every object but its claim and manifest."""
        return {p: o for p, o in self.stored().items() if p not in (CLAIM, MANIFEST)}

    @property
    def size(self) -> int:
        """Bytes stored below the version prefix."""
        return sum(o.size for o in self.objects)

    @property
    def last_modified(self) -> float:
        """When the newest object of the version was written (Unix time)."""
        return max((o.modified for o in self.objects), default=0.0)

    @property
    def gate_passed(self) -> bool | None:
        """The gate's verdict recorded at registration, or None if none was recorded."""
        if self.manifest is None:
            return None
        passed = self.manifest.lineage.parameters.get("gate_passed")
        return passed if isinstance(passed, bool) else None

    @property
    def gate_reason(self) -> str:
        """The gate's reason recorded at registration (empty if none)."""
        if self.manifest is None:
            return ""
        return str(self.manifest.lineage.parameters.get("gate_reason", ""))


@dataclass(frozen=True)
class GarbageDecision:
    """What garbage collection did, or would do, with one incomplete version.

    Attributes:
        version: The version id.
        objects: Objects it holds besides its claim (what removal deletes).
        size: Their bytes.
        age_seconds: Seconds since the version's newest object was written.
        remove: Whether it is garbage (on a dry run too).
        removed: Whether its objects were deleted (never on a dry run).
        detail: Why, in a few words.
    """

    version: str
    objects: int
    size: int
    age_seconds: float
    remove: bool
    removed: bool
    detail: str


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


def _is_tombstone(claim: bytes) -> bool:
    """Whether a claim's content marks its version as garbage-collected."""
    if not claim.strip():
        return False
    try:
        content = json.loads(claim)
    except ValueError:
        return False
    return isinstance(content, dict) and "collected_at" in content


def format_span(seconds: float) -> str:
    """Return a duration in its largest sensible unit: 45s, 12m, 1h, 3.5h, 2d."""

    def trim(value: float, unit: str) -> str:
        return f"{value:.1f}".removesuffix(".0") + unit

    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return trim(seconds / 3600, "h")
    return trim(seconds / 86400, "d")


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
        try:
            claim = self.store.read_bytes(join_uri(base, CLAIM))
        except ObjectNotFoundError as exc:
            raise RegistryError(
                f"the claim of {model_name} {version} vanished while this registration ran; "
                "register again"
            ) from exc
        if _is_tombstone(claim):
            raise RegistryError(
                f"{model_name} {version} was garbage-collected while this registration ran "
                f"(it took longer than the collector's minimum age); register again"
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
        # A unique key and a conditional create: two moves in one second both stay on record.
        record = f"{stamp}-{version}-{uuid.uuid4().hex[:8]}.json"
        self.store.create(self._model(model_name, "history", record), body)
        self.store.publish(self._model(model_name, CHAMPION), body)
        return pointer

    def champion_history(self, model_name: str) -> list[ChampionPointer]:
        """Return every recorded move of the champion pointer, oldest first."""
        moves = []
        for uri in self.store.list(self._model(model_name, "history")):
            if uri.endswith(".json"):
                moves.append(ChampionPointer(**json.loads(self.store.read_bytes(uri))))
        return sorted(moves, key=lambda p: p.updated_at)

    def rollback(
        self, model_name: str, version: str, *, by: str, note: str = "", force: bool = False
    ) -> ChampionPointer:
        """Point the champion back at an earlier complete version, through :meth:`promote`.

        The move is recorded like a promotion, with the reason
        ``rollback to <version> by <by>[: <note>]``; a model server following the
        champion loads the version at its next poll.

        Args:
            model_name: The model.
            version: The version to serve again (``v<N>``).
            by: Who rolls back (kept in the audit record).
            note: Why, appended to the reason.
            force: Also roll back to a version the gate rejected.

        Raises:
            VersionNotFoundError: No such version.
            RegistryError: The version is incomplete, collected, already the champion,
                or rejected by the gate (without *force*).
            IntegrityError: A file of its manifest is missing or has the wrong size.
        """
        if not _VERSION_RE.match(version):
            raise RegistryError(f"invalid version {version!r}: roll back to a version id, v<N>")
        status = self.status(model_name, version)
        if status.state == "incomplete":
            raise RegistryError(
                f"{model_name} {version} is incomplete (its registration never wrote a manifest); "
                "roll back to a complete version"
            )
        if status.state == "collected":
            raise RegistryError(
                f"{model_name} {version} was an incomplete registration and has been "
                "garbage-collected; roll back to a complete version"
            )
        assert status.manifest is not None
        current = self.champion(model_name)
        if current is not None and current.version == version:
            raise RegistryError(f"{model_name} {version} is already the champion")
        if status.gate_passed is False and not force:
            raise RegistryError(
                f"the gate rejected {model_name} {version} ({status.gate_reason or 'no reason recorded'}); "
                "roll back to it with force (`--force`) only if you mean to serve it anyway"
            )
        stored = status.stored()
        for entry in status.manifest.files:
            size = stored[entry.path].size if entry.path in stored else None
            if size != entry.size:
                problem = "is missing" if size is None else f"has {size} bytes, not {entry.size}"
                raise IntegrityError(
                    f"{model_name} {version}: {entry.path} {problem}; refusing to roll back to it"
                )
        reason = f"rollback to {version} by {by}" + (f": {note}" if note else "")
        return self.promote(model_name, version, reason)

    # -- inspecting and collecting ------------------------------------------------------
    def scan(self, model_name: str) -> list[VersionStatus]:
        """Return every version folder of *model_name*, complete or not, oldest first."""
        prefix = self._model(model_name, "versions")
        grouped: dict[str, list[ObjectInfo]] = {}
        for info in self.store.list_objects(prefix):
            head = info.uri[len(prefix) :].strip("/").split("/")[0]
            if _VERSION_RE.match(head):
                grouped.setdefault(head, []).append(info)
        return [
            self._status(model_name, version, grouped[version])
            for version in sorted(grouped, key=lambda v: int(v[1:]))
        ]

    def status(self, model_name: str, version: str) -> VersionStatus:
        """Return one version folder's status (``"champion"`` resolves the pointer).

        Raises:
            VersionNotFoundError: Nothing is stored for that version.
        """
        version = self.resolve(model_name, version)
        objects = self.store.list_objects(self._model(model_name, "versions", version))
        if not objects:
            raise VersionNotFoundError(f"{model_name} has no version {version!r} in {self.root}")
        return self._status(model_name, version, objects)

    def _status(self, model_name: str, version: str, objects: list[ObjectInfo]) -> VersionStatus:
        base = self._model(model_name, "versions", version)
        names = {o.uri[len(base) :].strip("/") for o in objects}
        if MANIFEST in names:
            raw = self.store.read_bytes(join_uri(base, MANIFEST))
            return VersionStatus(
                model_name,
                version,
                "complete",
                base,
                tuple(objects),
                Manifest.from_json(raw),
                sha256_bytes(raw),
            )
        collected = CLAIM in names and _is_tombstone(self.store.read_bytes(join_uri(base, CLAIM)))
        return VersionStatus(
            model_name, version, "collected" if collected else "incomplete", base, tuple(objects)
        )

    def collect_garbage(
        self,
        model_name: str,
        *,
        min_age: float = GC_MIN_AGE_SECONDS,
        dry_run: bool = False,
        by: str = "",
        now: float | None = None,
    ) -> list[GarbageDecision]:
        """Delete the files of incomplete versions whose newest object is older than *min_age*.

        A version with a manifest is never touched, nor one written to within
        *min_age* seconds (its registration may still be running). The claim of a
        removed version is kept as a tombstone, so its id is never reused; a
        collection that was itself interrupted is finished on the next call.

        Args:
            model_name: The model.
            min_age: Seconds since an incomplete version's last write before it goes.
            dry_run: Decide, but delete nothing.
            by: Who collects (kept in the tombstone).
            now: The current Unix time (default: the clock).

        Returns:
            One decision per incomplete version (and per collected one with leftovers).
        """
        now = time.time() if now is None else now
        decisions = []
        for status in self.scan(model_name):
            if status.state == "complete":
                continue
            claim = join_uri(status.prefix, CLAIM)
            doomed = [o for o in status.objects if o.uri != claim]
            if status.state == "collected" and not doomed:
                continue
            leftover = status.state == "collected"
            age = max(0.0, now - status.last_modified)
            remove, removed = True, False
            if not leftover and age < min_age:
                remove = False
                detail = (
                    f"kept: written {format_span(age)} ago, under the minimum age of "
                    f"{format_span(min_age)} (its registration may still be running)"
                )
            elif dry_run:
                detail = "would finish an interrupted collection" if leftover else "would remove"
            # Its registration may have finished since the scan: then it is not garbage.
            elif self._remove_incomplete(status.prefix, claim, by, now):
                removed = True
                detail = "finished an interrupted collection" if leftover else "removed"
            else:
                remove, doomed = False, []
                detail = "kept: its manifest appeared meanwhile"
            decisions.append(
                GarbageDecision(
                    version=status.version,
                    objects=len(doomed),
                    size=sum(o.size for o in doomed),
                    age_seconds=age,
                    remove=remove,
                    removed=removed,
                    detail=detail,
                )
            )
        return decisions

    def _remove_incomplete(self, prefix: str, claim: str, by: str, now: float) -> bool:
        """Tombstone the claim and delete the rest; False if the version has a manifest."""
        objects = self.store.list_objects(prefix)
        if any(o.uri == join_uri(prefix, MANIFEST) for o in objects):
            return False
        # The tombstone goes first: a registration that wakes up now sees it and fails.
        tombstone = {"collected_at": now, "by": by, "reason": "incomplete registration"}
        self.store.write_bytes(claim, json.dumps(tombstone, sort_keys=True).encode())
        for info in objects:
            if info.uri != claim:
                self.store.delete(info.uri)
        return True
