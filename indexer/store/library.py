"""An index on disk: one folder holding the SQLite database, the vector files and the write lock.
(Or the vector files and the lock, with the metadata in PostgreSQL: the folder remembers its URL,
indexer.store.location.)

`Library` opens the stores of one index together and gives each job its own object: `items`
(an index run's writes), `reads`, `runs`, `staging` (reindex); `model()`, `generation` and
`get_info` are the index's identity. A read-only library (a search) answers its hot reads with
plain sqlite3 (`snapshot`) and opens SQLAlchemy only when something else is asked.

The vector files are derived copies of the database's vectors, one per encoder, each stamped with
the database generation it holds; a stale file is rebuilt (or updated in place) from the database.
"""
from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path
from typing import Iterable

from indexer.errors import StoreError
from indexer.store import index_choice
from indexer.store.index_choice import IndexChoice, VectorFiles
from indexer.store.location import DB_NAME, database_url_of
from indexer.store.lock import write_lock
from indexer.store.records import IMAGE, ModelInfo
from indexer.store.vectors import saved_count, supports_removal

log = logging.getLogger(__name__)

VECTORS_NAME = "vectors.faiss"


def vector_file_name(encoder: str = IMAGE) -> str:
    """The vector file of `encoder` in an index folder (the image encoder's is VECTORS_NAME)."""
    return VECTORS_NAME if encoder == IMAGE else f"vectors-{encoder}.faiss"
LOCK_NAME = "write.lock"
TEXT_EXPORT_NAME = "text_encoder"
IMAGE_EXPORT_NAME = "image_encoder"


def default_db_dir() -> Path:
    """$MMSEARCH_DB, else $XDG_DATA_HOME/mmsearch, else ~/.local/share/mmsearch."""
    if os.environ.get("MMSEARCH_DB"):
        return Path(os.environ["MMSEARCH_DB"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "mmsearch"


def _refuse_an_emptied_database(folder: Path) -> None:
    """A database of 0 bytes beside an index's other files was truncated or replaced: opening it
    would make a fresh empty index and lose the link to everything in the folder (once, `repair`
    then deleted the vector file and said healthy). Nothing is changed; the person decides."""
    database = folder / DB_NAME
    try:
        empty = database.stat().st_size == 0
    except OSError:
        return
    others = [name for name in (VECTORS_NAME, TEXT_EXPORT_NAME, IMAGE_EXPORT_NAME) if (folder / name).exists()]
    if empty and others:
        raise StoreError(
            f"{database} is empty (0 bytes) while {folder} holds an index's other files ({', '.join(others)}): the "
            f"database was truncated or replaced. Nothing was changed. Restore it from a backup, or move the folder "
            f"aside (mv {folder} {folder}.broken) and run `mmsearch index FOLDER` again")


def _db_rows(db, sql: str, params) -> list[tuple]:
    from indexer.store.sql import run_sql

    with db.reading() as session:
        return [tuple(row) for row in run_sql(session, sql, tuple(params)).fetchall()]


class Library:
    """The stores of one index, opened together."""

    def __init__(self, folder: Path, *, create: bool = True, read_only: bool = False):
        self.folder = Path(folder).expanduser().absolute()
        self.database_url = database_url_of(self.folder)  # None: SQLite in the folder
        if self.database_url is None:
            _refuse_an_emptied_database(self.folder)
        if self.database_url is None and not (self.folder / DB_NAME).exists():
            if not create:
                raise StoreError(f"no index at {self.folder}: run `mmsearch index FOLDER` first (or pass --db)")
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create index folder {self.folder}: {exc.strerror or exc}") from exc
        self._snapshot = None
        # a search on SQLite: plain sqlite3 for the hot reads, SQLAlchemy only if something else is asked
        if read_only and self.database_url is None:
            from indexer.store.snapshot import Snapshot, StaleSchema

            try:
                self._snapshot = Snapshot(self.db_path)
            except StaleSchema:
                self.db  # noqa: B018 - opens (and migrates) the database now
        else:
            self.db  # noqa: B018

    @property
    def db_path(self) -> Path:
        return self.folder / DB_NAME

    @property
    def database_target(self) -> Path | str:
        """What `indexer.store.inspect` opens read-only: the SQLite file, or the PostgreSQL URL."""
        return self.database_url or self.db_path

    @property
    def database_name(self) -> str:
        """Where the metadata lives, for people: the SQLite file, or the PostgreSQL URL without its password."""
        if self.database_url is None:
            return str(self.db_path)
        from indexer.store.urls import redact

        return redact(self.database_url)

    # --- the stores -------------------------------------------------------------------------
    @cached_property
    def db(self):
        from indexer.store.database import Database

        if self.database_url is not None:
            return Database(url=self.database_url)
        return Database(self.db_path)

    @cached_property
    def items(self):
        from indexer.store.items import ItemStore

        return ItemStore(self.db)

    @cached_property
    def reads(self):
        if self._snapshot is not None:
            from indexer.store.snapshot import SnapshotReads

            return SnapshotReads(self._snapshot, lambda: self.db)
        from indexer.store.reads import ItemReads

        return ItemReads(self.db)

    @cached_property
    def runs(self):
        from indexer.store.runs import RunLog

        return RunLog(self.db)

    @cached_property
    def roots(self):
        from indexer.store.roots import RootStore

        return RootStore(self.db)

    @cached_property
    def staging(self):
        from indexer.store.staging import Staging

        return Staging(self.db)

    @cached_property
    def words(self):
        """The words read in pictures (indexer.store.words); plain sqlite3 reads on the search path."""
        from indexer.store.words import WordStore

        if self._snapshot is not None:
            return WordStore(self._snapshot._rows, lambda: self.db)
        return WordStore(lambda sql, params: _db_rows(self.db, sql, params), lambda: self.db,
                         postgres=self.db.is_postgres)

    # --- identity -----------------------------------------------------------------------
    @property
    def _hot(self):
        return self._snapshot if self._snapshot is not None else self.db

    def model(self, encoder: str = IMAGE) -> ModelInfo | None:
        return self._hot.model(encoder)

    @property
    def generation(self) -> int:
        return self._hot.generation

    def get_info(self, key: str) -> str | None:
        return self._hot.get_info(key)

    def set_info(self, key: str, value: str) -> None:
        self.db.set_info(key, value)

    # --- files of the index -------------------------------------------------------------------
    def vectors_path(self, encoder: str = IMAGE) -> Path:
        return self.folder / vector_file_name(encoder)

    def saved_vectors(self, encoder: str = IMAGE) -> int | None:
        """The vectors `encoder`'s saved file holds (None: no saved file to tell), without loading it."""
        return saved_count(self.vectors_path(encoder))

    @property
    def text_export_path(self) -> Path:
        """The index model's text tower exported to ONNX, for torch-free text searches."""
        return self.folder / TEXT_EXPORT_NAME

    @property
    def image_export_path(self) -> Path:
        """The index model's image tower exported to ONNX (fp32 + int8), for the onnx precisions."""
        return self.folder / IMAGE_EXPORT_NAME

    @property
    def image_precision(self) -> str | None:
        """The CPU image-tower precision this index records (None: never recorded)."""
        return self.get_info("image_precision")

    @property
    def lock_path(self) -> Path:
        return self.folder / LOCK_NAME

    def lock(self, wait_s: float = 0.0):
        return write_lock(self.lock_path, wait_s)

    def close(self) -> None:
        if self._snapshot is not None:
            self._snapshot.close()
        if "db" in self.__dict__:
            self.db.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def index_type(self) -> str:
        return self.get_info("index_type") or "auto"

    def set_index_type(self, index_type: str) -> None:
        self.set_info("index_type", index_type)

    @property
    def max_index_memory(self) -> int | None:
        """The memory budget recorded for the vector index (bytes); None: the machine's default."""
        value = self.get_info("max_index_memory")
        return int(value) if value else None

    def set_max_index_memory(self, budget: int) -> None:
        self.set_info("max_index_memory", str(int(budget)))

    def index_choice(self, count: int, dim: int) -> IndexChoice:
        """Which vector index `count` vectors of `dim` get (kind and spec), by the memory budget."""
        return index_choice.choose_index(count, dim, self.index_type, self.max_index_memory)

    def vector_files(self, encoder: str = IMAGE) -> VectorFiles:
        """Where `encoder`'s vector index lives, in memory (a FAISS file) or on disk (a folder)."""
        return VectorFiles.of(self.vectors_path(encoder))

    def size_on_disk(self) -> int:
        """Bytes of every file in the index folder: database (with its WAL), vector files, model
        exports, thumbnails."""
        total = 0
        for folder, _, names in os.walk(self.folder):
            for name in names:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except OSError:
                    continue
        return total

    # --- the vector files -------------------------------------------------------------------
    def _rebuild(self, dim: int, choice: IndexChoice, generation: int, encoder: str, *, tune: bool = False):
        spec = choice.spec
        log.info("building %s vector index (%s) from the database", spec, choice.kind)
        index = index_choice.build_index(choice, dim, self.reads.iter_vectors(dim, encoder), generation,
                                         files=self.vector_files(encoder),
                                         train_vectors=self._training_sample(dim, choice, generation, encoder))
        if tune and not spec.startswith("Flat"):  # nprobe / efSearch for recall@10 >= 0.95 at the least latency
            from indexer.store.autotune import tune_index

            tune_index(index, lambda: self.reads.iter_vectors(dim, encoder))
        return index

    def _training_sample(self, dim: int, choice: IndexChoice, generation: int, encoder: str):
        """Vectors drawn at random across the whole collection for an IVF index to train on, or None.

        The first vectors in the database are the first folders indexed: clustering only those
        would place every list in the look of a few folders.
        """
        import numpy as np

        ids = self.reads.vector_ids(encoder)
        size = index_choice.training_sample_size(choice, len(ids))
        if not size:
            return None
        chosen = np.sort(np.random.default_rng(generation).choice(ids, size=size, replace=False))
        return self.reads.vectors_for(chosen.tolist(), dim)[1]

    def encoders(self) -> list[str]:
        """The encoders that have a model recorded (each has its own vector file), the image one first."""
        recorded = self.get_info("encoders")  # kept by bind_encoder: the hot path reads no models table
        names = recorded.split(",") if recorded else ([IMAGE] if self.model(IMAGE) is not None else [])
        return sorted(names, key=lambda name: (name != IMAGE, name))

    def bind_encoder(self, name: str, info: ModelInfo) -> None:
        """Record the model that fills `name`'s vectors (refusing another one later) and list the encoder."""
        self.db.bind_model(info, name)
        names = set(self.encoders()) | {name}
        if self.get_info("encoders") != ",".join(sorted(names)):
            self.set_info("encoders", ",".join(sorted(names)))

    def encoders_sharing(self, info: ModelInfo) -> list[str]:
        """The encoders whose vectors live in `info`'s space (their model is `info`): a query vector made
        by `info`'s text tower ranks them all."""
        return [name for name in self.encoders() if (model := self.model(name)) is not None
                and model.fingerprint == info.fingerprint]

    def update_vectors(self, *, base_generation: int, added: Iterable[int] = (), removed: Iterable[int] = (),
                       rebuild: bool = False) -> None:
        """Bring every encoder's vector file up to the database (call with the write lock held).

        Where a file holds `base_generation` and its type still fits, only the changes (vector ids
        `added` and `removed`) are applied; otherwise it is rebuilt from the database."""
        added, removed = list(added), list(removed)
        for encoder in self.encoders():
            self.update_vector_file(encoder, base_generation=base_generation, added=added, removed=removed,
                                    rebuild=rebuild)

    def update_vector_file(self, encoder: str = IMAGE, *, base_generation: int, added=(), removed=(),
                           rebuild: bool = False):
        model = self.model(encoder)
        if model is None:
            return None
        files = self.vector_files(encoder)
        generation = self.generation
        count = self.reads.vector_count(encoder)
        choice = self.index_choice(count, model.dim)
        current = index_choice.load_saved(files, generation=generation)
        fits = index_choice.fits(current, choice) and current.dim == model.dim
        if not rebuild and fits and current.generation == generation:
            return current
        if not rebuild and fits and current.generation == base_generation and supports_removal(choice.spec):
            current.remove(list(removed))
            ids, vectors = self.reads.vectors_for(list(added), model.dim, encoder)
            current.add(ids, vectors)
            current.generation = generation
            if current.ntotal != count:
                log.warning("incremental update left %d vectors for %d in the database; rebuilding", current.ntotal, count)
                current = self._rebuild(model.dim, choice, generation, encoder, tune=True)
        else:
            current = self._rebuild(model.dim, choice, generation, encoder, tune=True)
        index_choice.save_index(current, files)
        return current

    def vectors_for_search(self, encoder: str = IMAGE):
        """The vector index matching the database's last commit (rebuilt in memory if the file is stale;
        an on-disk one, far too big for that, is searched as last committed)."""
        model = self.model(encoder)
        if model is None:
            return None
        generation = self.generation
        current = index_choice.load_saved(self.vector_files(encoder), mmap=True, generation=generation)
        if current is not None and current.generation == generation and current.dim == model.dim:
            return current
        if index_choice.index_kind(current) == "ondisk" and current.dim == model.dim:
            # `rank` drops hits of items gone since; new ones appear once the run adding them saves the index
            log.info("on-disk vector index is at generation %d, the database at %d: searching it as it is",
                     current.generation, generation)
            return current
        count = self.reads.vector_count(encoder)
        choice = self.index_choice(count, model.dim)
        if choice.kind == "ondisk":  # no usable file: an in-memory one for this search (`mmsearch repair` writes one)
            choice = index_choice.choose_index(count, model.dim, "auto", 1 << 62)
        return self._rebuild(model.dim, choice, generation, encoder)
