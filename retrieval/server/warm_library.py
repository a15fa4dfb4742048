"""The server's Library: each encoder's FAISS index kept in memory until the database generation changes."""
from __future__ import annotations

import logging
import threading
import time

from indexer.store.library import Library
from indexer.store.records import IMAGE
from indexer.store.vectors import VectorIndex

log = logging.getLogger(__name__)

STALE_REBUILD_INTERVAL_S = 30.0  # while a writer runs, rebuild from the database at most this often


class WarmLibrary(Library):
    """A Library whose FAISS indexes (one per encoder: pictures, sounds) stay in memory until the
    database generation changes.

    When the generation moves and the FAISS file on disk already matches it, the file is loaded.
    When the file lags (an `mmsearch index` run is still writing batches), the index is rebuilt
    from the database at most every `stale_rebuild_s` seconds; in between the previous index keeps
    answering (hits of since-deleted items are dropped by `rank`). One thread reloads while the
    others go on with the previous index.
    """

    def __init__(self, folder, *, stale_rebuild_s: float = STALE_REBUILD_INTERVAL_S):
        super().__init__(folder, create=False)
        self.stale_rebuild_s = stale_rebuild_s
        self.reloads = 0
        self._indexes: dict[str, tuple[int, VectorIndex | None]] = {}  # encoder -> (generation, index)
        self._last_rebuild: dict[str, float] = {}
        self._reload_lock = threading.Lock()

    @property
    def cached_index(self) -> VectorIndex | None:
        """The pictures' index in memory (None before the first search)."""
        return self._indexes.get(IMAGE, (None, None))[1]

    def vectors_for_search(self, encoder: str = IMAGE) -> VectorIndex | None:
        generation = self.generation
        known = self._indexes.get(encoder)
        if known is not None and known[0] == generation:
            return known[1]
        if not self._reload_lock.acquire(blocking=known is None):
            return known[1]  # another thread is reloading; answer with the previous index
        try:
            known = self._indexes.get(encoder)
            if known is not None and known[0] == generation:
                return known[1]
            if known is not None and not self._file_matches(generation, encoder) \
                    and time.monotonic() - self._last_rebuild.get(encoder, float("-inf")) < self.stale_rebuild_s:
                return known[1]
            started = time.perf_counter()
            index = super().vectors_for_search(encoder)
            if not self._file_matches(generation, encoder):
                self._last_rebuild[encoder] = time.monotonic()
            self._indexes[encoder] = (generation, index)
            self.reloads += 1
            log.info("%s vector index for generation %d ready in %.2f s (%s vectors)", encoder, generation,
                     time.perf_counter() - started, index.ntotal if index is not None else 0)
            return index
        finally:
            self._reload_lock.release()

    def saved_index_info(self, encoder: str = IMAGE) -> dict | None:
        """What the committed vector index records (kind, spec, generation, ntotal, dim), or None."""
        from indexer.store.index_choice import saved_info

        return saved_info(self.vector_files(encoder))

    def _file_matches(self, generation: int, encoder: str = IMAGE) -> bool:
        saved = self.saved_index_info(encoder)
        return saved is not None and saved.get("generation") == generation
