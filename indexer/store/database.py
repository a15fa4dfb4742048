"""One index's metadata database: the connection, its transactions, its info keys and its model.

SQLite through SQLAlchemy 2. Every write that spans rows is one transaction (`transaction()`);
a full disk, a read-only folder or a damaged file becomes a `StoreError` and SQLite rolls back.
The other store modules (items, runs, staging, reads) each hold one job and reach the database
through a `Database`; nothing outside `indexer.store` opens it.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

from sqlalchemy import create_engine, event, select
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from indexer.errors import StoreError
from indexer.store.records import IMAGE, ModelInfo, check_same_model
from indexer.store.schema import SCHEMA_VERSION, Base, FsText, ModelRow, SchemaInfo, decode_text
from indexer.store.version import parse_generation

log = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK = 500  # ids per IN (...) clause: far below SQLite's bound-parameter limit


def in_chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[list[T]]:
    """`values` in lists of at most `size` (for IN (...) clauses)."""
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start:start + size]


def insert_rows(session: Session, table, rows: list[dict]) -> None:
    """INSERT many rows through the driver's executemany: the ORM's bulk insert spent more Python
    time per row than SQLite did, and a GPU index run writes thousands of rows a second.

    Binds as the columns' types do (FsText: bytes cast to TEXT), so the rows are the same as the
    ORM would write; every row has the first row's keys.
    """
    if not rows:
        return
    columns = list(rows[0])
    processors = []
    placeholders = []
    for name in columns:
        column = table.c[name]
        if isinstance(column.type, FsText):
            processors.append(column.type.process_bind_param)
            placeholders.append("CAST(? AS TEXT)")
        else:
            processors.append(None)
            placeholders.append("?")
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(placeholders)})"
    values = [tuple(value if process is None else process(value, None)
                    for process, value in zip(processors, (row[name] for name in columns))) for row in rows]
    session.connection().exec_driver_sql(sql, values)


def vector_to_blob(vector) -> bytes:
    import numpy as np

    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


class Database:
    """The SQLite database of one index."""

    def __init__(self, path: Path, *, timeout_s: float = 30.0):
        self.path = Path(path)
        self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": timeout_s})
        event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            self._ensure_schema()
        except DatabaseError as exc:
            self.engine.dispose()
            raise StoreError(f"cannot open database {self.path}: {explain_sqlite_error(exc.orig, self.path)}") from exc
        except BaseException:
            self.engine.dispose()
            raise

    # --- transactions -------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction; a full disk, a read-only folder or a damaged file is a StoreError
        (SQLite rolls the transaction back: nothing is half-written)."""
        try:
            with Session(self.engine) as session, session.begin():
                yield session
        except IntegrityError:
            raise
        except DatabaseError as exc:
            raise StoreError(explain_sqlite_error(exc.orig, self.path)) from exc

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        try:
            with Session(self.engine) as session:
                yield session
        except IntegrityError:
            raise
        except DatabaseError as exc:
            raise StoreError(explain_sqlite_error(exc.orig, self.path)) from exc

    def close(self) -> None:
        self.engine.dispose()

    # --- schema -------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        """Create a new database, or migrate an older one, in one transaction; refuse a newer one.

        An up-to-date database is only read here, so read-only commands work on a read-only copy.
        """
        with self.engine.connect() as connection:
            if _schema_version(connection, self.path) == SCHEMA_VERSION:
                return
        from indexer.store.migrations import migrate

        with self.engine.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # one migrator at a time; re-read under the lock
            try:
                version = _schema_version(connection, self.path)
                if version is None and "items" in _tables(connection):
                    version = 1  # tables of a v1 run killed before it stamped its version
                if version is not None and version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} was written by a newer mmsearch (schema {version}, this one knows "
                        f"{SCHEMA_VERSION}); upgrade mmsearch"
                    )
                if version is not None and version < SCHEMA_VERSION:
                    migrate(connection, version, SCHEMA_VERSION)
                Base.metadata.create_all(connection)
                connection.exec_driver_sql(
                    "INSERT OR REPLACE INTO schema_info (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                connection.exec_driver_sql("INSERT OR IGNORE INTO schema_info (key, value) VALUES ('generation', '0')")
                connection.commit()
            except BaseException:
                connection.rollback()
                raise

    @property
    def schema_version(self) -> int:
        return int(self.get_info("schema_version") or 0)

    # --- info keys ----------------------------------------------------------------------
    def get_info(self, key: str) -> str | None:
        with self.reading() as session:
            row = session.get(SchemaInfo, key)
            return row.value if row else None

    def set_info(self, key: str, value: str) -> None:
        with self.transaction() as session:
            session.merge(SchemaInfo(key=key, value=value))

    def delete_info(self, key: str) -> None:
        with self.transaction() as session:
            row = session.get(SchemaInfo, key)
            if row is not None:
                session.delete(row)

    @property
    def generation(self) -> int:
        """Changed by every transaction that changes vectors; a vector file records the one it holds."""
        return parse_generation(self.get_info("generation"), self.path)

    @staticmethod
    def bump_generation(session: Session) -> int:
        """Move the generation on inside `session`'s transaction, by a random step.

        Random, not +1: after a power cut loses the last commits, the next commit must not land on
        the number a vector file written before the cut still carries (it would be trusted while
        its content differs). Two commits meet the same number with odds of about 2^-31.
        """
        row = session.get(SchemaInfo, "generation")
        row.value = str(parse_generation(row.value) + 1 + secrets.randbelow(2**31))
        return int(row.value)

    # --- the model ----------------------------------------------------------------------
    def model(self, encoder: str = IMAGE) -> ModelInfo | None:
        with self.reading() as session:
            row = session.scalars(select(ModelRow).where(ModelRow.encoder == encoder).order_by(ModelRow.id.desc())).first()
            return ModelInfo(row.name, row.weights, row.dim, row.fingerprint) if row else None

    def bind_model(self, info: ModelInfo, encoder: str = IMAGE) -> None:
        """Record the model that fills `encoder`'s vectors on first use; refuse a different one afterwards."""
        current = self.model(encoder)
        if current is None:
            with self.transaction() as session:
                session.add(ModelRow(name=info.name, weights=info.weights, dim=info.dim, encoder=encoder,
                                     fingerprint=info.fingerprint, created_at=time.time()))
            return
        check_same_model(current, info)


def explain_sqlite_error(error, path: Path) -> str:
    """A SQLite failure in words a person can act on."""
    message = str(error)
    lowered = message.lower()
    if "disk is full" in lowered or "database or disk is full" in lowered:
        return (f"the disk holding {Path(path).parent} is full (SQLite: {message}); the transaction was rolled "
                f"back and everything committed before is intact: free some space and run the command again")
    if "readonly" in lowered or "read-only" in lowered:
        return (f"cannot write to {path}: the index folder or database file is read-only (SQLite: {message}); "
                f"the database is unchanged")
    if "locked" in lowered or "busy" in lowered:
        return f"{path} stayed busy (another process held it too long; SQLite: {message}); try again"
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return (f"{path} is damaged (SQLite: {message}); it cannot be repaired: move the index folder aside "
                f"(or restore a backup) and run `mmsearch index` again")
    if "unable to open" in lowered:
        return f"cannot open {path} (SQLite: {message}); check the folder exists and is readable"
    return f"database error on {path}: {message}"


def _schema_version(connection, path: Path | str = "the index") -> int | None:
    """The version stamped in an open database; None for a new (empty) one."""
    try:
        row = connection.exec_driver_sql("SELECT value FROM schema_info WHERE key = 'schema_version'").first()
    except OperationalError as exc:
        if "no such table" in str(exc.orig):
            return None
        raise
    if not row:
        return None
    try:
        version = int(row[0])
    except ValueError:
        raise StoreError(f"{path}: schema_version {row[0]!r} is not a number: this is not a database mmsearch "
                         f"wrote, or it was damaged; move the index folder aside and index again") from None
    if version < 1:
        raise StoreError(f"{path}: schema_version {version} is not one mmsearch ever wrote (damaged or edited); "
                         f"move the index folder aside and index again")
    return version


def _tables(connection) -> set[str]:
    return {row[0] for row in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.text_factory = decode_text
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection that cannot write (mode=ro) and reads non-UTF-8 paths losslessly."""
    connection = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True, isolation_level=None,
                                 timeout=30.0)
    connection.text_factory = decode_text
    return connection
