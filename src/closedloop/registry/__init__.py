"""The model registry: immutable versions with a manifest, and a champion pointer."""

from closedloop.registry.registry import (
    CHAMPION_ALIAS,
    ChampionPointer,
    FileEntry,
    IntegrityError,
    Lineage,
    LocalVersion,
    Manifest,
    Registry,
    RegistryError,
    VersionNotFoundError,
    code_version,
)

__all__ = [
    "CHAMPION_ALIAS",
    "ChampionPointer",
    "FileEntry",
    "IntegrityError",
    "Lineage",
    "LocalVersion",
    "Manifest",
    "Registry",
    "RegistryError",
    "VersionNotFoundError",
    "code_version",
]
