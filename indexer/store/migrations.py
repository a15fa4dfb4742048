"""Schema migrations: one function per version step, applied together in one transaction.

`MIGRATIONS[n]` turns a version n-1 database into version n. `MetaStore` runs every step from the
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


MIGRATIONS: dict[int, Callable] = {
    2: _v2_taken_at,
}


def migrate(connection, from_version: int, to_version: int) -> None:
    """Apply every step after from_version up to to_version (the caller owns the transaction)."""
    for version in range(from_version + 1, to_version + 1):
        step = MIGRATIONS.get(version)
        if step is None:
            raise StoreError(f"no migration to schema version {version}; this copy of mmsearch is incomplete")
        log.info("migrating the index database to schema version %d (%s)", version, step.__name__)
        step(connection)
