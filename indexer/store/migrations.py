"""Schema migrations: one function per version step, applied together in one transaction.

`MIGRATIONS[n]` turns a version n-1 database into version n. `Database` runs every step from the
file's version up to `SCHEMA_VERSION` inside a single `BEGIN IMMEDIATE` transaction, then stamps
the new version: a migration that fails (or a process killed half-way) leaves the old database
exactly as it was. Steps take a SQLAlchemy connection already inside that transaction and must
not commit. Only ever add steps; never edit one that has shipped.
"""
from __future__ import annotations

import logging
from typing import Callable

from indexer.errors import StoreError

log = logging.getLogger(__name__)


def _columns(connection, table: str) -> set[str]:
    return {row[1] for row in connection.exec_driver_sql(f"PRAGMA table_info({table})")}


def _v2_taken_at(connection) -> None:
    """When a photo was taken (EXIF DateTimeOriginal, unix seconds), indexed for date filters.

    Rows written before stay NULL until their file is decoded again (changed, or `reindex`).
    """
    if "taken_at" not in _columns(connection, "items"):
        connection.exec_driver_sql("ALTER TABLE items ADD COLUMN taken_at FLOAT")
    connection.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_items_taken_at ON items (taken_at)")


_V3_VECTORS = """CREATE TABLE {name} (
    id INTEGER NOT NULL PRIMARY KEY{autoincrement},
    item_id INTEGER NOT NULL,
    encoder VARCHAR NOT NULL,
    start_s FLOAT,
    vector BLOB NOT NULL,
    FOREIGN KEY(item_id) REFERENCES items (id) ON DELETE CASCADE
)"""


def _v3_vectors_per_item(connection) -> None:
    """Any number of vectors per item (sound windows, video frames), each with its encoder and moment.

    The vectors tables were keyed by item id; they get ids of their own (a picture's vector keeps its
    item's id, so the vector file of the old layout stays valid), an `encoder` ('image') and a
    `start_s` (NULL: the whole item). Items get `duration_s`, models the `encoder` they fill.
    """
    if "duration_s" not in _columns(connection, "items"):
        connection.exec_driver_sql("ALTER TABLE items ADD COLUMN duration_s FLOAT")
    if "models" in _tables(connection) and "encoder" not in _columns(connection, "models"):
        connection.exec_driver_sql("ALTER TABLE models ADD COLUMN encoder VARCHAR NOT NULL DEFAULT 'image'")
    for table, autoincrement in (("vectors", " AUTOINCREMENT"), ("staged_vectors", "")):
        if table not in _tables(connection) or "encoder" in _columns(connection, table):
            continue
        connection.exec_driver_sql(_V3_VECTORS.format(name=f"{table}_v3", autoincrement=autoincrement))
        connection.exec_driver_sql(f"INSERT INTO {table}_v3 (id, item_id, encoder, start_s, vector) "
                                   f"SELECT item_id, item_id, 'image', NULL, vector FROM {table}")
        connection.exec_driver_sql(f"DROP TABLE {table}")
        connection.exec_driver_sql(f"ALTER TABLE {table}_v3 RENAME TO {table}")
        connection.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS ix_{table}_item_id ON {table} (item_id)")


_V4_WORDS = """CREATE TABLE item_words (
    item_id INTEGER NOT NULL PRIMARY KEY,
    content_hash VARCHAR,
    settings VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    text TEXT NOT NULL,
    error TEXT,
    seconds FLOAT NOT NULL,
    read_at FLOAT NOT NULL,
    FOREIGN KEY(item_id) REFERENCES items (id) ON DELETE CASCADE
)"""


def _v4_words(connection) -> None:
    """The words read in pictures (OCR) and their FTS5 trigram index. Nothing is read here: the
    next `mmsearch index` run reads the pictures (--ocr auto|on|off)."""
    from indexer.store.words import create_fts

    if "item_words" not in _tables(connection):
        connection.exec_driver_sql(_V4_WORDS)
    create_fts(connection)


def _tables(connection) -> set[str]:
    return {row[0] for row in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}


MIGRATIONS: dict[int, Callable] = {
    2: _v2_taken_at,
    3: _v3_vectors_per_item,
    4: _v4_words,
}


def migrate(connection, from_version: int, to_version: int) -> None:
    """Apply every step after from_version up to to_version (the caller owns the transaction)."""
    for version in range(from_version + 1, to_version + 1):
        step = MIGRATIONS.get(version)
        if step is None:
            raise StoreError(f"no migration to schema version {version}; this copy of mmsearch is incomplete")
        log.info("migrating the index database to schema version %d (%s)", version, step.__name__)
        step(connection)
