"""An index run's writes: what is known of a folder, marking, writing outcomes, sweeping, forgetting.

rclip's mark / clear / sweep: rows under a root are tagged with the run that saw them; what no run
saw is swept. Every method that changes rows is one transaction. Writes return the vector ids they
added and removed, so the vector files can follow incrementally.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable, Sequence

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from indexer.store.database import Database, in_chunks, insert_rows, vector_to_blob
from indexer.store.records import KnownFile, NewItem, WriteResult
from indexer.store.schema import Item, VectorRow

log = logging.getLogger(__name__)

REUSE_GONE = "content hash matched an item whose vector is gone; will re-embed next run"


def folder_range(folder: str) -> tuple[str, str]:
    """Paths strictly under `folder` sort between 'folder/' and 'folder0' ('0' follows '/')."""
    folder = folder.rstrip("/")
    return folder + "/", folder + "0"


class ItemStore:
    def __init__(self, db: Database):
        self.db = db

    def known_files(self, folder: str) -> dict[str, KnownFile]:
        low, high = folder_range(folder)
        with self.db.reading() as session:
            rows = session.execute(
                select(Item.path, Item.id, Item.size, Item.mtime, Item.error).where(Item.path >= low, Item.path < high)
            )
            return {path: KnownFile(item_id, size, mtime, error is not None) for path, item_id, size, mtime, error in rows}

    def mark_seen(self, item_ids: Iterable[int], run_id: int) -> None:
        with self.db.transaction() as session:
            for chunk in in_chunks(list(item_ids)):
                session.execute(update(Item).where(Item.id.in_(chunk)).values(seen_run=run_id))

    def hashes_with_vectors(self) -> dict[str, int]:
        """content hash -> an item id holding vectors for it (for renamed and copied files)."""
        with self.db.reading() as session:
            rows = session.execute(
                select(Item.content_hash, Item.id).where(Item.content_hash.is_not(None))
                .where(Item.id.in_(select(VectorRow.item_id)))
            )
            return {content_hash: item_id for content_hash, item_id in rows}

    def write_batch(self, items: Sequence[NewItem], run_id: int) -> WriteResult:
        """Insert or update items and replace their vectors, in one transaction.

        A file given vectors (or a source to reuse them from) gets exactly those; a file with an
        error keeps none. Bulk statements (executemany), not one ORM object per file: a folder of
        100k broken files costs seconds, not minutes.
        """
        now = time.time()
        result = WriteResult()
        with self.db.transaction() as session:
            ids = _ids_by_path(session, [new.path for new in items])
            sources = _vectors_of(session, {new.reuse_from for new in items if not new.vectors and new.reuse_from is not None})
            rows, parts = {}, {}
            for new in items:
                row = {"path": new.path, "modality": new.modality, "size": new.size, "mtime": new.mtime,
                       "content_hash": new.content_hash, "width": new.width, "height": new.height,
                       "format": new.format, "indexed_at": now, "error": new.error, "seen_run": run_id,
                       "taken_at": new.taken_at, "duration_s": new.duration_s}
                part = None
                if new.vectors:
                    part = [(embedded.encoder, embedded.start_s, vector_to_blob(embedded.vector)) for embedded in new.vectors]
                elif new.reuse_from is not None:
                    part = sources.get(new.reuse_from)
                    if not part:
                        row["error"] = REUSE_GONE
                        row["size"] = -1  # forces a re-embed on the next run
                rows[new.path], parts[new.path] = row, part
            inserts = [row for path, row in rows.items() if path not in ids]
            updates = [{"id": ids[path], **row} for path, row in rows.items() if path in ids]
            insert_rows(session, Item.__table__, inserts)
            if updates:
                session.execute(update(Item), updates)
            ids.update(_ids_by_path(session, [row["path"] for row in inserts]))
            item_ids = [ids[path] for path in rows]
            result.removed = _vector_ids_of(session, item_ids)
            for chunk in in_chunks(result.removed):
                session.execute(delete(VectorRow).where(VectorRow.id.in_(chunk)))
            next_id = _next_vector_id(session)
            vector_rows = []
            for path, part in parts.items():
                if part is None:
                    continue
                item_id = ids[path]
                result.hashes[item_id] = rows[path]["content_hash"]
                for encoder, start_s, blob in part:
                    vector_rows.append({"id": next_id, "item_id": item_id, "encoder": encoder, "start_s": start_s,
                                        "vector": blob})
                    result.added.append(next_id)
                    next_id += 1
            insert_rows(session, VectorRow.__table__, vector_rows)
            if vector_rows:
                _advance_vector_ids(session, next_id - 1)
            self.db.bump_generation(session)
        return result

    def sweep(self, folder: str, run_id: int) -> WriteResult:
        """Delete items under `folder` not seen by run `run_id` (gone from disk)."""
        low, high = folder_range(folder)
        return self._delete_where((Item.path >= low) & (Item.path < high) & (Item.seen_run != run_id))

    def forget(self, folder: str) -> WriteResult:
        """Delete every item under `folder` (or the item at exactly that path)."""
        low, high = folder_range(folder)
        return self._delete_where(((Item.path >= low) & (Item.path < high)) | (Item.path == folder.rstrip("/")))

    def _delete_where(self, condition) -> WriteResult:
        result = WriteResult()
        with self.db.transaction() as session:
            item_ids = list(session.scalars(select(Item.id).where(condition)))
            result.removed = _vector_ids_of(session, item_ids)
            for chunk in in_chunks(item_ids):
                session.execute(delete(VectorRow).where(VectorRow.item_id.in_(chunk)))
                session.execute(delete(Item).where(Item.id.in_(chunk)))
            if item_ids:
                self.db.bump_generation(session)
        result.deleted_items = item_ids
        return result

    def drop_inconsistent(self, *, dims: dict[str, int], staged_dim: int | None,
                          missing_ids: Sequence[int] = (), changed_ids: Sequence[int] = ()) -> dict[str, int]:
        """`mmsearch repair`'s database half, one transaction: drop vectors without a row, vectors of
        the wrong size for their encoder's model (`dims`), staged vectors no reindex will use
        (`staged_dim` None: no reindex under way), rows with neither vectors nor an error (the next
        run embeds their files afresh), the rows in `missing_ids` (files gone) and in `changed_ids` (files
        that hold other content than was indexed). Returns counts."""
        dropped = {"orphan_vectors": 0, "bad_vectors": 0, "orphan_staged": 0, "rows_without_vector": 0, "missing": 0,
                   "changed": 0}
        with self.db.transaction() as session:
            def run(sql: str, params: dict | None = None) -> int:
                return session.execute(text(sql), params or {}).rowcount or 0

            dropped["orphan_vectors"] = run("DELETE FROM vectors WHERE item_id NOT IN (SELECT id FROM items)")
            for encoder, dim in dims.items():  # without a recorded model there is no right size: keep them
                dropped["bad_vectors"] += run("DELETE FROM vectors WHERE encoder = :encoder AND length(vector) != :size",
                                              {"encoder": encoder, "size": dim * 4})
            dropped["orphan_staged"] = run("DELETE FROM staged_vectors WHERE item_id NOT IN (SELECT id FROM items)")
            if staged_dim is None:
                dropped["orphan_staged"] += run("DELETE FROM staged_vectors")
            else:
                dropped["orphan_staged"] += run("DELETE FROM staged_vectors WHERE length(vector) != :size",
                                                {"size": staged_dim * 4})
            dropped["rows_without_vector"] = run(
                "DELETE FROM items WHERE error IS NULL AND id NOT IN (SELECT item_id FROM vectors)")
            for chunk in in_chunks(list(missing_ids)):
                session.execute(delete(VectorRow).where(VectorRow.item_id.in_(chunk)))
                dropped["missing"] += session.execute(delete(Item).where(Item.id.in_(chunk))).rowcount or 0
            for chunk in in_chunks(list(changed_ids)):
                session.execute(delete(VectorRow).where(VectorRow.item_id.in_(chunk)))
                dropped["changed"] += session.execute(delete(Item).where(Item.id.in_(chunk))).rowcount or 0
            if any(dropped.values()):
                self.db.bump_generation(session)
        return dropped


def _ids_by_path(session: Session, paths: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for chunk in in_chunks(paths):
        out.update(session.execute(select(Item.path, Item.id).where(Item.path.in_(chunk))).all())
    return out


def _vector_ids_of(session: Session, item_ids: Sequence[int]) -> list[int]:
    out: list[int] = []
    for chunk in in_chunks(item_ids):
        out.extend(session.scalars(select(VectorRow.id).where(VectorRow.item_id.in_(chunk))))
    return out


def _vectors_of(session: Session, item_ids) -> dict[int, list[tuple[str, float | None, bytes]]]:
    """item id -> its vectors as (encoder, start_s, blob), in vector id order."""
    out: dict[int, list] = {}
    for chunk in in_chunks(list(item_ids)):
        rows = session.execute(select(VectorRow.item_id, VectorRow.encoder, VectorRow.start_s, VectorRow.vector)
                               .where(VectorRow.item_id.in_(chunk)).order_by(VectorRow.id))
        for item_id, encoder, start_s, blob in rows:
            out.setdefault(item_id, []).append((encoder, start_s, blob))
    return out


def _next_vector_id(session: Session) -> int:
    """The first vector id never used (AUTOINCREMENT's sequence, or past the largest id): ids are given
    explicitly so one executemany writes a batch and the ids are known without reading them back."""
    if session.connection().dialect.name == "postgresql":
        used = session.execute(text(
            "SELECT greatest((SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM vectors_id_seq), "
            "coalesce((SELECT max(id) FROM vectors), 0))")).scalar()
        return int(used or 0) + 1
    used = session.execute(text(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'vectors'), 0), "
        "coalesce((SELECT max(id) FROM vectors), 0))")).scalar()
    return int(used or 0) + 1


def _advance_vector_ids(session: Session, last_id: int) -> None:
    """PostgreSQL: move the vectors' id sequence past the ids given explicitly, so ids are never reused
    and a reindex's INSERT ... SELECT (which takes ids from the sequence) follows them (SQLite's
    AUTOINCREMENT does this by itself). A rolled-back batch leaves a gap, never a reuse."""
    if session.connection().dialect.name == "postgresql":
        session.execute(text("SELECT setval('vectors_id_seq', greatest(:last, (SELECT last_value FROM vectors_id_seq)))"),
                        {"last": int(last_id)})
