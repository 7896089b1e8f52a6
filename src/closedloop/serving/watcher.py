"""The champion watcher: load the wanted version in the background and swap it in.

One :class:`VersionWatcher` per serving process. Its thread resolves the wanted version
(``champion`` or a pinned ``v<N>``), loads a new one completely with
:func:`closedloop.serving.loading.load_version` and only then replaces one reference,
so a request served from :attr:`VersionWatcher.served` is answered by one version from
start to end. A version that fails its checks is refused for good and the previous one
keeps serving; an unreachable store is retried with a backoff.
"""

from __future__ import annotations

import logging
import threading
import time

from closedloop.registry import (
    CHAMPION_ALIAS,
    IntegrityError,
    Registry,
    RegistryError,
    VersionNotFoundError,
)
from closedloop.serving import metrics
from closedloop.serving.loading import ArtifactError, LoadFailure, ServedVersion, load_version
from closedloop.storage import StorageError

logger = logging.getLogger(__name__)

_FIRST_RETRY_SECONDS = 1.0
_MAX_RETRY_SECONDS = 30.0


class VersionWatcher:
    """Keep the wanted version of one model loaded.

    Args:
        registry: Where versions live.
        model_name: Registered model name.
        version: ``champion`` or ``v<N>``.
        poll_seconds: Champion poll interval; 0 reads the pointer once.
    """

    def __init__(self, registry: Registry, model_name: str, version: str, poll_seconds: float):
        self.registry = registry
        self.model_name = model_name
        self.version = version
        self.poll_seconds = poll_seconds
        self.served: ServedVersion | None = None
        self.failure: LoadFailure | None = None
        self._refused: dict[str, LoadFailure] = {}

    def start(self) -> None:
        """Start the background thread (daemon)."""
        threading.Thread(target=self._watch, name="closedloop-model-watch", daemon=True).start()
        logger.info(
            "loading %s %s from %s (champion poll every %gs)",
            self.model_name,
            self.version,
            self.registry.root,
            self.poll_seconds,
        )

    @property
    def follows_champion(self) -> bool:
        """Whether the pointer is read again and again."""
        return self.version == CHAMPION_ALIAS and self.poll_seconds > 0

    def _watch(self) -> None:
        retry = _FIRST_RETRY_SECONDS
        while True:
            keep_watching = self.refresh()
            if not keep_watching:
                return
            if self.served is None:
                delay, retry = retry, min(retry * 2, _MAX_RETRY_SECONDS)
            else:
                delay, retry = self.poll_seconds, _FIRST_RETRY_SECONDS
            time.sleep(delay)

    def refresh(self) -> bool:
        """Load the wanted version if it is not the served one; return whether to go on."""
        current = self.served
        try:
            target = self.registry.resolve(self.model_name, self.version)
        except VersionNotFoundError as exc:
            self._note_failure(LoadFailure(self.version, str(exc), permanent=False))
            return True
        except (StorageError, RegistryError) as exc:
            permanent = not isinstance(exc, StorageError)
            self._note_failure(LoadFailure(self.version, str(exc), permanent))
            return not permanent or self.follows_champion
        if current is not None and current.version == target:
            self._set_failure(None)
            return self.follows_champion
        if target in self._refused:
            self._set_failure(self._refused[target])
            return self.follows_champion
        try:
            new = load_version(self.registry, self.model_name, target)
        except StorageError as exc:
            self._note_failure(LoadFailure(target, str(exc), permanent=False))
            return True
        except VersionNotFoundError as exc:
            # A pinned version that does not exist never will; a champion pointer may
            # name a version whose manifest is not visible yet.
            pinned = self.version != CHAMPION_ALIAS
            self._note_failure(LoadFailure(target, str(exc), permanent=pinned))
            return not pinned
        except (IntegrityError, RegistryError, ArtifactError) as exc:
            # Their messages name the model and the version already.
            failure = LoadFailure(target, f"refused: {exc}", permanent=True)
            self._refused[target] = failure
            self._note_failure(failure)
            return self.follows_champion
        self.served = new
        self._set_failure(None)
        metrics.MODEL_SWAPS.labels(new.version).inc()
        metrics.SERVED_VERSION.set(float(new.version[1:]))
        if current is None:
            logger.info("serving %s %s", self.model_name, new.version)
        else:
            logger.info(
                "swapped %s from %s to %s without a restart",
                self.model_name,
                current.version,
                new.version,
            )
        return self.follows_champion

    def _set_failure(self, failure: LoadFailure | None) -> None:
        self.failure = failure
        metrics.LOAD_FAILING.set(float(failure is not None))

    def _note_failure(self, failure: LoadFailure) -> None:
        previous = self.failure
        self._set_failure(failure)
        reason = "refused" if failure.permanent else "unavailable"
        metrics.LOAD_FAILURES.labels(failure.version, reason).inc()
        if previous == failure:
            return
        served = self.served
        if served is not None:
            logger.error(
                "keeping %s %s: loading %s failed: %s",
                served.model_name,
                served.version,
                failure.version,
                failure.message,
            )
        else:
            logger.error(
                "cannot serve %s yet (%s): %s",
                self.model_name,
                "refused" if failure.permanent else "will retry",
                failure.message,
            )
