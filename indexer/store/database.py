"""One index's metadata database: the connection, its transactions, its info keys and its model.

SQLite through SQLAlchemy 2 (a file in the index folder), or PostgreSQL through psycopg 3 where the
index was given a URL (indexer.store.location). Every write that spans rows is one transaction
(`transaction()`); a full disk, a read-only folder, a damaged file or a lost server becomes a
`StoreError` and the database rolls back. The other store modules (items, runs, staging, reads)
each hold one job and reach the database through a `Database`; nothing outside `indexer.store`
opens it. Raw SQL is written once with `?` placeholders; `driver_sql` adapts it to psycopg's `%s`.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Session

from indexer.errors import DatabaseUnreachableError, DatabaseURLError, StoreError
from indexer.store.records import IMAGE, ModelInfo, check_same_model
from indexer.store.schema import SCHEMA_VERSION, Base, FsText, ModelRow, SchemaInfo, decode_text
from indexer.store.sql import POSTGRES, driver_sql, run_sql
from indexer.store.urls import redact
from indexer.store.version import parse_generation

log = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK = 500  # ids per IN (...) clause: far below SQLite's bound-parameter limit
MIGRATION_LOCK = 7_351_942  # pg_advisory_xact_lock key: one schema maker at a time on a PostgreSQL database


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
    postgres = session.connection().dialect.name == POSTGRES
    for name in columns:
        column = table.c[name]
        if isinstance(column.type, FsText) and not postgres:
            processors.append(column.type.process_bind_param)
            placeholders.append("CAST(? AS TEXT)")
        else:
            processors.append(None)
            placeholders.append("?")
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(placeholders)})"
    values = [tuple(value if process is None else process(value, None)
                    for process, value in zip(processors, (row[name] for name in columns))) for row in rows]
    run_sql(session, sql, values)


def vector_to_blob(vector) -> bytes:
    import numpy as np

    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


class Database:
    """The metadata database of one index: the SQLite file at `path`, or the PostgreSQL database at `url`."""

    def __init__(self, path: Path | None = None, *, url: str | None = None, timeout_s: float = 30.0):
        if (path is None) == (url is None):
            raise ValueError("give the SQLite file's path or a PostgreSQL URL")
        if url is not None:
            self.path = redact(url)  # what messages name: the server and database, never the password
            self.engine = _postgres_engine(url, timeout_s)
        else:
            self.path = Path(path)
            self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": timeout_s})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            self._ensure_schema()
        except DatabaseError as exc:
            self.engine.dispose()
            if self.is_postgres:
                raise _postgres_error(exc.orig, self.path, opening=True) from exc
            raise StoreError(f"cannot open database {self.path}: {explain_sqlite_error(exc.orig, self.path)}") from exc
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == POSTGRES

    def _explain(self, exc: DatabaseError) -> StoreError:
        if self.is_postgres:
            return _postgres_error(exc.orig, self.path)
        return StoreError(explain_sqlite_error(exc.orig, self.path))

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
            raise self._explain(exc) from exc

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        try:
            with Session(self.engine) as session:
                yield session
        except IntegrityError:
            raise
        except DatabaseError as exc:
            raise self._explain(exc) from exc

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
            if self.is_postgres:  # one schema maker at a time, until this transaction ends
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            else:
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
                    if self.is_postgres:  # PostgreSQL indexes begin at schema 4: no step exists for them yet
                        raise StoreError(f"{self.path}: schema {version} on PostgreSQL has no migration in this "
                                         f"mmsearch ({SCHEMA_VERSION})")
                    migrate(connection, version, SCHEMA_VERSION)
                Base.metadata.create_all(connection)
                run_sql(connection, "INSERT INTO schema_info (key, value) VALUES ('schema_version', ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))
                run_sql(connection, "INSERT INTO schema_info (key, value) VALUES ('generation', '0') "
                        "ON CONFLICT (key) DO NOTHING")
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
    if "schema_info" not in _tables(connection):
        return None
    row = connection.exec_driver_sql("SELECT value FROM schema_info WHERE key = 'schema_version'").first()
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
    if connection.dialect.name == POSTGRES:
        return set(inspect(connection).get_table_names())
    return {row[0] for row in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _postgres_engine(url: str, timeout_s: float):
    try:
        return create_engine(url, connect_args={"connect_timeout": max(1, int(timeout_s))}, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise DatabaseURLError(f"PostgreSQL needs psycopg: pip install 'mmsearch[postgres]' ({exc})") from exc
    except Exception as exc:
        raise DatabaseURLError(f"cannot use the database URL: {exc}") from exc


def _postgres_error(error, where: str, *, opening: bool = False) -> StoreError:
    """A PostgreSQL failure as a typed error a person can act on (`where`: the URL without its password)."""
    message = " ".join(str(error).split())
    lowered = message.lower()
    if type(error).__name__ == "OperationalError" and (opening or "connection" in lowered):
        return DatabaseUnreachableError(
            f"cannot reach the index's PostgreSQL database {where} (PostgreSQL: {message}); check the server runs "
            f"and the host, port, user and database name; a password comes from the URL or PGPASSWORD")
    if "permission denied" in lowered:
        return StoreError(f"PostgreSQL refused {where}: {message}; the user needs to own the database (or be granted "
                          f"CREATE on it, and the pg_trgm extension installed)")
    if "no space left" in lowered or "disk full" in lowered:
        return StoreError(f"the PostgreSQL server of {where} is out of disk (PostgreSQL: {message}); the transaction "
                          f"was rolled back")
    return StoreError(f"database error on {where}: {message}")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.text_factory = decode_text
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class PostgresReadOnly:
    """A read-only psycopg connection with sqlite3's face (`execute(sql, params)` with `?` placeholders,
    rows as tuples), so `indexer.store.inspect` reads either database with the same SQL. "BEGIN"
    opens a REPEATABLE READ READ ONLY transaction: every read after it sees one committed state."""

    is_postgres = True

    def __init__(self, url: str):
        from sqlalchemy.engine import make_url

        self.where = redact(url)
        parsed = make_url(url)
        try:
            import psycopg
        except ModuleNotFoundError as exc:
            raise DatabaseURLError(f"PostgreSQL needs psycopg: pip install 'mmsearch[postgres]' ({exc})") from exc
        self._errors = psycopg.Error
        try:
            self._connection = psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username,
                                               password=parsed.password, dbname=parsed.database, autocommit=True,
                                               connect_timeout=30)
        except psycopg.Error as exc:
            raise _postgres_error(exc, self.where, opening=True) from exc

    def execute(self, sql: str, params=()):
        if sql == "BEGIN":
            sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        try:
            return self._connection.execute(driver_sql(POSTGRES, sql, with_params=bool(params)), tuple(params) or None)
        except self._errors as exc:
            raise _postgres_error(exc, self.where) from exc

    def close(self) -> None:
        self._connection.close()


def connect_read_only(path: Path | str):
    """A connection that cannot write: plain sqlite3 (mode=ro, non-UTF-8 paths read losslessly) for
    the SQLite file at `path`, or `PostgresReadOnly` where `path` is a PostgreSQL URL."""
    if isinstance(path, str) and path.startswith("postgresql"):
        return PostgresReadOnly(path)
    connection = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True, isolation_level=None,
                                 timeout=30.0)
    connection.text_factory = decode_text
    return connection
