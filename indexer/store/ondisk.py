"""A vector index larger than memory: OPQ + IVF-PQ with its inverted lists on disk, re-ranked by exact vectors.

The same interface as `indexer.store.vectors.VectorIndex` (build from (ids, vectors) chunks, add,
remove, search, save/load with the database generation it holds), for collections whose in-memory
index would not fit the memory budget (`indexer.store.index_choice`). Over 400 lines, kept together
on purpose: the build, the delta, the merges and the manifest all change one folder's state, and
read apart they hide the order that keeps it crash-safe. The pieces that stand alone live beside it:
`exact_vectors` (re-ranking rows), `ivf_files` (faiss files and lists), `ivf_training` (the sample).

One folder (`INDEX/vectors.ondisk/`) holds:
- `manifest.json`: which files are current, the spec, the generation, the tuning. Written last,
  temp file + os.replace: the commit point. Every other file is written once under a new name; a
  file the manifest does not name is left from an interrupted write and deleted by the next save.
- `S.faiss` + `S.ivfdata`: the base index (OPQ rotation, coarse centroids, PQ codebooks) and its
  inverted lists (codes + item ids; faiss `OnDiskInvertedLists`), memory-mapped read-only.
- `S.ids.npy` + `S.exact`: exact vectors (float16 rows, item ids ascending) for re-ranking, read
  row by row with `pread` (never mapped, so searching does not grow the process's resident memory
  towards the file's size; the OS page cache holds what it can).
- `S.delta.faiss` + `S.delta.npz`: items added since the lists were written (an in-memory IVF-PQ with
  the same codebooks, plus their float32 vectors and the tombstones: ids removed from the lists).

Build (faiss wiki "Indexes that do not fit in RAM"; faiss contrib/ondisk.py): train on a sample,
add the vectors in shards of `shard_size` to copies of the empty trained index (each written to
disk and mapped back), merge the shards' lists into one lists file. Memory stays near one shard.

Search: rotate the queries, find the nprobe nearest lists once, scan them in the base (tombstones
excluded by an ID selector) and in the delta with PQ scores, re-score the best `rerank`
candidates of each with their exact vectors, return the top k.

Updates: `add`/`remove` go to the delta; when it outgrows max(COMPACT_MIN, COMPACT_SHARE * ntotal)
`save` merges it into a new lists file and a new exact segment (old segments stay until there are
more than MAX_SEGMENTS, then they are merged into one).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from indexer.errors import StoreError
from indexer.store.exact_vectors import ExactSegment, ExactWriter, announce, fences_name
from indexer.store.ivf_files import (
    apply_chain,
    empty_like,
    list_spans,
    merge_lists,
    read_index_file,
    read_mapped,
    rewrite_lists,
    write_index,
    write_shard,
)
from indexer.store.ivf_training import QUANTIZER_EF_ADD, default_train_size, train
from indexer.store.vectors import SearchTuning

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
SHARD_SIZE = 1_000_000  # vectors per shard during a build: 72 MB of PQ64 codes + ids
DEFAULT_NPROBE = 32
DEFAULT_RERANK = 100  # candidates re-scored with their exact vectors, per query
# lists: from here they are found through an HNSW graph, not compared one by one. Below, comparing
# them all is cheaper: 16,384 centroids of 256-d, 102 us of CPU per vector in a batch (BLAS), against
# 383 us for HNSW32 at efSearch 64 (which also finds the nearest list only ~60% of the time on
# unstructured centroids); at search time all of them cost ~1 ms. From 65,536 lists (~270M
# vectors) the flat comparison outgrows that.
HNSW_QUANTIZER_FROM = 65536
COMPACT_MIN = 50_000  # a delta (added + removed) this big, or
COMPACT_SHARE = 0.02  # this share of the index, is merged into the lists on the next save
MAX_SEGMENTS = 4


def _faiss():
    import faiss

    return faiss


def ondisk_spec(n_vectors: int, dim: int) -> str:
    """The index_factory string for n_vectors of dim: OPQ to at most 256 dimensions, in PQ
    sub-vectors of 4 (8-bit codes: 64 bytes a vector at 512-d), IVF with ~4*sqrt(n) lists (a power of
    two; from HNSW_QUANTIZER_FROM on, found through an HNSW graph, as autofaiss does for big sets)."""
    reduced = dim if dim <= 256 else 256
    m = max(1, reduced // 4)
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(max(n_vectors, 1)), 16)))
    nlist = max(16, min(nlist, n_vectors // 16 or 16))
    quantizer = "_HNSW32" if nlist >= HNSW_QUANTIZER_FROM else ""
    return f"OPQ{m}_{reduced},IVF{nlist}{quantizer},PQ{m}"


def training_sample_size(spec: str, n_vectors: int) -> int:
    """Vectors an index of `spec` trains on (a random sample drawn by the caller); 0: take them all."""
    needed = default_train_size(spec)
    return needed if n_vectors > needed else 0


def is_ondisk_spec(spec: str) -> bool:
    return bool(re.search(r"IVF\d+", spec)) and bool(re.search(r"(^|,)PQ\d+", spec))


@dataclass(frozen=True)
class _Files:
    """The files of one generation of the folder (names, relative to it)."""

    index: str
    lists: str
    segments: tuple[tuple[str, str], ...]  # (ids .npy, exact rows), oldest first
    delta: str | None = None  # .delta.faiss; its .npz has the same stem
    dead: str | None = None  # .dead.npz: per segment, ids whose row there no longer counts

    def names(self) -> set[str]:
        out = {self.index, self.lists}
        for ids_name, rows_name in self.segments:
            out |= {ids_name, rows_name, fences_name(ids_name)}
        if self.delta:
            out |= {self.delta, self.delta[: -len(".faiss")] + ".npz"}
        if self.dead:
            out.add(self.dead)
        return out


class OnDiskIndex:
    """OPQ + IVF-PQ over on-disk lists, re-ranked with exact vectors; keyed by item id (int64)."""

    kind = "ondisk"

    def __init__(self, folder: Path, spec: str, generation: int, dim: int, files: _Files, base, delta,
                 delta_ids: np.ndarray, delta_vectors: np.ndarray, tombstones: np.ndarray,
                 tuning: SearchTuning | None = None, tuning_report: dict | None = None, extra: dict | None = None):
        self.folder = Path(folder)
        self.spec = spec
        self.generation = generation
        self._dim = dim
        self.files = files
        self.index = base  # the faiss base index (autotune reads its nlist)
        self._ivf = _faiss().extract_index_ivf(base)
        self._delta = delta
        self._delta_ivf = _faiss().extract_index_ivf(delta)
        self.delta_ids = delta_ids  # ascending
        self.delta_vectors = delta_vectors
        self.tombstones = tombstones  # ascending; ids in the base lists that no longer count
        dead = _read_dead(self.folder, files)
        self.segments = [ExactSegment(self.folder, ids_name, rows_name, dim, dead.get(str(number)))
                         for number, (ids_name, rows_name) in enumerate(files.segments)]
        self.tuning = tuning
        self.tuning_report = tuning_report
        self.extra = dict(extra or {})  # what the caller records with it (the memory budget)
        self._dirty = False
        self._base_selector = None
        self._lists_fd, self._list_spans = list_spans(self.folder / files.lists, self._ivf)

    # --- facts --------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.tombstones) + len(self.delta_ids)

    @property
    def delta_limit(self) -> int:
        """Added + removed vectors held apart before a save merges them into the lists (the caller
        may record its own limit in `extra`: indexer.store.index_choice sets one by the memory budget)."""
        return int(self.extra.get("delta_limit") or max(COMPACT_MIN, COMPACT_SHARE * int(self.index.ntotal)))

    @property
    def delta_size(self) -> int:
        return len(self.delta_ids) + len(self.tombstones)

    def ids(self) -> np.ndarray:
        """Every item id held (for integrity checks)."""
        from indexer.store.vectors import _ivf_ids

        base = _ivf_ids(self._ivf)
        base = base[~np.isin(base, self.tombstones)] if len(self.tombstones) else base
        return np.concatenate([base, self.delta_ids])

    def close(self) -> None:
        for segment in getattr(self, "segments", ()):
            segment.close()
        if getattr(self, "_lists_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._lists_fd)
            self._lists_fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def effective_tuning(self, tuning: SearchTuning | None) -> SearchTuning:
        if (tuning is None or tuning == SearchTuning()) and self.tuning is not None:
            return self.tuning
        return tuning or SearchTuning()

    # --- build --------------------------------------------------------------------------
    @classmethod
    def build(cls, dim: int, spec: str, chunks: Iterable[tuple[np.ndarray, np.ndarray]], generation: int, *,
              folder: Path, train_vectors: np.ndarray | None = None, train_size: int = 0,
              shard_size: int = SHARD_SIZE, on_progress: Callable[[str, int], None] | None = None) -> "OnDiskIndex":
        """Build into `folder` from (ids, vectors) chunks in ascending id order; `save(folder)` commits it.

        Trains on `train_vectors` when given (a sample across the collection: `training_sample_size`),
        else on the first `train_size` vectors (0: the default sample size, or all when fewer).
        `on_progress(stage, vectors_done)`: stages "train", "add", "merge".
        """
        faiss = _faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        progress = on_progress or (lambda stage, done: None)
        stem = _new_stem(generation)
        trained = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        if faiss.try_extract_index_ivf(trained) is None:
            raise ValueError(f"{spec} is not an IVF index")
        writer = ExactWriter(folder, stem, dim)
        shard_names: list[str] = []
        try:
            stream = train(trained, chunks, train_vectors, train_size or default_train_size(spec), progress)
            shard = faiss.clone_index(trained)
            done = 0
            for ids, vectors in stream:
                ids = np.asarray(ids, dtype=np.int64)
                vectors = np.ascontiguousarray(vectors, dtype=np.float32)
                writer.append(ids, vectors)
                shard.add_with_ids(vectors, ids)
                done += len(ids)
                if shard.ntotal >= shard_size:
                    shard_names.append(write_shard(folder, stem, len(shard_names), shard))
                    shard = faiss.clone_index(trained)
                progress("add", done)
            if shard.ntotal or not shard_names:
                shard_names.append(write_shard(folder, stem, len(shard_names), shard))
            progress("merge", done)
            files = _Files(f"{stem}.faiss", f"{stem}.ivfdata", (writer.finish(),))
            sources = [faiss.read_index(str(folder / name), faiss.IO_FLAG_MMAP) for name in shard_names]
            merged = merge_lists(faiss.clone_index(trained), [faiss.extract_index_ivf(s).invlists for s in sources],
                                  folder / files.lists)
            write_index(merged, folder / files.index)
            del merged, sources
        except BaseException:
            writer.abandon()
            _remove_stem(folder, stem)
            raise
        finally:
            for name in shard_names:
                with contextlib.suppress(OSError):
                    (folder / name).unlink()
        index = cls._open(folder, spec, generation, dim, files, delta=None, delta_ids=None, delta_vectors=None,
                          tombstones=None)
        index._dirty = True
        return index

    # --- updates ------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) vectors: they go to the delta; the lists are rewritten on a later save."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        order = np.argsort(ids, kind="stable")
        ids, vectors = ids[order], vectors[order]
        keep = np.concatenate([ids[1:] != ids[:-1], [True]])  # a repeated id: its last vector wins
        ids, vectors = ids[keep], vectors[keep]
        self.remove(ids)
        self._delta.add_with_ids(vectors, ids)
        merged_ids = np.concatenate([self.delta_ids, ids])
        order = np.argsort(merged_ids, kind="stable")
        self.delta_ids = merged_ids[order]
        self.delta_vectors = np.concatenate([self.delta_vectors, vectors])[order]
        self._dirty = True

    def remove(self, ids: Sequence[int]) -> None:
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        if not len(ids):
            return
        faiss = _faiss()
        in_delta = np.isin(self.delta_ids, ids)
        if in_delta.any():
            self._delta.remove_ids(faiss.IDSelectorBatch(self.delta_ids[in_delta]))
            self.delta_ids, self.delta_vectors = self.delta_ids[~in_delta], self.delta_vectors[~in_delta]
        in_base = ids[self._in_base(ids)]
        if len(in_base):
            self.tombstones = np.union1d(self.tombstones, in_base)
            self._base_selector = None
        self._dirty = True

    def _in_base(self, ids: np.ndarray) -> np.ndarray:
        """Which of ascending `ids` the base lists still answer with: a live row in a segment (every
        listed id has one; a removed id's row is dead after the merge that drops it) and no tombstone."""
        listed = np.zeros(len(ids), bool)
        for segment in self.segments:
            found, _ = segment.find(ids)
            listed |= found
        return listed & ~np.isin(ids, self.tombstones)

    # --- search -------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               tuning: SearchTuning | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, item_ids) per query, exact scores of the best PQ candidates; ids -1 where
        fewer than k exist."""
        faiss = _faiss()
        tuning = self.effective_tuning(tuning)
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        depth = max(k, tuning.rerank or DEFAULT_RERANK)
        nprobe = max(1, min(tuning.nprobe, self._ivf.nlist))
        rotated = apply_chain(self.index, queries)
        coarse_scores, coarse_lists = self._coarse(rotated, nprobe)
        allowed = faiss.IDSelectorBatch(np.asarray(allowed_ids, dtype=np.int64)) if allowed_ids is not None else None
        if self._lists_fd is not None:  # the probed lists' pages requested together (they are mapped: faults are one by one)
            probed = np.unique(coarse_lists[coarse_lists >= 0])
            announce(self._lists_fd, [span for span in self._list_spans[probed].tolist() if span[1]])
        parts = [self._scan(self._ivf, rotated, coarse_lists, coarse_scores, depth, nprobe,
                            self._selector(allowed, base=True))]
        if len(self.delta_ids):
            parts.append(self._scan(self._delta_ivf, rotated, coarse_lists, coarse_scores, depth, nprobe, allowed))
        candidates = np.concatenate(parts, axis=1)
        return self._rerank(queries, candidates, k)

    def _coarse(self, rotated: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """The nprobe nearest lists of each query (an HNSW quantizer searched with efSearch >= 2 * nprobe)."""
        faiss = _faiss()
        quantizer = faiss.downcast_index(self._ivf.quantizer)
        params = None
        if isinstance(quantizer, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(efSearch=max(2 * nprobe, QUANTIZER_EF_ADD))
        return quantizer.search(rotated, nprobe, params=params)

    def _selector(self, allowed, *, base: bool):
        faiss = _faiss()
        if not base or not len(self.tombstones):
            return allowed
        if self._base_selector is None:
            batch = faiss.IDSelectorBatch(self.tombstones)
            self._base_selector = (faiss.IDSelectorNot(batch), batch)
        live = self._base_selector[0]
        return live if allowed is None else _KeptSelector(faiss.IDSelectorAnd(allowed, live), allowed, live)

    @staticmethod
    def _scan(ivf, rotated, coarse_lists, coarse_scores, depth, nprobe, selector) -> np.ndarray:
        faiss = _faiss()
        n = len(rotated)
        scores = np.empty((n, depth), dtype=np.float32)
        labels = np.empty((n, depth), dtype=np.int64)
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=getattr(selector, "selector", selector))
        ivf.search_preassigned_c(n, faiss.swig_ptr(rotated), depth, faiss.swig_ptr(coarse_lists),
                                 faiss.swig_ptr(coarse_scores), faiss.swig_ptr(scores), faiss.swig_ptr(labels),
                                 False, params, None)
        return labels

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        wanted = np.unique(candidates[candidates >= 0])
        vectors = self.exact_vectors(wanted)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, found) in enumerate(zip(queries, candidates)):
            found = np.unique(found[found >= 0])
            if not len(found):
                continue
            scores = vectors[np.searchsorted(wanted, found)] @ query
            take = min(k, len(found))
            best = np.argpartition(-scores, take - 1)[:take]
            best = best[np.lexsort((found[best], -scores[best]))]
            out_scores[row, :take], out_ids[row, :take] = scores[best], found[best]
        return out_scores, out_ids

    def exact_vectors(self, item_ids: np.ndarray) -> np.ndarray:
        """float32 vectors of ascending item_ids: the delta's, else the newest segment holding them."""
        out = np.empty((len(item_ids), self._dim), dtype=np.float32)
        missing = np.ones(len(item_ids), bool)
        if len(self.delta_ids) and len(item_ids):
            rows = np.minimum(np.searchsorted(self.delta_ids, item_ids), len(self.delta_ids) - 1)
            hit = self.delta_ids[rows] == item_ids
            out[hit] = self.delta_vectors[rows[hit]]
            missing &= ~hit
        for segment in reversed(self.segments):
            if not missing.any():
                break
            where = np.flatnonzero(missing)
            found, rows = segment.find(item_ids[where])
            out[where[found]] = segment.read(rows)
            missing[where[found]] = False
        if missing.any():
            raise StoreError(f"{self.folder}: no exact vector for {int(missing.sum())} listed items; "
                             f"`mmsearch repair` rebuilds the index")
        return out

    # --- files --------------------------------------------------------------------------
    def save(self, path: Path | None = None) -> None:
        """Commit to the folder: the delta (merged into new lists when big), then the manifest.

        Each file is new; the manifest replaces the old one in one step (os.replace), so a crash
        leaves the previous state or this one, never a mix. Files no manifest names are removed.
        """
        folder = Path(path) if path is not None else self.folder
        if folder.resolve() != self.folder.resolve():
            raise StoreError(f"an on-disk index lives in its folder ({self.folder}); it cannot be saved to {folder}")
        try:
            if self.delta_size > self.delta_limit:
                self._compact()
            elif self._dirty and self.delta_size:
                self.files = _Files(self.files.index, self.files.lists, self.files.segments, self._write_delta(),
                                    self.files.dead)
            elif not self.delta_size:
                self.files = _Files(self.files.index, self.files.lists, self.files.segments, None, self.files.dead)
            _write_json_atomic(folder / MANIFEST, self._manifest())
        except OSError as exc:
            raise StoreError(f"cannot write the vector index in {folder}: {exc.strerror or exc}. The database is "
                             f"intact; fix the cause, then run `mmsearch repair`") from exc
        self._dirty = False
        remove_unnamed(folder, self.files.names())

    def _manifest(self) -> dict:
        data = {"format": FORMAT, "kind": self.kind, "spec": self.spec, "generation": self.generation,
                "ntotal": self.ntotal, "dim": self._dim, "index": self.files.index, "lists": self.files.lists,
                "segments": [list(pair) for pair in self.files.segments], "delta": self.files.delta,
                "dead": self.files.dead}
        if self.tuning is not None:
            data["tuning"] = {"nprobe": self.tuning.nprobe, "ef_search": self.tuning.ef_search,
                              "rerank": self.tuning.rerank}
        if self.tuning_report is not None:
            data["tuning_report"] = self.tuning_report
        data.update(self.extra)
        return data

    def _write_delta(self) -> str:
        stem = _new_stem(self.generation)
        name = f"{stem}.delta.faiss"
        write_index(self._delta, self.folder / name)
        tmp = self.folder / f"{stem}.delta.npz.tmp"
        with open(tmp, "wb") as handle:
            np.savez(handle, ids=self.delta_ids, vectors=self.delta_vectors, tombstones=self.tombstones)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.folder / f"{stem}.delta.npz")
        return name

    def _compact(self) -> None:
        """New lists = base lists - tombstones + delta lists (in that order: a changed item is both
        tombstoned and in the delta); the delta's vectors become a new exact segment."""
        stem = _new_stem(self.generation)
        log.info("merging %d added and %d removed vectors into the on-disk lists", len(self.delta_ids), len(self.tombstones))
        try:
            merged = rewrite_lists(empty_like(self.folder / self.files.index),
                                    [(self._ivf.invlists, self.tombstones), (self._delta_ivf.invlists, None)],
                                    self.folder / f"{stem}.ivfdata")
            write_index(merged, self.folder / f"{stem}.faiss")
            del merged
            dead = {str(number): segment.dead for number, segment in enumerate(self.segments)}
            for number in reversed(range(len(self.segments))):  # a removed id's row dies where it is live
                found, _ = self.segments[number].find(self.tombstones)
                if found.any():
                    dead[str(number)] = np.union1d(dead[str(number)], self.tombstones[found])
            segments = list(self.files.segments)
            if len(self.delta_ids):
                writer = ExactWriter(self.folder, stem, self._dim)
                writer.append(self.delta_ids, self.delta_vectors)
                segments.append(writer.finish())
            dead_name = _write_dead(self.folder, stem, dead)
            files = _Files(f"{stem}.faiss", f"{stem}.ivfdata", tuple(segments), None, dead_name)
            fresh = self._open(self.folder, self.spec, self.generation, self._dim, files, delta=None, delta_ids=None,
                               delta_vectors=None, tombstones=None)
            if len(segments) > MAX_SEGMENTS:
                fresh = fresh._merge_segments()
        except BaseException:
            _remove_stem(self.folder, stem)
            raise
        self.close()
        self.files, self.index, self._ivf = fresh.files, fresh.index, fresh._ivf
        self._delta, self._delta_ivf = fresh._delta, fresh._delta_ivf
        self.delta_ids, self.delta_vectors, self.tombstones = fresh.delta_ids, fresh.delta_vectors, fresh.tombstones
        self.segments, self._base_selector = fresh.segments, None
        self._lists_fd, self._list_spans = fresh._lists_fd, fresh._list_spans
        fresh.segments, fresh._lists_fd = [], None  # now this index's: not closed when `fresh` goes

    def _merge_segments(self) -> "OnDiskIndex":
        """One exact segment of the listed ids (newest vector of each), instead of several."""
        live = np.sort(self.ids())
        stem = _new_stem(self.generation)
        writer = ExactWriter(self.folder, stem, self._dim)
        for start in range(0, len(live), 100_000):
            block = live[start:start + 100_000]
            writer.append(block, self.exact_vectors(block))
        files = _Files(self.files.index, self.files.lists, (writer.finish(),))
        self.close()
        return self._open(self.folder, self.spec, self.generation, self._dim, files, delta=None, delta_ids=None,
                          delta_vectors=None, tombstones=None)

    @classmethod
    def load(cls, path: Path, *, mmap: bool = True) -> "OnDiskIndex | None":
        """The index committed in folder `path`, or None when missing or unreadable (the caller rebuilds).
        Always mapped (`mmap` is accepted for VectorIndex's signature)."""
        folder = Path(path)
        try:
            meta = json.loads((folder / MANIFEST).read_text())
            if meta.get("format") != FORMAT:
                return None
            files = _Files(meta["index"], meta["lists"], tuple(tuple(pair) for pair in meta["segments"]), meta.get("delta"),
                           meta.get("dead"))
            delta = delta_ids = delta_vectors = tombstones = None
            if files.delta:
                delta = read_index_file(folder / files.delta)
                with np.load(folder / (files.delta[: -len(".faiss")] + ".npz")) as saved:
                    delta_ids, delta_vectors, tombstones = saved["ids"], saved["vectors"], saved["tombstones"]
            tuning = meta.get("tuning")
            tuning = SearchTuning(int(tuning["nprobe"]), int(tuning["ef_search"]), int(tuning.get("rerank", 0))) \
                if tuning else None
            extra = {key: value for key, value in meta.items() if key not in _MANIFEST_KEYS}
            index = cls._open(folder, meta["spec"], int(meta["generation"]), int(meta["dim"]), files, delta=delta,
                              delta_ids=delta_ids, delta_vectors=delta_vectors, tombstones=tombstones,
                              tuning=tuning, tuning_report=meta.get("tuning_report"), extra=extra)
            if index.ntotal != meta.get("ntotal"):
                index.close()
                return None
            return index
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, StoreError) as exc:
            log.info("on-disk vector index %s unusable (%s); it will be rebuilt", folder, exc)
            return None

    @classmethod
    def _open(cls, folder: Path, spec: str, generation: int, dim: int, files: _Files, *, delta, delta_ids,
              delta_vectors, tombstones, tuning=None, tuning_report=None, extra=None) -> "OnDiskIndex":
        base = read_mapped(folder, files.index, files.lists)
        if delta is None:
            delta = empty_like(folder / files.index)
        empty = np.zeros(0, np.int64)
        return cls(folder, spec, generation, dim, files, base, delta,
                   delta_ids if delta_ids is not None else empty,
                   delta_vectors if delta_vectors is not None else np.zeros((0, dim), np.float32),
                   tombstones if tombstones is not None else empty, tuning, tuning_report, extra)


_MANIFEST_KEYS = {"format", "kind", "spec", "generation", "ntotal", "dim", "index", "lists", "segments", "delta",
                  "dead", "tuning", "tuning_report"}


class _KeptSelector:
    """A combined faiss selector with the selectors it points to kept alive alongside it."""

    def __init__(self, selector, *parts):
        self.selector, self.parts = selector, parts


def saved_generation(folder: Path) -> int | None:
    """The generation committed in an on-disk index folder, without opening it (None: none there)."""
    try:
        return int(json.loads((Path(folder) / MANIFEST).read_text())["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_unnamed(folder: Path, keep: set[str]) -> None:
    """Delete files in the folder that the manifest does not name (left by interrupted writes)."""
    for entry in Path(folder).iterdir():
        if entry.name != MANIFEST and entry.name not in keep and entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()


# --- helpers ------------------------------------------------------------------------------
def _new_stem(generation: int) -> str:
    return f"g{generation}-{secrets.token_hex(4)}"


def _remove_stem(folder: Path, stem: str) -> None:
    for entry in Path(folder).glob(f"{stem}.*"):
        with contextlib.suppress(OSError):
            entry.unlink()


def _read_dead(folder: Path, files: _Files) -> dict[str, np.ndarray]:
    if not files.dead:
        return {}
    with np.load(folder / files.dead) as saved:
        return {key: saved[key] for key in saved.files}


def _write_dead(folder: Path, stem: str, dead: dict[str, np.ndarray]) -> str | None:
    dead = {key: value for key, value in dead.items() if len(value)}
    if not dead:
        return None
    name = f"{stem}.dead.npz"
    tmp = folder / (name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **dead)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / name)
    return name


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(json.dumps(data))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # the rename itself survives a power cut once the folder is synced
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
