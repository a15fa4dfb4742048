"""An index on disk: one folder holding the SQLite database, the FAISS file and the write lock."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from indexer.store.lock import write_lock
from indexer.store.vectors import VectorIndex, choose_index_spec, sidecar_path, supports_removal, training_sample_size
from indexer.errors import StoreError

log = logging.getLogger(__name__)

DB_NAME = "mmsearch.db"
VECTORS_NAME = "vectors.faiss"
LOCK_NAME = "write.lock"
TEXT_EXPORT_NAME = "text_encoder"
IMAGE_EXPORT_NAME = "image_encoder"


def default_db_dir() -> Path:
    """$MMSEARCH_DB, else $XDG_DATA_HOME/mmsearch, else ~/.local/share/mmsearch."""
    if os.environ.get("MMSEARCH_DB"):
        return Path(os.environ["MMSEARCH_DB"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "mmsearch"


class Library:
    """The stores of one index, opened together."""

    def __init__(self, folder: Path, *, create: bool = True, read_only: bool = False):
        self.folder = Path(folder).expanduser().absolute()
        if not (self.folder / DB_NAME).exists():
            if not create:
                raise StoreError(f"no index at {self.folder}: run `mmsearch index FOLDER` first (or pass --db)")
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create index folder {self.folder}: {exc.strerror or exc}") from exc
        if read_only:  # a search: plain sqlite3 for the hot reads, SQLAlchemy only if something else is asked
            from indexer.store.snapshot import open_for_search

            self.meta = open_for_search(self.folder / DB_NAME)
        else:
            from indexer.store.meta import MetaStore

            self.meta = MetaStore(self.folder / DB_NAME)

    @property
    def vectors_path(self) -> Path:
        return self.folder / VECTORS_NAME

    @property
    def text_export_path(self) -> Path:
        """The index model's text tower exported to ONNX, for torch-free text searches."""
        return self.folder / TEXT_EXPORT_NAME

    @property
    def image_export_path(self) -> Path:
        """The index model's image tower exported to ONNX (fp32 + int8), for the onnx precisions."""
        return self.folder / IMAGE_EXPORT_NAME

    @property
    def image_precision(self) -> str:
        """The CPU image-tower precision this index was filled with (fp32 for indexes older than the option)."""
        return self.meta.get_info("image_precision") or "fp32"

    @property
    def lock_path(self) -> Path:
        return self.folder / LOCK_NAME

    def lock(self, wait_s: float = 0.0):
        return write_lock(self.lock_path, wait_s)

    def close(self) -> None:
        self.meta.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def index_type(self) -> str:
        return self.meta.get_info("index_type") or "auto"

    def set_index_type(self, index_type: str) -> None:
        self.meta.set_info("index_type", index_type)

    def size_on_disk(self) -> int:
        names = [DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", VECTORS_NAME, sidecar_path(Path(VECTORS_NAME)).name]
        return sum((self.folder / name).stat().st_size for name in names if (self.folder / name).exists())

    # --- the FAISS copy ---------------------------------------------------------------------
    def _rebuild(self, dim: int, spec: str, generation: int, *, tune: bool = False) -> VectorIndex:
        log.info("building %s vector index from the database", spec)
        index = VectorIndex.build(dim, spec, self.meta.iter_vectors(dim), generation,
                                  train_vectors=self._training_sample(dim, spec, generation))
        if tune and not spec.startswith("Flat"):  # nprobe / efSearch for recall@10 >= 0.95 at the least latency
            from indexer.store.autotune import tune_index

            tune_index(index, lambda: self.meta.iter_vectors(dim))
        return index

    def _training_sample(self, dim: int, spec: str, generation: int):
        """Vectors drawn at random across the whole collection for an IVF index to train on, or None.

        The first vectors in the database are the first folders indexed: clustering only those
        would place every list in the look of a few folders.
        """
        import numpy as np

        ids = self.meta.vector_ids()
        size = training_sample_size(spec, len(ids))
        if not size:
            return None
        chosen = np.sort(np.random.default_rng(generation).choice(ids, size=size, replace=False))
        return self.meta.vectors_for(chosen.tolist(), dim)[1]

    def update_vectors(self, *, base_generation: int, changed_ids=(), removed_ids=(),
                       rebuild: bool = False) -> VectorIndex | None:
        """Bring the FAISS file up to the database (call with the write lock held).

        When the file holds `base_generation` and its type still fits, applies only the changes;
        otherwise rebuilds it from the vectors in the database. Returns None for an empty index.
        """
        model = self.meta.model()
        if model is None:
            return None
        generation = self.meta.generation
        count = self.meta.counts()["items"]
        spec = choose_index_spec(count, self.index_type)
        current = VectorIndex.load(self.vectors_path) if self.vectors_path.exists() else None
        if not rebuild and current is not None and current.generation == generation and current.spec == spec \
                and current.dim == model.dim:
            return current
        incremental = not rebuild and (
            current is not None and current.generation == base_generation and current.spec == spec
            and current.dim == model.dim and supports_removal(spec)
        )
        if incremental:
            changed = list(changed_ids)
            current.remove(list(removed_ids) + changed)
            ids, vectors = self.meta.vectors_for(changed, model.dim)
            current.add(ids, vectors)
            current.generation = generation
            if current.ntotal != count:
                log.warning("incremental update left %d vectors for %d items; rebuilding", current.ntotal, count)
                current = self._rebuild(model.dim, spec, generation, tune=True)
        else:
            current = self._rebuild(model.dim, spec, generation, tune=True)
        current.save(self.vectors_path)
        return current

    def vectors_for_search(self) -> VectorIndex | None:
        """The FAISS index matching the database's last commit (rebuilt in memory if the file is stale)."""
        model = self.meta.model()
        if model is None:
            return None
        generation = self.meta.generation
        current = VectorIndex.load(self.vectors_path, mmap=True) if self.vectors_path.exists() else None
        if current is not None and current.generation == generation and current.dim == model.dim:
            return current
        spec = choose_index_spec(self.meta.counts()["items"], self.index_type)
        return self._rebuild(model.dim, spec, generation)
