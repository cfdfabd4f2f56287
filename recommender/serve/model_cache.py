"""The models the API serves, loaded once and reloaded when the registry's CURRENT moves.

How reload works: every call to ``current()`` reads the registry's ``CURRENT`` pointer (one
small file, replaced atomically by the registry, so a read sees the old or the new name).
When the name differs from the loaded one the new version is loaded (numpy arrays, no
Spark, checksums verified) and the next requests use it; requests already running keep the
object they hold. No restart, no polling thread, no lock on the registry.

``get(version)`` loads any version: recommendations use the version whose item vectors are
published in Elasticsearch, which for a few seconds after a promotion is still the previous
one. The two most recently used versions stay in memory for that hand-over.

A version that fails to load is remembered for ``RETRY_FAILED_S`` so that a corrupt model is
not re-hashed on every request; the error (a ``ModelError``, HTTP 503) is re-raised meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from recommender.errors import ModelError
from recommender.model.artifacts import ModelArtifacts
from recommender.model.registry import ModelRegistry

log = logging.getLogger(__name__)
RETRY_FAILED_S = 10.0


class ModelCache:
    """Thread-safe cache of ``ModelArtifacts`` by version, following ``CURRENT``."""

    def __init__(self, registry: ModelRegistry, keep: int = 2) -> None:
        self.registry = registry
        self.keep = keep
        self._models: OrderedDict[str, ModelArtifacts] = OrderedDict()
        self._failed: dict[str, tuple[float, ModelError]] = {}
        self._lock = threading.Lock()  # guards the dicts
        self._load_lock = threading.Lock()  # one load at a time: no duplicate work

    def current_version(self) -> str | None:
        """The registry's ``CURRENT`` right now (None before the first promotion)."""
        return self.registry.current_version()

    def current(self) -> ModelArtifacts:
        """The artifacts of ``CURRENT``; ``ModelError`` (503) when nothing is promoted."""
        version = self.current_version()
        if version is None:
            raise ModelError(f"no model has been promoted yet in {self.registry.root} "
                             "(run `recommender train`)")
        return self.get(version)

    def get(self, version: str) -> ModelArtifacts:
        """The artifacts of ``version``, loading them on first use."""
        cached = self._cached(version)
        if cached is not None:
            return cached
        with self._load_lock:
            cached = self._cached(version)
            if cached is not None:
                return cached
            try:
                artifacts = ModelArtifacts.load(self.registry.version_dir(version))
            except ModelError as exc:
                with self._lock:
                    self._failed[version] = (time.monotonic(), exc)
                log.error("cannot load model %s: %s", version, exc)
                raise
            log.info("serving model %s (ranking rank %d, rating rank %d, %d movies, %d users)",
                     version, artifacts.ranking.rank, artifacts.rating.rank,
                     len(artifacts.item_ids), len(artifacts.user_ids))
            with self._lock:
                self._failed.pop(version, None)
                self._models[version] = artifacts
                while len(self._models) > self.keep:
                    self._models.popitem(last=False)
            return artifacts

    def loaded_versions(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def _cached(self, version: str) -> ModelArtifacts | None:
        with self._lock:
            if version in self._models:
                self._models.move_to_end(version)
                return self._models[version]
            failed = self._failed.get(version)
        if failed is not None and time.monotonic() - failed[0] < RETRY_FAILED_S:
            raise failed[1]
        return None
