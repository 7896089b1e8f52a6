"""The model registry: immutable versions with a manifest, and a champion pointer."""

from closedloop.registry.registry import (
    CHAMPION_ALIAS,
    GC_MIN_AGE_SECONDS,
    ChampionPointer,
    FileEntry,
    GarbageDecision,
    IntegrityError,
    Lineage,
    LocalVersion,
    Manifest,
    Registry,
    RegistryError,
    VersionNotFoundError,
    VersionState,
    VersionStatus,
    code_version,
    format_span,
)

__all__ = [
    "CHAMPION_ALIAS",
    "GC_MIN_AGE_SECONDS",
    "ChampionPointer",
    "FileEntry",
    "GarbageDecision",
    "IntegrityError",
    "Lineage",
    "LocalVersion",
    "Manifest",
    "Registry",
    "RegistryError",
    "VersionNotFoundError",
    "VersionState",
    "VersionStatus",
    "code_version",
    "format_span",
]
