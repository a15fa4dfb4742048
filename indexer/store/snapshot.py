"""A search's read-only view of the metadata store: plain sqlite3, no SQLAlchemy.

Importing SQLAlchemy and declaring the ORM models costs 0.3-0.7 s of a cold `mmsearch search` on
2 cores, while a plain text search reads four things: the model row, the generation, one info
key and the rows of the hits. `ReadMeta` answers those with sqlite3 and hands every other call
(filters, a FAISS rebuild, writes) to a full `MetaStore`, opened on first need. A database whose
schema is not the current one is opened as a full `MetaStore` at once (it migrates).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

from indexer.store.records import ItemRecord, ModelInfo
from indexer.errors import StoreError

SCHEMA_VERSION = 2  # indexer.store.meta.SCHEMA_VERSION (a test keeps them equal)


def _decode_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")  # as store_meta.decode_text: lossless non-UTF-8 paths


class StaleSchema(Exception):
    pass


class ReadMeta:
    def __init__(self, path: Path, *, timeout_s: float = 30.0):
        self.path = Path(path)
        self._timeout_s = timeout_s
        try:
            self.connection = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None,
                                              check_same_thread=False)
            self.connection.text_factory = _decode_text
            version = self.get_info("schema_version")
        except sqlite3.DatabaseError as exc:
            raise StaleSchema(str(exc)) from exc
        if version != str(SCHEMA_VERSION):
            self.connection.close()
            raise StaleSchema(f"schema {version}")

    @cached_property
    def full(self):
        from indexer.store.meta import MetaStore

        return MetaStore(self.path, timeout_s=self._timeout_s)

    def __getattr__(self, name: str):  # anything not answered here: the full store
        if name in ("full", "connection", "path", "_timeout_s"):
            raise AttributeError(name)
        return getattr(self.full, name)

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
        return int(self.get_info("generation") or 0)

    def model(self) -> ModelInfo | None:
        rows = self._rows("SELECT name, weights, dim, fingerprint FROM models ORDER BY id DESC LIMIT 1")
        return ModelInfo(*rows[0]) if rows else None

    def items(self, item_ids: Sequence[int]) -> dict[int, ItemRecord]:
        out = {}
        ids = [int(item_id) for item_id in item_ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in self._rows("SELECT id, path, size, mtime, width, height, format, modality, indexed_at, taken_at "
                                  f"FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out[row[0]] = ItemRecord(*row)
        return out

    def close(self) -> None:
        self.connection.close()
        if "full" in self.__dict__:
            self.full.close()


def open_for_search(path: Path):
    """A ReadMeta, or the full MetaStore when the schema needs it."""
    try:
        return ReadMeta(path)
    except StaleSchema:
        from indexer.store.meta import MetaStore

        return MetaStore(path)
