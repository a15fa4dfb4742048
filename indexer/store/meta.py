"""Metadata store: SQLite through SQLAlchemy 2 (items, their vectors, the model, runs).

The vectors live here too, as float32 blobs committed in the same transaction as their item
row: the FAISS file is a derived, rebuildable copy. Every write that spans rows is one
transaction. Reached only through this module, so another database (PostgreSQL through a
SQLAlchemy URL) can take its place later.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import (
    Float, ForeignKey, Integer, LargeBinary, String, Text, cast, create_engine, delete, event, func, insert, select, text,
    update,
)
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from indexer.store.records import IMAGE, ItemRecord, KnownFile, ModelInfo, NewItem  # noqa: F401 - re-exported
from indexer.errors import ModelMismatchError, StoreError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # steps between versions: indexer/store/migrations.py


class FsText(TypeDecorator):
    """Text that may hold file names which are not valid UTF-8, stored losslessly.

    Python gives such names as str with lone surrogates (PEP 383, `os.fsdecode`), which SQLite
    cannot take as UTF-8. They are bound as their raw bytes and cast to TEXT, so the column keeps
    the exact bytes of the name, sorts and compares like every other path (folder ranges, GLOB),
    and reads back, through the connection's surrogateescape text factory, as the same str that
    `os.scandir` produced: `open()` accepts it. Valid UTF-8 text is stored unchanged.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return value.encode("utf-8", "surrogateescape")
        return value

    def bind_expression(self, bindvalue):
        return cast(bindvalue, Text)


def _insert_rows(session: Session, table, rows: list[dict]) -> None:
    """INSERT many rows through the driver's executemany: the ORM's bulk insert spent more Python
    time per row than SQLite did, and a GPU index run writes thousands of rows a second.

    Binds as the columns' types do (FsText: bytes cast to TEXT), so the rows are the same as the
    ORM would write; columns missing from a row get their Python-side defaults.
    """
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


def decode_text(data: bytes) -> str:
    """SQLite TEXT -> str; bytes that are not UTF-8 come back as surrogates (lossless)."""
    return data.decode("utf-8", "surrogateescape")


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "schema_info"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ModelRow(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    weights: Mapped[str] = mapped_column(Text)
    dim: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Float)


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsText, unique=True, index=True)
    modality: Mapped[str] = mapped_column(String, default=IMAGE)
    size: Mapped[int] = mapped_column(Integer)
    mtime: Mapped[float] = mapped_column(Float, index=True)
    content_hash: Mapped[str | None] = mapped_column(String, index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String)
    indexed_at: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(FsText)
    seen_run: Mapped[int] = mapped_column(Integer, default=0)
    taken_at: Mapped[float | None] = mapped_column(Float, index=True)  # schema 2: EXIF capture time


class VectorRow(Base):
    __tablename__ = "vectors"
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class StagedVectorRow(Base):
    """Vectors from a model being switched to (`reindex`); swapped in when every item has one."""

    __tablename__ = "staged_vectors"
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    command: Mapped[str] = mapped_column(String)
    roots: Mapped[str] = mapped_column(FsText)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    embedded: Mapped[int] = mapped_column(Integer, default=0)
    reused: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float | None] = mapped_column(Float)


def _folder_range(folder: str) -> tuple[str, str]:
    """Paths strictly under `folder` sort between 'folder/' and 'folder0' ('0' follows '/')."""
    folder = folder.rstrip("/")
    return folder + "/", folder + "0"


def vector_to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


class MetaStore:
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
    def _transaction(self):
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
    def _reading(self):
        try:
            with Session(self.engine) as session:
                yield session
        except IntegrityError:
            raise
        except DatabaseError as exc:
            raise StoreError(explain_sqlite_error(exc.orig, self.path)) from exc

    # --- schema -------------------------------------------------------------------------
    def _stored_version(self) -> int | None:
        with self.engine.connect() as connection:
            return _schema_version(connection)

    def _ensure_schema(self) -> None:
        """Create a new database, or migrate an older one, in one transaction; refuse a newer one.

        An up-to-date database is only read here, so read-only commands work on a read-only copy.
        """
        if self._stored_version() == SCHEMA_VERSION:
            return
        from indexer.store.migrations import migrate

        with self.engine.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # one migrator at a time; re-read under the lock
            try:
                version = _schema_version(connection)
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

    def close(self) -> None:
        self.engine.dispose()

    def get_info(self, key: str) -> str | None:
        with self._reading() as session:
            row = session.get(SchemaInfo, key)
            return row.value if row else None

    def set_info(self, key: str, value: str) -> None:
        with self._transaction() as session:
            session.merge(SchemaInfo(key=key, value=value))

    @property
    def generation(self) -> int:
        """Bumped by every transaction that changes vectors; the FAISS file records the one it holds."""
        return int(self.get_info("generation") or 0)

    # --- model --------------------------------------------------------------------------
    def model(self) -> ModelInfo | None:
        with self._reading() as session:
            row = session.scalars(select(ModelRow).order_by(ModelRow.id.desc())).first()
            return ModelInfo(row.name, row.weights, row.dim, row.fingerprint) if row else None

    def bind_model(self, info: ModelInfo) -> None:
        """Record the index's model on first use; refuse a different one afterwards."""
        current = self.model()
        if current is None:
            with self._transaction() as session:
                session.add(ModelRow(name=info.name, weights=info.weights, dim=info.dim,
                                     fingerprint=info.fingerprint, created_at=time.time()))
            return
        check_same_model(current, info)

    # --- switching models (reindex) ---------------------------------------------------------
    def staged_model(self) -> ModelInfo | None:
        raw = self.get_info("staged_model")
        if not raw:
            return None
        data = json.loads(raw)
        return ModelInfo(data["name"], data["weights"], int(data["dim"]), data["fingerprint"])

    def begin_staging(self, info: ModelInfo) -> None:
        """Start (or keep) staging vectors for `info`; staged vectors of another model are dropped."""
        with self._transaction() as session:
            current = session.get(SchemaInfo, "staged_model")
            if current is not None and json.loads(current.value).get("fingerprint") == info.fingerprint:
                return
            session.execute(delete(StagedVectorRow))
            session.merge(SchemaInfo(key="staged_model", value=json.dumps(asdict(info))))

    def abandon_staging(self) -> None:
        with self._transaction() as session:
            session.execute(delete(StagedVectorRow))
            session.execute(delete(SchemaInfo).where(SchemaInfo.key == "staged_model"))

    def items_to_stage(self) -> list[tuple[int, str, int, float]]:
        """(id, path, size, mtime) of items with a vector but no staged vector yet."""
        with self._reading() as session:
            staged = select(StagedVectorRow.item_id)
            rows = session.execute(
                select(Item.id, Item.path, Item.size, Item.mtime).join(VectorRow, VectorRow.item_id == Item.id)
                .where(Item.id.not_in(staged)).order_by(Item.id)
            )
            return [tuple(row) for row in rows]

    def stage_batch(self, vectors: dict[str, np.ndarray], errors: dict[str, str]) -> None:
        """Store staged vectors (by path) and record items that could not be re-embedded."""
        with self._transaction() as session:
            for path, vector in vectors.items():
                item_id = session.scalar(select(Item.id).where(Item.path == path))
                if item_id is not None:
                    session.merge(StagedVectorRow(item_id=item_id, vector=vector_to_blob(vector)))
            for path, error in errors.items():
                session.execute(update(Item).where(Item.path == path).values(error=f"reindex: {error}"))
                item_id = session.scalar(select(Item.id).where(Item.path == path))
                session.execute(delete(VectorRow).where(VectorRow.item_id == item_id))
            if errors:  # only dropped live vectors change what search sees; staged ones do not
                self._bump_generation(session)

    def swap_in_staged(self) -> int:
        """Make the staged model the index's model, its vectors the live ones: one transaction.

        Also records the swap (`reindex_swapped`), so a reindex killed after this commit but before
        its vector file was written resumes by writing that file, not by re-embedding everything.
        """
        info = self.staged_model()
        if info is None:
            raise StoreError("no model is being staged")
        with self._transaction() as session:
            session.execute(delete(VectorRow))
            session.execute(text("INSERT INTO vectors (item_id, vector) SELECT item_id, vector FROM staged_vectors"))
            count = session.scalar(select(func.count()).select_from(VectorRow)) or 0
            session.execute(delete(StagedVectorRow))
            session.execute(delete(ModelRow))
            session.add(ModelRow(name=info.name, weights=info.weights, dim=info.dim,
                                 fingerprint=info.fingerprint, created_at=time.time()))
            session.execute(delete(SchemaInfo).where(SchemaInfo.key == "staged_model"))
            generation = self._bump_generation(session)
            session.merge(SchemaInfo(key="reindex_swapped",
                                     value=json.dumps({"fingerprint": info.fingerprint, "generation": generation})))
        return count

    def swap_unfinished(self, info: ModelInfo) -> bool:
        """True when a reindex to `info` committed its swap but was stopped before it finished
        (nothing has changed the vectors since); see swap_in_staged."""
        raw = self.get_info("reindex_swapped")
        if not raw:
            return False
        data = json.loads(raw)
        current = self.model()
        return (current is not None and current.fingerprint == info.fingerprint == data.get("fingerprint")
                and data.get("generation") == self.generation)

    def clear_swapped(self) -> None:
        with self._transaction() as session:
            session.execute(delete(SchemaInfo).where(SchemaInfo.key == "reindex_swapped"))

    # --- runs ---------------------------------------------------------------------------
    def start_run(self, command: str, roots: Sequence[str]) -> int:
        with self._transaction() as session:
            run = Run(command=command, roots="\n".join(roots), started_at=time.time())
            session.add(run)
            session.flush()
            return run.id

    def finish_run(self, run_id: int, **counts) -> None:
        with self._transaction() as session:
            session.execute(update(Run).where(Run.id == run_id).values(finished_at=time.time(), **counts))

    def last_run(self) -> dict | None:
        with self._reading() as session:
            run = session.scalars(select(Run).order_by(Run.id.desc())).first()
            if run is None:
                return None
            return {
                "command": run.command, "roots": run.roots.split("\n"), "started_at": run.started_at,
                "finished_at": run.finished_at, "embedded": run.embedded, "reused": run.reused,
                "removed": run.removed, "failed": run.failed, "unchanged": run.unchanged, "seconds": run.seconds,
            }

    def indexed_roots(self) -> list[str]:
        """Every folder (or file) an `index` run was given, as given (absolute)."""
        with self._reading() as session:
            listed = session.scalars(select(Run.roots).where(Run.command == "index")).all()
        return sorted({root for text in listed for root in text.split("\n") if root})

    # --- items --------------------------------------------------------------------------
    def known_files(self, folder: str) -> dict[str, KnownFile]:
        low, high = _folder_range(folder)
        with self._reading() as session:
            rows = session.execute(
                select(Item.path, Item.id, Item.size, Item.mtime, Item.error).where(Item.path >= low, Item.path < high)
            )
            return {path: KnownFile(item_id, size, mtime, error is not None) for path, item_id, size, mtime, error in rows}

    def mark_seen(self, item_ids: Iterable[int], run_id: int) -> None:
        ids = list(item_ids)
        with self._transaction() as session:
            for start in range(0, len(ids), 500):
                session.execute(update(Item).where(Item.id.in_(ids[start:start + 500])).values(seen_run=run_id))

    def hashes_with_vectors(self) -> dict[str, int]:
        """content hash -> an item id holding a vector for it (for renamed and copied files)."""
        with self._reading() as session:
            rows = session.execute(
                select(Item.content_hash, Item.id).join(VectorRow, VectorRow.item_id == Item.id)
                .where(Item.content_hash.is_not(None))
            )
            return {content_hash: item_id for content_hash, item_id in rows}

    def write_batch(self, items: Sequence[NewItem], run_id: int) -> dict[int, str | None]:
        """Insert or update items (and their vectors) in one transaction.

        Returns {item id: content hash} for the items given a vector (iterating it gives the ids):
        what an index run needs to reuse these vectors for later duplicates, without a query.

        Bulk statements (executemany), not one ORM object per file: a folder of 100k broken files
        costs seconds, not minutes.
        """
        now = time.time()
        with self._transaction() as session:
            paths = [new.path for new in items]
            ids = self._ids_by_path(session, paths)
            sources = self._blobs(session, {new.reuse_from for new in items if new.vector is None and new.reuse_from is not None})
            rows, blobs = {}, {}
            for new in items:
                row = {"path": new.path, "modality": new.modality, "size": new.size, "mtime": new.mtime,
                       "content_hash": new.content_hash, "width": new.width, "height": new.height,
                       "format": new.format, "indexed_at": now, "error": new.error, "seen_run": run_id,
                       "taken_at": new.taken_at}
                blob = None
                if new.vector is not None:
                    blob = vector_to_blob(new.vector)
                elif new.reuse_from is not None:
                    blob = sources.get(new.reuse_from)
                    if blob is None:
                        row["error"] = "content hash matched an item whose vector is gone; will re-embed next run"
                        row["size"] = -1  # forces a re-embed on the next run
                rows[new.path], blobs[new.path] = row, blob
            inserts = [row for path, row in rows.items() if path not in ids]
            updates = [{"id": ids[path], **row} for path, row in rows.items() if path in ids]
            if inserts:
                _insert_rows(session, Item.__table__, inserts)
            if updates:
                session.execute(update(Item), updates)
            ids.update(self._ids_by_path(session, [row["path"] for row in inserts]))
            with_vectors = {ids[path]: row["content_hash"] for path, row in rows.items() if blobs[path] is not None}
            having = self._ids_with_vectors(session, [ids[path] for path in rows])
            vector_inserts = [{"item_id": ids[path], "vector": blob} for path, blob in blobs.items()
                              if blob is not None and ids[path] not in having]
            vector_updates = [{"item_id": ids[path], "vector": blob} for path, blob in blobs.items()
                              if blob is not None and ids[path] in having]
            dropped = [ids[path] for path, blob in blobs.items() if blob is None and ids[path] in having]
            if vector_inserts:
                _insert_rows(session, VectorRow.__table__, vector_inserts)
            if vector_updates:
                session.execute(update(VectorRow), vector_updates)
            for start in range(0, len(dropped), 500):
                session.execute(delete(VectorRow).where(VectorRow.item_id.in_(dropped[start:start + 500])))
            self._bump_generation(session)
        return with_vectors

    @staticmethod
    def _ids_by_path(session: Session, paths: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(paths), 500):
            out.update(session.execute(select(Item.path, Item.id).where(Item.path.in_(paths[start:start + 500]))).all())
        return out

    @staticmethod
    def _ids_with_vectors(session: Session, item_ids: Sequence[int]) -> set[int]:
        out: set[int] = set()
        for start in range(0, len(item_ids), 500):
            out.update(session.scalars(select(VectorRow.item_id).where(VectorRow.item_id.in_(item_ids[start:start + 500]))))
        return out

    @staticmethod
    def _blobs(session: Session, item_ids) -> dict[int, bytes]:
        ids = list(item_ids)
        out: dict[int, bytes] = {}
        for start in range(0, len(ids), 500):
            out.update(session.execute(select(VectorRow.item_id, VectorRow.vector)
                                       .where(VectorRow.item_id.in_(ids[start:start + 500]))).all())
        return out

    def sweep(self, folder: str, run_id: int) -> list[int]:
        """Delete items under `folder` not seen by run `run_id` (gone from disk); returns their ids."""
        low, high = _folder_range(folder)
        condition = (Item.path >= low) & (Item.path < high) & (Item.seen_run != run_id)
        return self._delete_where(condition)

    def forget(self, folder: str) -> list[int]:
        """Delete every item under `folder` (or the item at exactly that path)."""
        low, high = _folder_range(folder)
        condition = ((Item.path >= low) & (Item.path < high)) | (Item.path == folder.rstrip("/"))
        return self._delete_where(condition)

    def _delete_where(self, condition) -> list[int]:
        with self._transaction() as session:
            ids = list(session.scalars(select(Item.id).where(condition)))
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                session.execute(delete(VectorRow).where(VectorRow.item_id.in_(chunk)))
                session.execute(delete(Item).where(Item.id.in_(chunk)))
            if ids:
                self._bump_generation(session)
            return ids

    def _bump_generation(self, session: Session) -> int:
        row = session.get(SchemaInfo, "generation")
        row.value = str(int(row.value) + 1)
        return int(row.value)

    def drop_inconsistent(self, *, missing_ids: Sequence[int] = ()) -> dict[str, int]:
        """`mmsearch repair`'s database half, one transaction: drop vectors without a row, vectors of
        the wrong size, staged vectors no reindex will use, rows with neither vector nor error (the
        next run embeds their files afresh), and the rows in `missing_ids`. Returns counts."""
        model = self.model()
        staged = self.staged_model()
        dropped = {"orphan_vectors": 0, "bad_vectors": 0, "orphan_staged": 0, "rows_without_vector": 0, "missing": 0}
        with self._transaction() as session:
            def run(sql: str, params: dict | None = None) -> int:
                return session.execute(text(sql), params or {}).rowcount or 0

            dropped["orphan_vectors"] = run("DELETE FROM vectors WHERE item_id NOT IN (SELECT id FROM items)")
            if model is not None:  # without a recorded model there is no right size: keep them
                dropped["bad_vectors"] = run("DELETE FROM vectors WHERE length(vector) != :size", {"size": model.dim * 4})
            dropped["orphan_staged"] = run("DELETE FROM staged_vectors WHERE item_id NOT IN (SELECT id FROM items)")
            if staged is None:
                dropped["orphan_staged"] += run("DELETE FROM staged_vectors")
            else:
                dropped["orphan_staged"] += run("DELETE FROM staged_vectors WHERE length(vector) != :size",
                                                {"size": staged.dim * 4})
            dropped["rows_without_vector"] = run(
                "DELETE FROM items WHERE error IS NULL AND id NOT IN (SELECT item_id FROM vectors)")
            ids = list(missing_ids)
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                session.execute(delete(VectorRow).where(VectorRow.item_id.in_(chunk)))
                dropped["missing"] += session.execute(delete(Item).where(Item.id.in_(chunk))).rowcount or 0
            if any(dropped.values()):
                self._bump_generation(session)
        return dropped

    # --- reads --------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._reading() as session:
            items = session.scalar(select(func.count()).select_from(Item)) or 0
            vectors = session.scalar(select(func.count()).select_from(VectorRow)) or 0
            failed = session.scalar(select(func.count()).select_from(Item).where(Item.error.is_not(None))) or 0
            return {"rows": items, "items": vectors, "failed": failed}

    def failures(self, limit: int = 20) -> list[tuple[str, str]]:
        with self._reading() as session:
            rows = session.execute(select(Item.path, Item.error).where(Item.error.is_not(None)).limit(limit))
            return [(path, error) for path, error in rows]

    def iter_vectors(self, dim: int, chunk: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(item_ids int64, vectors float32 [n, dim]) in chunks, ordered by item id."""
        last = -1
        with self._reading() as session:
            while True:
                rows = session.execute(
                    select(VectorRow.item_id, VectorRow.vector).where(VectorRow.item_id > last)
                    .order_by(VectorRow.item_id).limit(chunk)
                ).all()
                if not rows:
                    return
                last = int(rows[-1][0])
                good = [row for row in rows if len(row[1]) == dim * 4]
                if len(good) != len(rows):  # a damaged row, or a reindex swapping models meanwhile
                    log.warning("skipping %d vectors that are not %d-d (`mmsearch check` reports them)",
                                len(rows) - len(good), dim)
                if not good:
                    continue
                ids = np.fromiter((row[0] for row in good), dtype=np.int64, count=len(good))
                vectors = np.frombuffer(b"".join(row[1] for row in good), dtype=np.float32).reshape(len(good), dim)
                yield ids, vectors

    def vector_ids(self) -> np.ndarray:
        """Ids of every item that has a vector, ascending."""
        with self._reading() as session:
            return np.fromiter(session.scalars(select(VectorRow.item_id).order_by(VectorRow.item_id)), dtype=np.int64)

    def vectors_for(self, item_ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        with self._reading() as session:
            ids, blobs = [], []
            for start in range(0, len(item_ids), 500):
                for item_id, blob in session.execute(
                    select(VectorRow.item_id, VectorRow.vector).where(VectorRow.item_id.in_(list(item_ids[start:start + 500])))
                ):
                    if len(blob) == dim * 4:  # see iter_vectors
                        ids.append(item_id)
                        blobs.append(blob)
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim) if ids else np.zeros((0, dim), np.float32)
        return np.asarray(ids, dtype=np.int64), vectors

    def items(self, item_ids: Sequence[int]) -> dict[int, ItemRecord]:
        out = {}
        with self._reading() as session:
            for start in range(0, len(item_ids), 500):
                for item in session.scalars(select(Item).where(Item.id.in_(list(item_ids[start:start + 500])))):
                    out[item.id] = ItemRecord(item.id, item.path, item.size, item.mtime, item.width, item.height,
                                              item.format, item.modality, item.indexed_at, item.taken_at)
        return out

    def filter_ids(self, *, path_like: str | None = None, after: float | None = None,
                   before: float | None = None, extensions: Sequence[str] | None = None) -> np.ndarray:
        """Ids of items with vectors that pass the filters (SQL GLOB on path, mtime range, extension)."""
        query = select(Item.id).join(VectorRow, VectorRow.item_id == Item.id)
        if path_like:
            query = query.where(Item.path.op("GLOB")(path_like))
        if after is not None:
            query = query.where(Item.mtime >= after)
        if before is not None:
            query = query.where(Item.mtime < before)
        if extensions:
            clauses = [func.lower(Item.path).like(f"%.{ext.lower().lstrip('.')}") for ext in extensions]
            from sqlalchemy import or_

            query = query.where(or_(*clauses))
        with self._reading() as session:
            return np.fromiter(session.scalars(query), dtype=np.int64)


@dataclass
class DatabaseFacts:
    """What `inspect_database` read from one consistent snapshot of an index database."""

    schema_version: int | None
    generation: int = 0
    integrity: list[str] = field(default_factory=list)  # ["ok"] when SQLite finds nothing wrong
    model: ModelInfo | None = None
    staged_model: ModelInfo | None = None
    rows: int = 0
    vectors: int = 0
    failed: int = 0
    staged: int = 0
    vector_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    orphan_vectors: list[int] = field(default_factory=list)
    orphan_staged: list[int] = field(default_factory=list)
    rows_without_vector: list[tuple[int, str]] = field(default_factory=list)
    bad_vectors: list[tuple[int, int]] = field(default_factory=list)  # (item id, blob bytes)
    bad_staged: int = 0
    last_run: dict | None = None


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write (mode=ro) and reads non-UTF-8 paths losslessly."""
    connection = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True, isolation_level=None,
                                 timeout=30.0)
    connection.text_factory = decode_text
    return connection


def inspect_database(path: Path, *, quick: bool = False) -> DatabaseFacts:
    """Read-only facts for `mmsearch check`, all from one snapshot (a writer may be running)."""
    connection = connect_read_only(path)
    try:
        connection.execute("BEGIN")  # WAL: every read below sees the same committed state
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            integrity = [row[0] for row in connection.execute("PRAGMA quick_check" if quick else "PRAGMA integrity_check")]
            if "schema_info" not in tables:
                return DatabaseFacts(schema_version=None, integrity=integrity)
            info = dict(connection.execute("SELECT key, value FROM schema_info"))
            facts = DatabaseFacts(schema_version=int(info.get("schema_version", 1)),
                                  generation=int(info.get("generation", 0)), integrity=integrity)
            if facts.schema_version > SCHEMA_VERSION or not {"items", "vectors", "models"} <= tables:
                return facts
            row = connection.execute("SELECT name, weights, dim, fingerprint FROM models ORDER BY id DESC LIMIT 1").fetchone()
            facts.model = ModelInfo(row[0], row[1], int(row[2]), row[3]) if row else None
            if info.get("staged_model"):
                data = json.loads(info["staged_model"])
                facts.staged_model = ModelInfo(data["name"], data["weights"], int(data["dim"]), data["fingerprint"])
            facts.rows, facts.failed = connection.execute(
                "SELECT count(*), count(error) FROM items").fetchone()
            facts.vector_ids = np.fromiter((row[0] for row in connection.execute(
                "SELECT item_id FROM vectors ORDER BY item_id")), dtype=np.int64)
            facts.vectors = len(facts.vector_ids)
            facts.orphan_vectors = [row[0] for row in connection.execute(
                "SELECT item_id FROM vectors WHERE item_id NOT IN (SELECT id FROM items)")]
            facts.rows_without_vector = [tuple(row) for row in connection.execute(
                "SELECT id, path FROM items WHERE error IS NULL AND id NOT IN (SELECT item_id FROM vectors)")]
            if facts.model is not None:
                facts.bad_vectors = [tuple(row) for row in connection.execute(
                    "SELECT item_id, length(vector) FROM vectors WHERE length(vector) != ?", (facts.model.dim * 4,))]
            if "staged_vectors" in tables:
                facts.staged = connection.execute("SELECT count(*) FROM staged_vectors").fetchone()[0]
                facts.orphan_staged = [row[0] for row in connection.execute(
                    "SELECT item_id FROM staged_vectors WHERE item_id NOT IN (SELECT id FROM items)")]
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


def iter_item_paths(path: Path, chunk: int = 10_000) -> Iterator[list[tuple[int, str]]]:
    """(id, path) of every row, in chunks, read-only (for the files-on-disk check)."""
    connection = connect_read_only(path)
    try:
        last = -1
        while True:
            rows = connection.execute("SELECT id, path FROM items WHERE id > ? ORDER BY id LIMIT ?", (last, chunk)).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]
    finally:
        connection.close()


def check_same_model(recorded: ModelInfo, wanted: ModelInfo) -> None:
    if recorded.fingerprint != wanted.fingerprint or recorded.dim != wanted.dim:
        raise ModelMismatchError(
            f"this index was built with model {recorded.name} ({recorded.dim}-d); you asked for "
            f"{wanted.name} ({wanted.dim}-d). Search without --model to use the index's own model, "
            f"or re-embed the index with `mmsearch reindex --model {wanted.name}`"
        )


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
        return f"{path} is damaged (SQLite: {message}); `mmsearch check` says more"
    if "unable to open" in lowered:
        return f"cannot open {path} (SQLite: {message}); check the folder exists and is readable"
    return f"database error on {path}: {message}"


def _schema_version(connection) -> int | None:
    """The version stamped in an open database; None for a new (empty) one."""
    try:
        row = connection.exec_driver_sql("SELECT value FROM schema_info WHERE key = 'schema_version'").first()
    except OperationalError as exc:
        if "no such table" in str(exc.orig):
            return None
        raise
    return int(row[0]) if row else None


def _tables(connection) -> set[str]:
    return {row[0] for row in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.text_factory = decode_text
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
