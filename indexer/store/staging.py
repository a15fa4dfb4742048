"""Switching an index to another model (`reindex`): new vectors staged beside the live ones.

One encoder's vectors are staged at a time (the pictures', or the sounds' with `reindex
--audio-model`). Searches keep using the live vectors; when every item has staged vectors, `swap_in` makes the
staged model the index's model and its vectors the live ones in one transaction. The swap is
recorded (`reindex_swapped`), so a reindex killed after it committed but before its vector file
was written resumes by writing that file, not by re-embedding everything.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Sequence

from sqlalchemy import delete, func, select, text, update

from indexer.errors import StoreError
from indexer.store.database import Database, in_chunks, insert_rows, vector_to_blob
from indexer.store.records import IMAGE, ModelInfo, NewItem
from indexer.store.schema import Item, ModelRow, SchemaInfo, StagedVectorRow, VectorRow

STAGED_KEY = "staged_model"
SWAPPED_KEY = "reindex_swapped"


def model_from_json(raw: str | None) -> ModelInfo | None:
    if not raw:
        return None
    data = json.loads(raw)
    return ModelInfo(data["name"], data["weights"], int(data["dim"]), data["fingerprint"])


class Staging:
    def __init__(self, db: Database, encoder: str = IMAGE):
        self.db = db
        self.encoder = encoder

    def model(self) -> ModelInfo | None:
        """The model being switched to (for whichever encoder: one reindex is staged at a time), or None."""
        return model_from_json(self.db.get_info(STAGED_KEY))

    def staged_encoder(self) -> str | None:
        """The encoder whose vectors are being staged (pictures unless a sounds' reindex), or None."""
        raw = self.db.get_info(STAGED_KEY)
        return json.loads(raw).get("encoder", IMAGE) if raw else None

    def begin(self, info: ModelInfo) -> None:
        """Start (or keep) staging vectors for `info`; staged vectors of another model are dropped."""
        with self.db.transaction() as session:
            current = session.get(SchemaInfo, STAGED_KEY)
            if current is not None and json.loads(current.value).get("fingerprint") == info.fingerprint \
                    and json.loads(current.value).get("encoder", IMAGE) == self.encoder:
                return
            session.execute(delete(StagedVectorRow))
            session.merge(SchemaInfo(key=STAGED_KEY, value=json.dumps({**asdict(info), "encoder": self.encoder})))

    def abandon(self) -> None:
        with self.db.transaction() as session:
            session.execute(delete(StagedVectorRow))
            session.execute(delete(SchemaInfo).where(SchemaInfo.key == STAGED_KEY))

    def todo(self) -> list[tuple[int, str, int, float]]:
        """(id, path, size, mtime) of items with live vectors of this encoder but no staged ones yet."""
        with self.db.reading() as session:
            live = select(VectorRow.item_id).where(VectorRow.encoder == self.encoder)
            rows = session.execute(
                select(Item.id, Item.path, Item.size, Item.mtime)
                .where(Item.id.in_(live), Item.id.not_in(select(StagedVectorRow.item_id))).order_by(Item.id)
            )
            return [tuple(row) for row in rows]

    def add_batch(self, rows: Sequence[NewItem]) -> None:
        """Stage the vectors of re-embedded items (by path); an item that failed to re-embed records
        the error and loses its live vectors (it would otherwise be searched in the wrong space)."""
        with self.db.transaction() as session:
            ids = {}
            for chunk in in_chunks([row.path for row in rows]):
                ids.update(session.execute(select(Item.path, Item.id).where(Item.path.in_(chunk))).all())
            staged, failed = [], []
            for row in rows:
                item_id = ids.get(row.path)
                if item_id is None:
                    continue
                if row.error is not None or not row.vectors:
                    failed.append((item_id, row.error or "no vectors"))
                    continue
                staged.extend({"item_id": item_id, "encoder": part.encoder, "start_s": part.start_s,
                               "vector": vector_to_blob(part.vector)} for part in row.vectors)
            for chunk in in_chunks([row["item_id"] for row in staged]):  # a resumed batch: no doubles
                session.execute(delete(StagedVectorRow).where(StagedVectorRow.item_id.in_(chunk)))
            insert_rows(session, StagedVectorRow.__table__, staged)
            for item_id, error in failed:
                session.execute(update(Item).where(Item.id == item_id).values(error=f"reindex: {error}"))
                session.execute(delete(VectorRow).where(VectorRow.item_id == item_id, VectorRow.encoder == self.encoder))
            if failed:  # only dropped live vectors change what search sees; staged ones do not
                self.db.bump_generation(session)

    def staged_count(self) -> int:
        with self.db.reading() as session:
            return session.scalar(select(func.count(func.distinct(StagedVectorRow.item_id)))) or 0

    def swap_in(self) -> int:
        """Make the staged model the index's model, its vectors the live ones: one transaction.
        Returns the number of live vectors afterwards."""
        info = self.model()
        if info is None:
            raise StoreError("no model is being staged")
        with self.db.transaction() as session:
            session.execute(delete(VectorRow).where(VectorRow.encoder == self.encoder))
            session.execute(text("INSERT INTO vectors (item_id, encoder, start_s, vector) "
                                 "SELECT item_id, encoder, start_s, vector FROM staged_vectors ORDER BY id"))
            count = session.scalar(select(func.count()).select_from(VectorRow)
                                   .where(VectorRow.encoder == self.encoder)) or 0
            session.execute(delete(StagedVectorRow))
            session.execute(delete(ModelRow).where(ModelRow.encoder == self.encoder))
            session.add(ModelRow(name=info.name, weights=info.weights, dim=info.dim, encoder=self.encoder,
                                 fingerprint=info.fingerprint, created_at=time.time()))
            session.execute(delete(SchemaInfo).where(SchemaInfo.key == STAGED_KEY))
            generation = self.db.bump_generation(session)
            session.merge(SchemaInfo(key=SWAPPED_KEY,
                                     value=json.dumps({"fingerprint": info.fingerprint, "generation": generation})))
        return count

    def swap_unfinished(self, info: ModelInfo) -> bool:
        """True when a reindex to `info` committed its swap but was stopped before it finished
        (nothing has changed the vectors since)."""
        raw = self.db.get_info(SWAPPED_KEY)
        if not raw:
            return False
        data = json.loads(raw)
        current = self.db.model(self.encoder)
        return (current is not None and current.fingerprint == info.fingerprint == data.get("fingerprint")
                and data.get("generation") == self.db.generation)

    def clear_swapped(self) -> None:
        self.db.delete_info(SWAPPED_KEY)
