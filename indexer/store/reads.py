"""Reads of items and their vectors, through SQLAlchemy (the search path's hot reads: `snapshot`)."""
from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
from sqlalchemy import func, or_, select

from indexer.store.database import Database, in_chunks
from indexer.store.records import IMAGE, ItemRecord, VectorHit
from indexer.store.sampling import sample_candidates, unpack_sample
from indexer.store.schema import Item, VectorRow

log = logging.getLogger(__name__)

# the columns of an ItemRecord, in its field order
ITEM_COLUMNS = (Item.id, Item.path, Item.size, Item.mtime, Item.width, Item.height, Item.format, Item.modality,
                Item.indexed_at, Item.taken_at, Item.duration_s)


def extension_variants(extension: str) -> tuple[str, ...]:
    """An extension and the spellings that mean the same file type (jpg/jpeg, tif/tiff), lower case."""
    extension = extension.lower().lstrip(".")
    for group in (("jpg", "jpeg", "jpe"), ("tif", "tiff"), ("heic", "heif")):
        if extension in group:
            return group
    return (extension,)


def glob_to_regex(pattern: str) -> str:
    """SQLite GLOB (`*`, `?`, `[...]`, `[^...]`; case-sensitive, whole string) as a POSIX regex, for
    PostgreSQL's `~`."""
    out, index = ["^"], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            start = index + 1 + (pattern[index + 1:index + 2] == "^")
            end = pattern.find("]", start + (pattern[start:start + 1] == "]"))
            if end < 0:
                out.append("\\[")
            else:
                out.append("[" + pattern[index + 1:end].replace("\\", "\\\\") + "]")
                index = end
        else:
            out.append("\\" + char if not char.isalnum() and char != "_" and ord(char) < 128 else char)
        index += 1
    return "".join(out) + "$"


class ItemReads:
    def __init__(self, db: Database):
        self.db = db

    def counts(self) -> dict[str, int]:
        """rows: every item; items: items with vectors; vectors: all vectors; failed: items with an error."""
        with self.db.reading() as session:
            rows = session.scalar(select(func.count()).select_from(Item)) or 0
            vectors = session.scalar(select(func.count()).select_from(VectorRow)) or 0
            items = session.scalar(select(func.count(func.distinct(VectorRow.item_id)))) or 0
            failed = session.scalar(select(func.count()).select_from(Item).where(Item.error.is_not(None))) or 0
            return {"rows": rows, "items": items, "vectors": vectors, "failed": failed}

    def counts_by_modality(self) -> dict[str, int]:
        """Items with vectors, per modality."""
        with self.db.reading() as session:
            rows = session.execute(select(Item.modality, func.count()).where(Item.id.in_(select(VectorRow.item_id)))
                                   .group_by(Item.modality))
            return {modality: count for modality, count in rows}

    def vector_count(self, encoder: str = IMAGE) -> int:
        with self.db.reading() as session:
            return session.scalar(select(func.count()).select_from(VectorRow).where(VectorRow.encoder == encoder)) or 0

    def failures(self, limit: int = 20) -> list[tuple[str, str]]:
        with self.db.reading() as session:
            rows = session.execute(select(Item.path, Item.error).where(Item.error.is_not(None)).limit(limit))
            return [(path, error) for path, error in rows]

    def iter_vectors(self, dim: int, encoder: str = IMAGE, chunk: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vector ids int64, vectors float32 [n, dim]) of one encoder, in chunks, by vector id."""
        last = -1
        with self.db.reading() as session:
            while True:
                rows = session.execute(
                    select(VectorRow.id, VectorRow.vector).where(VectorRow.id > last, VectorRow.encoder == encoder)
                    .order_by(VectorRow.id).limit(chunk)
                ).all()
                if not rows:
                    return
                last = int(rows[-1][0])
                ids, vectors = _unpack(rows, dim)
                if len(ids):
                    yield ids, vectors

    def vector_ids(self, encoder: str = IMAGE) -> np.ndarray:
        """Ids of every vector of `encoder`, ascending."""
        with self.db.reading() as session:
            return np.fromiter(session.scalars(select(VectorRow.id).where(VectorRow.encoder == encoder)
                                               .order_by(VectorRow.id)), dtype=np.int64)

    def vectors_for(self, vector_ids: Sequence[int], dim: int, encoder: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(vector ids, vectors) for the given vector ids that exist, have `dim` dimensions and (when
        given) were made by `encoder`; in vector id order."""
        rows = []
        with self.db.reading() as session:
            for chunk in in_chunks([int(vector_id) for vector_id in vector_ids]):
                query = select(VectorRow.id, VectorRow.vector).where(VectorRow.id.in_(chunk))
                if encoder is not None:
                    query = query.where(VectorRow.encoder == encoder)
                rows.extend(session.execute(query))
        rows.sort(key=lambda row: row[0])
        return _unpack(rows, dim)

    def sample_vectors(self, dim: int, count: int, seed: int, encoders: Sequence[str] = (IMAGE,)) -> np.ndarray:
        """About `count` vectors of `encoders` drawn at random (seeded): every one when there are not many
        more. Candidate ids are drawn below the largest vector id, so no table scan (see `sample_candidates`)."""
        with self.db.reading() as session:
            top = session.scalar(select(func.max(VectorRow.id))) or 0
            candidates = sample_candidates(top, count, seed)
            query = select(VectorRow.id, VectorRow.vector).where(VectorRow.encoder.in_(list(encoders)))
            rows = []
            if candidates is None:
                rows = session.execute(query).all()
            else:
                for chunk in in_chunks(candidates.tolist()):
                    rows.extend(session.execute(query.where(VectorRow.id.in_(chunk))))
        return unpack_sample(rows, dim, count)

    def item_ids_by_path(self, paths: Sequence[str]) -> dict[str, int]:
        """path -> item id, for the paths the index holds."""
        out: dict[str, int] = {}
        with self.db.reading() as session:
            for chunk in in_chunks(list(dict.fromkeys(paths))):
                out.update({path: item_id for item_id, path in session.execute(
                    select(Item.id, Item.path).where(Item.path.in_(chunk)))})
        return out

    def item_vectors(self, item_id: int, dim: int, encoder: str = IMAGE) -> np.ndarray:
        """Every `dim`-d vector of one item made by `encoder`, in vector id order ([n, dim], n may be 0)."""
        with self.db.reading() as session:
            rows = session.execute(select(VectorRow.id, VectorRow.vector)
                                   .where(VectorRow.item_id == item_id, VectorRow.encoder == encoder)
                                   .order_by(VectorRow.id)).all()
        return _unpack(rows, dim)[1]

    def moment_starts(self, item_id: int) -> list[float]:
        """Where in the item its vectors start (seconds), ascending; empty for a still picture."""
        with self.db.reading() as session:
            rows = session.execute(select(VectorRow.start_s).distinct()
                                   .where(VectorRow.item_id == item_id, VectorRow.start_s.is_not(None))
                                   .order_by(VectorRow.start_s)).all()
        return [float(row[0]) for row in rows]

    def items(self, item_ids: Sequence[int]) -> dict[int, ItemRecord]:
        out = {}
        with self.db.reading() as session:
            for chunk in in_chunks([int(item_id) for item_id in item_ids]):
                for row in session.execute(select(*ITEM_COLUMNS).where(Item.id.in_(chunk))):
                    out[row[0]] = ItemRecord(*row)
        return out

    def content_hashes(self, item_ids: Sequence[int]) -> dict[int, str]:
        """The content hash each item's file had when it was indexed (failed items have none)."""
        out: dict[int, str] = {}
        with self.db.reading() as session:
            for chunk in in_chunks([int(item_id) for item_id in item_ids]):
                out.update(session.execute(select(Item.id, Item.content_hash).where(
                    Item.id.in_(chunk), Item.content_hash.is_not(None))).all())
        return out

    def hits(self, vector_ids: Sequence[int]) -> dict[int, VectorHit]:
        """vector id -> its item and moment, for the ids that still exist."""
        out = {}
        with self.db.reading() as session:
            for chunk in in_chunks([int(vector_id) for vector_id in vector_ids]):
                rows = session.execute(select(VectorRow.id, VectorRow.start_s, *ITEM_COLUMNS)
                                       .join(Item, Item.id == VectorRow.item_id).where(VectorRow.id.in_(chunk)))
                for row in rows:
                    out[row[0]] = VectorHit(ItemRecord(*row[2:]), row[1])
        return out

    def filter_ids(self, *, path_like: str | None = None, after: float | None = None, before: float | None = None,
                   extensions: Sequence[str] | None = None, modalities: Sequence[str] | None = None,
                   encoder: str | None = IMAGE, item_ids: Sequence[int] | None = None) -> np.ndarray:
        """Ids of the vectors (of `encoder`; None: of any) whose items pass the filters: SQL GLOB on
        the path, a time range on the capture time where known (EXIF), else the file's mtime,
        extensions (jpg and jpeg alike), modalities, and (given `item_ids`) only those items."""
        query = select(VectorRow.id).join(Item, Item.id == VectorRow.item_id)
        if item_ids is not None:
            if not item_ids:
                return np.zeros(0, np.int64)
            query = query.where(VectorRow.item_id.in_([int(item_id) for item_id in item_ids]))
        if encoder is not None:
            query = query.where(VectorRow.encoder == encoder)
        if path_like:
            if self.db.is_postgres:
                query = query.where(Item.path.op("~")(glob_to_regex(path_like)))
            else:
                query = query.where(Item.path.op("GLOB")(path_like))
        moment = func.coalesce(Item.taken_at, Item.mtime)
        if after is not None:
            query = query.where(moment >= after)
        if before is not None:
            query = query.where(moment < before)
        if extensions:
            spellings = sorted({variant for extension in extensions for variant in extension_variants(extension)})
            query = query.where(or_(*[func.lower(Item.path).like(f"%.{extension}") for extension in spellings]))
        if modalities:
            query = query.where(Item.modality.in_(list(modalities)))
        with self.db.reading() as session:
            return np.fromiter(session.scalars(query.order_by(VectorRow.id)), dtype=np.int64)


def _unpack(rows, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(id, blob) rows -> (ids, [n, dim] float32); blobs of another size are skipped with a warning
    (a damaged row, or a reindex swapping models meanwhile: `mmsearch check` reports them)."""
    good = [row for row in rows if len(row[1]) == dim * 4]
    if len(good) != len(rows):
        log.warning("skipping %d vectors that are not %d-d (`mmsearch check` reports them)", len(rows) - len(good), dim)
    if not good:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    ids = np.fromiter((row[0] for row in good), dtype=np.int64, count=len(good))
    vectors = np.frombuffer(b"".join(row[1] for row in good), dtype=np.float32).reshape(len(good), dim)
    return ids, vectors
