"""Metadata store: SQLite through SQLAlchemy 2 (items, their vectors, the model, runs).

The vectors live here too, as float32 blobs committed in the same transaction as their item
row: the FAISS file is a derived, rebuildable copy. Every write that spans rows is one
transaction. Reached only through this module, so another database (PostgreSQL through a
SQLAlchemy URL) can take its place later.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import (
    Float, ForeignKey, Integer, LargeBinary, String, Text, create_engine, delete, event, func, select, text, update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from retrieval.encoders import ModelInfo
from retrieval.errors import ModelMismatchError, StoreError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
IMAGE = "image"


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
    path: Mapped[str] = mapped_column(Text, unique=True, index=True)
    modality: Mapped[str] = mapped_column(String, default=IMAGE)
    size: Mapped[int] = mapped_column(Integer)
    mtime: Mapped[float] = mapped_column(Float, index=True)
    content_hash: Mapped[str | None] = mapped_column(String, index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String)
    indexed_at: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    seen_run: Mapped[int] = mapped_column(Integer, default=0)


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
    roots: Mapped[str] = mapped_column(Text)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    embedded: Mapped[int] = mapped_column(Integer, default=0)
    reused: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float | None] = mapped_column(Float)


@dataclass(frozen=True)
class KnownFile:
    """What the store remembers of a path: enough to tell if it changed."""

    item_id: int
    size: int
    mtime: float
    failed: bool


@dataclass(frozen=True)
class NewItem:
    """One file's outcome, ready to be written: a vector, a reused vector, or an error."""

    path: str
    size: int
    mtime: float
    content_hash: str | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    vector: np.ndarray | None = None
    reuse_from: int | None = None
    error: str | None = None
    modality: str = IMAGE


@dataclass(frozen=True)
class ItemRecord:
    id: int
    path: str
    size: int
    mtime: float
    width: int | None
    height: int | None
    format: str | None
    modality: str
    indexed_at: float


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
        except OperationalError as exc:
            raise StoreError(f"cannot open database {self.path}: {exc.orig}") from exc

    # --- schema -------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        Base.metadata.create_all(self.engine)
        with Session(self.engine) as session, session.begin():
            row = session.get(SchemaInfo, "schema_version")
            if row is None:
                session.add(SchemaInfo(key="schema_version", value=str(SCHEMA_VERSION)))
                session.add(SchemaInfo(key="generation", value="0"))
            elif int(row.value) > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer mmsearch (schema {row.value}, this one knows "
                    f"{SCHEMA_VERSION}); upgrade mmsearch"
                )

    def close(self) -> None:
        self.engine.dispose()

    def get_info(self, key: str) -> str | None:
        with Session(self.engine) as session:
            row = session.get(SchemaInfo, key)
            return row.value if row else None

    def set_info(self, key: str, value: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.merge(SchemaInfo(key=key, value=value))

    @property
    def generation(self) -> int:
        """Bumped by every transaction that changes vectors; the FAISS file records the one it holds."""
        return int(self.get_info("generation") or 0)

    # --- model --------------------------------------------------------------------------
    def model(self) -> ModelInfo | None:
        with Session(self.engine) as session:
            row = session.scalars(select(ModelRow).order_by(ModelRow.id.desc())).first()
            return ModelInfo(row.name, row.weights, row.dim, row.fingerprint) if row else None

    def bind_model(self, info: ModelInfo) -> None:
        """Record the index's model on first use; refuse a different one afterwards."""
        current = self.model()
        if current is None:
            with Session(self.engine) as session, session.begin():
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
        with Session(self.engine) as session, session.begin():
            current = session.get(SchemaInfo, "staged_model")
            if current is not None and json.loads(current.value).get("fingerprint") == info.fingerprint:
                return
            session.execute(delete(StagedVectorRow))
            session.merge(SchemaInfo(key="staged_model", value=json.dumps(asdict(info))))

    def abandon_staging(self) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(delete(StagedVectorRow))
            session.execute(delete(SchemaInfo).where(SchemaInfo.key == "staged_model"))

    def items_to_stage(self) -> list[tuple[int, str, int, float]]:
        """(id, path, size, mtime) of items with a vector but no staged vector yet."""
        with Session(self.engine) as session:
            staged = select(StagedVectorRow.item_id)
            rows = session.execute(
                select(Item.id, Item.path, Item.size, Item.mtime).join(VectorRow, VectorRow.item_id == Item.id)
                .where(Item.id.not_in(staged)).order_by(Item.id)
            )
            return [tuple(row) for row in rows]

    def stage_batch(self, vectors: dict[str, np.ndarray], errors: dict[str, str]) -> None:
        """Store staged vectors (by path) and record items that could not be re-embedded."""
        with Session(self.engine) as session, session.begin():
            for path, vector in vectors.items():
                item_id = session.scalar(select(Item.id).where(Item.path == path))
                if item_id is not None:
                    session.merge(StagedVectorRow(item_id=item_id, vector=vector_to_blob(vector)))
            for path, error in errors.items():
                session.execute(update(Item).where(Item.path == path).values(error=f"reindex: {error}"))
                item_id = session.scalar(select(Item.id).where(Item.path == path))
                session.execute(delete(VectorRow).where(VectorRow.item_id == item_id))
            self._bump_generation(session)

    def swap_in_staged(self) -> int:
        """Make the staged model the index's model, its vectors the live ones: one transaction."""
        info = self.staged_model()
        if info is None:
            raise StoreError("no model is being staged")
        with Session(self.engine) as session, session.begin():
            session.execute(delete(VectorRow))
            session.execute(text("INSERT INTO vectors (item_id, vector) SELECT item_id, vector FROM staged_vectors"))
            count = session.scalar(select(func.count()).select_from(VectorRow)) or 0
            session.execute(delete(StagedVectorRow))
            session.execute(delete(ModelRow))
            session.add(ModelRow(name=info.name, weights=info.weights, dim=info.dim,
                                 fingerprint=info.fingerprint, created_at=time.time()))
            session.execute(delete(SchemaInfo).where(SchemaInfo.key == "staged_model"))
            self._bump_generation(session)
        return count

    # --- runs ---------------------------------------------------------------------------
    def start_run(self, command: str, roots: Sequence[str]) -> int:
        with Session(self.engine) as session, session.begin():
            run = Run(command=command, roots="\n".join(roots), started_at=time.time())
            session.add(run)
            session.flush()
            return run.id

    def finish_run(self, run_id: int, **counts) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(update(Run).where(Run.id == run_id).values(finished_at=time.time(), **counts))

    def last_run(self) -> dict | None:
        with Session(self.engine) as session:
            run = session.scalars(select(Run).order_by(Run.id.desc())).first()
            if run is None:
                return None
            return {
                "command": run.command, "roots": run.roots.split("\n"), "started_at": run.started_at,
                "finished_at": run.finished_at, "embedded": run.embedded, "reused": run.reused,
                "removed": run.removed, "failed": run.failed, "unchanged": run.unchanged, "seconds": run.seconds,
            }

    # --- items --------------------------------------------------------------------------
    def known_files(self, folder: str) -> dict[str, KnownFile]:
        low, high = _folder_range(folder)
        with Session(self.engine) as session:
            rows = session.execute(
                select(Item.path, Item.id, Item.size, Item.mtime, Item.error).where(Item.path >= low, Item.path < high)
            )
            return {path: KnownFile(item_id, size, mtime, error is not None) for path, item_id, size, mtime, error in rows}

    def mark_seen(self, item_ids: Iterable[int], run_id: int) -> None:
        ids = list(item_ids)
        with Session(self.engine) as session, session.begin():
            for start in range(0, len(ids), 500):
                session.execute(update(Item).where(Item.id.in_(ids[start:start + 500])).values(seen_run=run_id))

    def hashes_with_vectors(self) -> dict[str, int]:
        """content hash -> an item id holding a vector for it (for renamed and copied files)."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(Item.content_hash, Item.id).join(VectorRow, VectorRow.item_id == Item.id)
                .where(Item.content_hash.is_not(None))
            )
            return {content_hash: item_id for content_hash, item_id in rows}

    def hashes_for(self, item_ids: Sequence[int]) -> dict[str, int]:
        ids = list(item_ids)
        out: dict[str, int] = {}
        with Session(self.engine) as session:
            for start in range(0, len(ids), 500):
                rows = session.execute(select(Item.content_hash, Item.id).where(Item.id.in_(ids[start:start + 500])))
                out.update({content_hash: item_id for content_hash, item_id in rows if content_hash})
        return out

    def write_batch(self, items: Sequence[NewItem], run_id: int) -> list[int]:
        """Insert or update items (and their vectors) in one transaction; returns ids given vectors."""
        with_vectors = []
        now = time.time()
        with Session(self.engine) as session, session.begin():
            for new in items:
                item = session.scalars(select(Item).where(Item.path == new.path)).first()
                if item is None:
                    item = Item(path=new.path)
                    session.add(item)
                item.modality = new.modality
                item.size, item.mtime, item.content_hash = new.size, new.mtime, new.content_hash
                item.width, item.height, item.format = new.width, new.height, new.format
                item.indexed_at, item.error, item.seen_run = now, new.error, run_id
                session.flush()
                blob = None
                if new.vector is not None:
                    blob = vector_to_blob(new.vector)
                elif new.reuse_from is not None:
                    source = session.get(VectorRow, new.reuse_from)
                    blob = source.vector if source is not None else None
                    if blob is None:
                        item.error = "content hash matched an item whose vector is gone; will re-embed next run"
                        item.size = -1  # forces a re-embed on the next run
                existing = session.get(VectorRow, item.id)
                if blob is not None:
                    if existing is None:
                        session.add(VectorRow(item_id=item.id, vector=blob))
                    else:
                        existing.vector = blob
                    with_vectors.append(item.id)
                elif existing is not None:
                    session.delete(existing)
            self._bump_generation(session)
        return with_vectors

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
        with Session(self.engine) as session, session.begin():
            ids = list(session.scalars(select(Item.id).where(condition)))
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                session.execute(delete(VectorRow).where(VectorRow.item_id.in_(chunk)))
                session.execute(delete(Item).where(Item.id.in_(chunk)))
            if ids:
                self._bump_generation(session)
            return ids

    def _bump_generation(self, session: Session) -> None:
        row = session.get(SchemaInfo, "generation")
        row.value = str(int(row.value) + 1)

    # --- reads --------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with Session(self.engine) as session:
            items = session.scalar(select(func.count()).select_from(Item)) or 0
            vectors = session.scalar(select(func.count()).select_from(VectorRow)) or 0
            failed = session.scalar(select(func.count()).select_from(Item).where(Item.error.is_not(None))) or 0
            return {"rows": items, "items": vectors, "failed": failed}

    def failures(self, limit: int = 20) -> list[tuple[str, str]]:
        with Session(self.engine) as session:
            rows = session.execute(select(Item.path, Item.error).where(Item.error.is_not(None)).limit(limit))
            return [(path, error) for path, error in rows]

    def iter_vectors(self, dim: int, chunk: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(item_ids int64, vectors float32 [n, dim]) in chunks, ordered by item id."""
        last = -1
        with Session(self.engine) as session:
            while True:
                rows = session.execute(
                    select(VectorRow.item_id, VectorRow.vector).where(VectorRow.item_id > last)
                    .order_by(VectorRow.item_id).limit(chunk)
                ).all()
                if not rows:
                    return
                ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
                vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dim)
                yield ids, vectors
                last = int(ids[-1])

    def vectors_for(self, item_ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        with Session(self.engine) as session:
            ids, blobs = [], []
            for start in range(0, len(item_ids), 500):
                for item_id, blob in session.execute(
                    select(VectorRow.item_id, VectorRow.vector).where(VectorRow.item_id.in_(list(item_ids[start:start + 500])))
                ):
                    ids.append(item_id)
                    blobs.append(blob)
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim) if ids else np.zeros((0, dim), np.float32)
        return np.asarray(ids, dtype=np.int64), vectors

    def items(self, item_ids: Sequence[int]) -> dict[int, ItemRecord]:
        out = {}
        with Session(self.engine) as session:
            for start in range(0, len(item_ids), 500):
                for item in session.scalars(select(Item).where(Item.id.in_(list(item_ids[start:start + 500])))):
                    out[item.id] = ItemRecord(item.id, item.path, item.size, item.mtime, item.width, item.height,
                                              item.format, item.modality, item.indexed_at)
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
        with Session(self.engine) as session:
            return np.fromiter(session.scalars(query), dtype=np.int64)


def check_same_model(recorded: ModelInfo, wanted: ModelInfo) -> None:
    if recorded.fingerprint != wanted.fingerprint or recorded.dim != wanted.dim:
        raise ModelMismatchError(
            f"this index was built with model {recorded.name} ({recorded.dim}-d); you asked for "
            f"{wanted.name} ({wanted.dim}-d). Search without --model to use the index's own model, "
            f"or re-embed the index with `mmsearch reindex --model {wanted.name}`"
        )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
