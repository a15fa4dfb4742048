"""A search's hot reads with plain sqlite3, no SQLAlchemy.

Importing SQLAlchemy and declaring the ORM models costs 0.3-0.7 s of a cold `mmsearch search` on
2 cores, while a plain text search reads four things: the model row, the generation, one info
key and the rows of the hits. `Snapshot` answers those with sqlite3; `SnapshotReads` serves the
hits from it and every other read (filters, a vector file rebuild) through SQLAlchemy, opened on
first need. A database whose schema is not the current one is not opened here (`StaleSchema`):
the full store opens it and migrates.
"""
from __future__ import annotations

import sqlite3
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from indexer.errors import StoreError
from indexer.store.records import IMAGE, ItemRecord, ModelInfo, VectorHit
from indexer.store.sampling import sample_candidates, unpack_sample
from indexer.store.version import SCHEMA_VERSION, parse_generation

ITEM_SQL = "i.id, i.path, i.size, i.mtime, i.width, i.height, i.format, i.modality, i.indexed_at, i.taken_at, i.duration_s"


def _decode_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")  # as schema.decode_text: lossless non-UTF-8 paths


class StaleSchema(Exception):
    pass


class Snapshot:
    def __init__(self, path: Path, *, timeout_s: float = 30.0):
        self.path = Path(path)
        try:
            self.connection = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None,
                                              check_same_thread=False)
            self.connection.text_factory = _decode_text
            version = self.get_info("schema_version")
        except (sqlite3.DatabaseError, StoreError) as exc:
            raise StaleSchema(str(exc)) from exc
        if version != str(SCHEMA_VERSION):
            self.connection.close()
            raise StaleSchema(f"schema {version}")

    def _rows(self, sql: str, params: Sequence = ()) -> list[tuple]:
        try:
            return self.connection.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"database error on {self.path}: {exc}") from exc

    def get_info(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM schema_info WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    @property
    def generation(self) -> int:
        return parse_generation(self.get_info("generation"), self.path)

    def model(self, encoder: str = IMAGE) -> ModelInfo | None:
        rows = self._rows("SELECT name, weights, dim, fingerprint FROM models WHERE encoder = ? ORDER BY id DESC LIMIT 1",
                          (encoder,))
        return ModelInfo(*rows[0]) if rows else None

    def items(self, item_ids: Sequence[int]) -> dict[int, ItemRecord]:
        out = {}
        ids = [int(item_id) for item_id in item_ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in self._rows(f"SELECT {ITEM_SQL} FROM items i WHERE i.id IN ({','.join('?' * len(chunk))})", chunk):
                out[row[0]] = ItemRecord(*row)
        return out

    def hits(self, vector_ids: Sequence[int]) -> dict[int, VectorHit]:
        out = {}
        ids = [int(vector_id) for vector_id in vector_ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in self._rows(f"SELECT v.id, v.start_s, {ITEM_SQL} FROM vectors v JOIN items i ON i.id = v.item_id "
                                  f"WHERE v.id IN ({','.join('?' * len(chunk))})", chunk):
                out[row[0]] = VectorHit(ItemRecord(*row[2:]), row[1])
        return out

    def sample_vectors(self, dim: int, count: int, seed: int, encoders: Sequence[str] = (IMAGE,)) -> np.ndarray:
        """As `ItemReads.sample_vectors`, with sqlite3."""
        top = self._rows("SELECT max(id) FROM vectors")[0][0] or 0
        candidates = sample_candidates(top, count, seed)
        kinds = list(encoders)
        where = f"encoder IN ({','.join('?' * len(kinds))})"
        if candidates is None:
            rows = self._rows(f"SELECT id, vector FROM vectors WHERE {where}", kinds)
        else:
            rows = []
            ids = candidates.tolist()
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                rows.extend(self._rows(f"SELECT id, vector FROM vectors WHERE {where} AND id IN "
                                       f"({','.join('?' * len(chunk))})", kinds + chunk))
        return unpack_sample(rows, dim, count)

    def close(self) -> None:
        self.connection.close()


class SnapshotReads:
    """The reads of `indexer.store.reads.ItemReads`: items and hits from a Snapshot, every other one
    through an ItemReads on SQLAlchemy, opened on first need."""

    def __init__(self, snapshot: Snapshot, open_db: Callable):
        self.snapshot = snapshot
        self._open_db = open_db

    @cached_property
    def full(self):
        from indexer.store.reads import ItemReads

        return ItemReads(self._open_db())

    def __getattr__(self, name: str):
        if name in ("full", "snapshot", "_open_db"):
            raise AttributeError(name)
        return getattr(self.full, name)

    def items(self, item_ids: Sequence[int]) -> dict[int, ItemRecord]:
        return self.snapshot.items(item_ids)

    def hits(self, vector_ids: Sequence[int]) -> dict[int, VectorHit]:
        return self.snapshot.hits(vector_ids)

    def sample_vectors(self, dim: int, count: int, seed: int, encoders: Sequence[str] = (IMAGE,)):
        return self.snapshot.sample_vectors(dim, count, seed, encoders)
