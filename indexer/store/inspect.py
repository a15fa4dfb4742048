"""Read-only facts about an index database for `mmsearch check`, all from one snapshot.

Plain sqlite3 on a `mode=ro` connection: it never writes, never migrates, and works beside a
running writer (WAL: one BEGIN sees one committed state). On PostgreSQL the same SQL runs in one
REPEATABLE READ READ ONLY transaction (`database.PostgresReadOnly`); its integrity is the server's
job (no PRAGMA integrity_check there), so it reports ["ok"].
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from indexer.store.database import connect_read_only
from indexer.store.records import IMAGE, ModelInfo
from indexer.store.version import SCHEMA_VERSION


@dataclass
class DatabaseFacts:
    """What `inspect_database` read from one consistent snapshot of an index database."""

    schema_version: int | None
    generation: int = 0
    integrity: list[str] = field(default_factory=list)  # ["ok"] when SQLite finds nothing wrong
    model: ModelInfo | None = None  # the image encoder's model
    models: dict[str, ModelInfo] = field(default_factory=dict)  # every encoder's model
    staged_model: ModelInfo | None = None
    rows: int = 0
    vectors: int = 0
    failed: int = 0
    staged: int = 0
    vector_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # of the image encoder
    encoder_vector_ids: dict[str, np.ndarray] = field(default_factory=dict)  # of every encoder with a model
    orphan_vectors: list[int] = field(default_factory=list)
    orphan_staged: list[int] = field(default_factory=list)
    rows_without_vector: list[tuple[int, str]] = field(default_factory=list)
    bad_vectors: list[tuple[int, int]] = field(default_factory=list)  # (vector id, blob bytes)
    bad_staged: int = 0
    bad_info: list[str] = field(default_factory=list)  # schema_info values that cannot be right
    last_run: dict | None = None


def _number(info: dict, key: str, default: int, facts_bad: list[str]) -> int:
    value = info.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        facts_bad.append(f"{key} = {value!r} is not a number")
        return default


def _tables(connection) -> set[str]:
    if getattr(connection, "is_postgres", False):
        return {row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
    return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _integrity(connection, quick: bool) -> list[str]:
    if getattr(connection, "is_postgres", False):
        return ["ok"]
    return [row[0] for row in connection.execute("PRAGMA quick_check" if quick else "PRAGMA integrity_check")]


def inspect_database(path: Path | str, *, quick: bool = False) -> DatabaseFacts:
    """Read-only facts for `mmsearch check`, all from one snapshot (a writer may be running)."""
    connection = connect_read_only(path)
    try:
        connection.execute("BEGIN")  # WAL: every read below sees the same committed state
        try:
            tables = _tables(connection)
            integrity = _integrity(connection, quick)
            if "schema_info" not in tables:
                return DatabaseFacts(schema_version=None, integrity=integrity)
            info = dict(connection.execute("SELECT key, value FROM schema_info"))
            bad: list[str] = []
            facts = DatabaseFacts(schema_version=_number(info, "schema_version", 1, bad),
                                  generation=_number(info, "generation", 0, bad), integrity=integrity, bad_info=bad)
            if facts.schema_version < 1:
                bad.append(f"schema_version = {facts.schema_version} is not a version mmsearch ever wrote")
            if bad or facts.schema_version != SCHEMA_VERSION or not {"items", "vectors", "models"} <= tables:
                return facts  # an older schema is migrated (and then checked) by the next command that opens it
            for name, weights, dim, fingerprint, encoder in connection.execute(
                    "SELECT name, weights, dim, fingerprint, encoder FROM models ORDER BY id"):
                facts.models[encoder] = ModelInfo(name, weights, int(dim), fingerprint)  # the last row per encoder wins
            facts.model = facts.models.get(IMAGE)
            if info.get("staged_model"):
                data = json.loads(info["staged_model"])
                facts.staged_model = ModelInfo(data["name"], data["weights"], int(data["dim"]), data["fingerprint"])
            facts.rows, facts.failed = connection.execute("SELECT count(*), count(error) FROM items").fetchone()
            facts.vectors = connection.execute("SELECT count(*) FROM vectors").fetchone()[0]
            facts.vector_ids = np.fromiter((row[0] for row in connection.execute(
                "SELECT id FROM vectors WHERE encoder = ? ORDER BY id", (IMAGE,))), dtype=np.int64)
            for encoder in facts.models:
                facts.encoder_vector_ids[encoder] = facts.vector_ids if encoder == IMAGE else np.fromiter(
                    (row[0] for row in connection.execute("SELECT id FROM vectors WHERE encoder = ? ORDER BY id",
                                                          (encoder,))), dtype=np.int64)
            facts.orphan_vectors = [row[0] for row in connection.execute(
                "SELECT id FROM vectors WHERE item_id NOT IN (SELECT id FROM items)")]
            facts.rows_without_vector = [tuple(row) for row in connection.execute(
                "SELECT id, path FROM items WHERE error IS NULL AND id NOT IN (SELECT item_id FROM vectors)")]
            for encoder, model in facts.models.items():
                facts.bad_vectors.extend(tuple(row) for row in connection.execute(
                    "SELECT id, length(vector) FROM vectors WHERE encoder = ? AND length(vector) != ?",
                    (encoder, model.dim * 4)))
            if "staged_vectors" in tables:
                facts.staged = connection.execute("SELECT count(*) FROM staged_vectors").fetchone()[0]
                facts.orphan_staged = [row[0] for row in connection.execute(
                    "SELECT id FROM staged_vectors WHERE item_id NOT IN (SELECT id FROM items)")]
                if facts.staged_model is not None:
                    facts.bad_staged = connection.execute(
                        "SELECT count(*) FROM staged_vectors WHERE length(vector) != ?",
                        (facts.staged_model.dim * 4,)).fetchone()[0]
            if "runs" in tables:
                run = connection.execute(
                    "SELECT command, started_at, finished_at FROM runs ORDER BY id DESC LIMIT 1").fetchone()
                facts.last_run = {"command": run[0], "started_at": run[1], "finished_at": run[2]} if run else None
            return facts
        finally:
            connection.execute("ROLLBACK")
    finally:
        connection.close()


def iter_item_paths(path: Path | str, chunk: int = 10_000) -> Iterator[list[tuple[int, str, int, float]]]:
    """(id, path, size, mtime) of every row, in chunks, read-only (for the files-on-disk check)."""
    connection = connect_read_only(path)
    try:
        last = -1
        while True:
            rows = connection.execute("SELECT id, path, size, mtime FROM items WHERE id > ? ORDER BY id LIMIT ?",
                                      (last, chunk)).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]
    finally:
        connection.close()


def read_vectors(path: Path | str, vector_ids, dim: int) -> np.ndarray:
    """The stored vectors of `vector_ids` ([n, dim] float32, in the given order), read-only; ids
    without a `dim`-d vector come back as NaN rows (for comparing a vector file's content)."""
    ids = [int(vector_id) for vector_id in vector_ids]
    out = np.full((len(ids), dim), np.nan, dtype=np.float32)
    position = {vector_id: index for index, vector_id in enumerate(ids)}
    connection = connect_read_only(path)
    try:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for vector_id, blob in connection.execute(
                    f"SELECT id, vector FROM vectors WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                if len(blob) == dim * 4:
                    out[position[vector_id]] = np.frombuffer(blob, dtype=np.float32)
    finally:
        connection.close()
    return out
