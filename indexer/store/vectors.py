"""Vector store: a FAISS index keyed by item id, chosen by collection size, saved atomically.

The index is derived from the vectors in the metadata store and records the store generation it
was built from (a JSON sidecar); a stale or missing file is rebuilt, never trusted.

Index types (faiss wiki, "Guidelines to choose an index"; inner product on L2-normalised vectors,
i.e. cosine):
- ``Flat``             exact; the default below 100k vectors, where brute force is fast enough.
- ``IVF{n},SQfp16``    inverted lists, n ~ 4*sqrt(N) (a power of two), vectors stored as float16:
                       the default from 100k on. Half the memory of ``IVF{n},Flat`` with the same
                       recall (1M clip-like vectors: 1.000 at nprobe 128 for both, 0.981 / 0.981 at
                       nprobe 8; SQ8 would quarter it but caps recall@10 at ~0.97; docs/BENCHMARKS.md
                       "### 2. Search"). Supports removal, so runs update it in place.
- ``HNSW32``           graph index, on request (`--index-type hnsw`); no removal, rebuilt on change.

Ids: an IVF index keeps the item ids in its inverted lists (faiss `add_with_ids`); the other types
sit in an `IndexIDMap2`. Not an id map over IVF: an IVF index does not renumber its entries on
removal, so the map's positions drift from the lists' and every later hit names another item (files
of that layout are converted on load while they are still aligned, else rebuilt).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from indexer.errors import MmsearchError, StoreError

log = logging.getLogger(__name__)

EXACT_LIMIT = 100_000
IVF_STORAGE = "SQfp16"  # float16 vectors in the inverted lists: half of Flat's memory, same recall
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw", "ondisk")  # ondisk: indexer.store.index_choice
DEFAULT_NPROBE = 32
DEFAULT_EF_SEARCH = 128
# IVF k-means trains on the first min(nlist * 40, 200k) vectors (rounded up to whole chunks): faiss
# warns on stderr below 39 per list, and training time grows with the sample. 1M clip-like vectors,
# IVF4096 on 2 shared cores: 180k -> 182 CPU-s for the whole build, 280k (64 per list) -> 235 CPU-s,
# recall@10 within 0.004 at every nprobe (docs/BENCHMARKS.md "### 2. Search").
TRAIN_POINTS_PER_LIST = 40
MAX_TRAIN_POINTS = 200_000


def _faiss():
    import faiss

    return faiss


class IndexTypeError(MmsearchError):
    """An --index-type that is neither a known name nor an index_factory string faiss can build."""


def check_index_type(index_type: str, dim: int | None = None) -> str:
    """`index_type` when it can be built (for `dim`-d vectors when given), else IndexTypeError; call
    before any work, so a typo never costs a run."""
    if index_type.lower() in INDEX_TYPES:
        return index_type
    faiss = _faiss()
    try:
        faiss.index_factory(dim or 64, index_type, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "faiss cannot build it"
        raise IndexTypeError(
            f"--index-type {index_type!r} is not usable{f' for {dim}-d vectors' if dim else ''} ({reason}); "
            f"give auto, flat, ivf, hnsw or a faiss index_factory string such as 'IVF1024,SQfp16'") from None
    return index_type


def choose_index_spec(n_vectors: int, index_type: str = "auto") -> str:
    """The faiss index_factory string for a collection of n_vectors."""
    if index_type.lower() not in INDEX_TYPES:  # a raw index_factory string, for experts
        match = re.match(r"(?:.*,)?IVF(\d+)", index_type)
        if match and n_vectors < int(match.group(1)):  # cannot train yet: exact search until it can
            log.warning("%s needs at least %s vectors to train; %d so far: searching them exactly meanwhile",
                        index_type, match.group(1), n_vectors)
            return "Flat"
        return index_type
    index_type = index_type.lower()
    if index_type == "flat" or (index_type == "auto" and n_vectors < EXACT_LIMIT):
        return "Flat"
    if index_type == "hnsw":
        return "HNSW32"
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(max(n_vectors, 1)), 16)))
    nlist = max(1, min(nlist, n_vectors // 39 or 1))  # faiss wants >= 39 training points per list
    return f"IVF{nlist},{IVF_STORAGE}"


def training_sample_size(spec: str, n_vectors: int) -> int:
    """How many vectors an index of `spec` trains on (0: it needs no training, or takes them all)."""
    match = re.match(r"IVF(\d+)", spec)
    if not match:
        return 0
    needed = min(int(match.group(1)) * TRAIN_POINTS_PER_LIST, MAX_TRAIN_POINTS)
    return needed if n_vectors > needed else 0


def supports_removal(spec: str) -> bool:
    return not spec.startswith("HNSW")


@dataclass(frozen=True)
class SearchTuning:
    nprobe: int = DEFAULT_NPROBE
    ef_search: int = DEFAULT_EF_SEARCH
    rerank: int = 0  # on-disk IVF-PQ (indexer.store.ondisk): candidates re-scored exactly; 0: its default


class VectorIndex:
    """A FAISS index of unit vectors keyed by item id (int64)."""

    def __init__(self, index, spec: str, generation: int, tuning: SearchTuning | None = None,
                 tuning_report: dict | None = None):
        self.index = index
        self.spec = spec
        self.generation = generation
        self.tuning = tuning  # chosen by indexer.store.autotune for this index; None: the defaults
        # what the tuner measured (recall, latency, targets met, a "status" line); saved with the index
        self.tuning_report = tuning_report

    @property
    def dim(self) -> int:
        return self.index.d

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @classmethod
    def build(cls, dim: int, spec: str, chunks: Iterable[tuple[np.ndarray, np.ndarray]], generation: int,
              train_size: int = 0, train_vectors: np.ndarray | None = None) -> "VectorIndex":
        """Build from (ids, vectors) chunks; an IVF index is trained on `train_vectors` when given (a
        sample drawn across the whole collection: `training_sample_size`), else on the first
        `train_size` vectors (0: min(nlist * TRAIN_POINTS_PER_LIST, MAX_TRAIN_POINTS))."""
        faiss = _faiss()
        index = _with_ids(faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT))
        if not index.is_trained and train_vectors is not None and len(train_vectors):
            index.train(np.ascontiguousarray(train_vectors, dtype=np.float32))
        pending_ids, pending_vectors = [], []
        needed = 0
        if not index.is_trained:
            nlist = faiss.extract_index_ivf(index).nlist
            needed = train_size or min(nlist * TRAIN_POINTS_PER_LIST, MAX_TRAIN_POINTS)
        for ids, vectors in chunks:
            if not index.is_trained:
                pending_ids.append(ids)
                pending_vectors.append(vectors)
                if sum(len(v) for v in pending_vectors) < needed:
                    continue
                sample = np.concatenate(pending_vectors)
                index.train(sample)
                ids, vectors = np.concatenate(pending_ids), sample
                pending_ids, pending_vectors = [], []
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
        if pending_vectors:  # fewer vectors than the training target: train on what there is
            sample = np.concatenate(pending_vectors)
            index.train(sample)
            index.add_with_ids(sample, np.concatenate(pending_ids).astype(np.int64))
        return cls(index, spec, generation)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))

    def remove(self, ids: Sequence[int]) -> None:
        if len(ids):
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               tuning: SearchTuning | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, item_ids) per query; ids are -1 where fewer than k exist.

        `tuning` None (or the plain defaults) means the index's own tuning when it has one.
        """
        faiss = _faiss()
        tuning = self.effective_tuning(tuning)
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        params = self._params(faiss, tuning, allowed_ids)
        scores, ids = self.index.search(queries, k, params=params)
        return scores, ids

    def effective_tuning(self, tuning: SearchTuning | None) -> SearchTuning:
        """`tuning`, except that None or the plain defaults mean this index's own tuning when it has one."""
        if (tuning is None or tuning == SearchTuning()) and self.tuning is not None:
            return self.tuning
        return tuning or SearchTuning()

    def _params(self, faiss, tuning: SearchTuning, allowed_ids: np.ndarray | None):
        selector = faiss.IDSelectorBatch(np.asarray(allowed_ids, dtype=np.int64)) if allowed_ids is not None else None
        if self.spec.startswith("IVF"):
            return faiss.SearchParametersIVF(sel=selector, nprobe=tuning.nprobe)
        if self.spec.startswith("HNSW"):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(tuning.ef_search, 1))
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    # --- files ----------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write index + sidecar atomically (temp file then os.replace).

        On failure (a full disk, a read-only folder) the previous file is left as it was, the temp
        file is removed and StoreError says so: the vectors are safe in the database and a stale
        or missing file is rebuilt from there (`mmsearch repair`, the next run, or each search).
        """
        faiss = _faiss()
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            faiss.write_index(self.index, str(tmp))
            _fsync_file(tmp)
            digest = file_digest(tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0]
            raise StoreError(
                f"cannot write the vector index {path}: {reason}. The database is intact and searches still "
                f"work (they rebuild the index in memory); fix the cause, then run `mmsearch repair`"
            ) from exc
        # the file's digest: `mmsearch check` reads the file again and compares (flipped bytes once passed)
        sidecar = {"spec": self.spec, "generation": self.generation, "ntotal": self.ntotal, "dim": self.dim,
                   "file_blake2b": digest}
        if self.tuning is not None:
            sidecar["tuning"] = {"nprobe": self.tuning.nprobe, "ef_search": self.tuning.ef_search}
        if self.tuning_report is not None:
            sidecar["tuning_report"] = self.tuning_report
        _write_json_atomic(sidecar_path(path), sidecar)

    def ids(self) -> np.ndarray:
        """The item ids held, in storage order (for integrity checks)."""
        faiss = _faiss()
        if hasattr(self.index, "id_map"):
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return _ivf_ids(faiss.extract_index_ivf(self.index))

    @classmethod
    def load(cls, path: Path, *, mmap: bool = False) -> "VectorIndex | None":
        """The saved index, or None when missing or unreadable (the caller rebuilds).

        `mmap`: map the file instead of reading it (faiss IO_FLAG_MMAP_IFC): a 100k x 512 IVF opens
        in ~0.01 s instead of ~0.25 s. The result is for searching only: it must not be added to.
        """
        path = Path(path)
        try:
            meta = json.loads(sidecar_path(path).read_text())
            index = _read_index(str(path), mmap)
            if index.ntotal != meta.get("ntotal"):
                return None
            index = _without_id_map_over_ivf(index, path, mmap)
            if index is None:
                return None
            tuning = meta.get("tuning")
            tuning = SearchTuning(int(tuning["nprobe"]), int(tuning["ef_search"])) if tuning else None
            return cls(index, meta["spec"], int(meta["generation"]), tuning, meta.get("tuning_report"))
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
            log.info("vector index %s unusable (%s); it will be rebuilt", path, exc)
            return None


def _with_ids(index):
    """An index that stores item ids: IVF keeps them in its lists, the others get an id map."""
    faiss = _faiss()
    if faiss.try_extract_index_ivf(index) is not None:
        return index
    return faiss.IndexIDMap2(index)


def _ivf_ids(ivf) -> np.ndarray:
    """Every id stored in an IVF index's lists, list by list."""
    faiss = _faiss()
    invlists = ivf.invlists
    parts = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size:
            parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _without_id_map_over_ivf(index, path: Path, mmap: bool):
    """A file of the older layout (an id map over IVF; see the module's docstring) as the current one.

    Its lists hold positions into the map. While they are exactly 0..ntotal-1 (no removal has
    misaligned them) the ids are moved into the lists (mapped: the map is kept, it is still right
    and the file is read-only here); otherwise None, and the caller rebuilds from the database.
    """
    faiss = _faiss()
    if not hasattr(index, "id_map"):
        return index
    ivf = faiss.try_extract_index_ivf(faiss.downcast_index(index.index))
    if ivf is None:
        return index
    positions = _ivf_ids(ivf)
    id_map = faiss.vector_to_array(index.id_map).astype(np.int64)
    aligned = len(positions) == len(id_map) and (
        not len(positions) or np.array_equal(np.bincount(positions, minlength=len(id_map)), np.ones(len(id_map))))
    if not aligned:
        log.warning("vector index %s maps ids the old way and a removal misaligned them; it will be rebuilt", path)
        return None
    if mmap:
        return index
    inner = faiss.clone_index(index.index)
    ivf = faiss.extract_index_ivf(inner)
    invlists = ivf.invlists
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size:
            stored = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
            item_ids = np.ascontiguousarray(id_map[stored], dtype=np.int64)
            codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * invlists.code_size).copy()
            invlists.update_entries(list_no, 0, size, faiss.swig_ptr(item_ids), faiss.swig_ptr(codes))
    log.info("vector index %s: item ids moved from the id map into the IVF lists", path)
    return inner


def _read_index(path: str, mmap: bool):
    faiss = _faiss()
    flag = getattr(faiss, "IO_FLAG_MMAP_IFC", None) if mmap else None
    if flag is not None:
        try:
            return faiss.read_index(path, flag | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError as exc:  # an index type this faiss cannot map: read it
            log.debug("cannot map %s (%s); reading it", path, exc)
    return faiss.read_index(path)


def file_digest(path: Path) -> str:
    """BLAKE2b of a file's bytes, read in 4 MB blocks (about 1 GB/s)."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def saved_count(path: Path) -> int | None:
    """How many vectors the index saved at `path` holds, from its sidecar (None: not saved, unreadable)."""
    try:
        return int(json.loads(sidecar_path(path).read_text())["ntotal"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}; the database is intact, "
                         f"run `mmsearch repair` once the cause is fixed") from exc
