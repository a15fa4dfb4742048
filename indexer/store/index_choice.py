"""Which vector index an index folder gets, by a memory budget (autofaiss-style), and where it lives.

Two kinds, one interface (build from (ids, vectors) chunks, add, remove, search, save/load with the
database generation):
- "memory": `indexer.store.vectors.VectorIndex` in `INDEX/vectors.faiss` (Flat, IVF{n},SQfp16,
  HNSW32 or a factory string), read whole (or mapped) by a search;
- "ondisk": `indexer.store.ondisk.OnDiskIndex` in `INDEX/vectors.ondisk/` (OPQ + IVF-PQ, lists on
  disk, re-ranked by exact vectors), for collections whose in-memory index would not fit.
(Per encoder: `vectors-audio.faiss` / `vectors-audio.ondisk/` and so on; `VectorFiles`.)

`--index-type auto` (the default) takes the in-memory index `choose_index_spec` picks while its
estimated size fits the budget (`--max-index-memory`, recorded in the index; default: half of this
machine's memory, at most 4 GB), else the on-disk one. An explicit flat/ivf/hnsw or factory string
is honoured whatever it costs; `ondisk` asks for the on-disk kind at any size.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from indexer.store import ondisk
from indexer.store.vectors import VectorIndex, choose_index_spec, sidecar_path

log = logging.getLogger(__name__)

DEFAULT_BUDGET_CAP = 4 * 10**9
ONDISK_MIN_VECTORS = 20_000  # below this an on-disk index cannot train its PQ codebooks well (8-bit: 256 centroids each)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """'4GB' -> 4_000_000_000; '512MiB' -> 536_870_912; a bare number is bytes. K/M/G/T are powers of
    1000, KiB/MiB/GiB/TiB of 1024. ValueError on anything else."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (say 4GB, 500MB or 2GiB)")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise ValueError(f"a memory budget must be at least 1 byte, not {text!r}")
    return int(value)


def format_size(size: int | float) -> str:
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


def default_max_index_memory() -> int:
    """Half of this machine's memory, at most 4 GB (a budget not recorded in the index)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_BUDGET_CAP
    return min(DEFAULT_BUDGET_CAP, total // 2)


def estimated_memory(spec: str, n_vectors: int, dim: int) -> int | None:
    """Bytes an in-memory index of `spec` holds for n_vectors (ids included); None when not known."""
    ids = 8 * n_vectors
    match = re.fullmatch(r"IVF(\d+)(_HNSW\d+)?,(Flat|SQfp16|SQ8)", spec)
    if spec == "Flat":
        return n_vectors * dim * 4 + ids
    if match:
        per = {"Flat": 4 * dim, "SQfp16": 2 * dim, "SQ8": dim}[match.group(3)]
        return n_vectors * per + ids + int(match.group(1)) * dim * 4
    match = re.fullmatch(r"HNSW(\d+)", spec)
    if match:  # vectors + about 2 * M links of 4 bytes on level 0 (+ ~10% above)
        return n_vectors * (dim * 4 + int(2.2 * int(match.group(1)) * 4)) + ids
    return None


def ondisk_resident_memory(spec: str, n_vectors: int, dim: int, delta_limit: int) -> int:
    """Bytes an on-disk index keeps in memory (its lists and exact vectors stay in files): OPQ
    matrix, coarse centroids (and their HNSW graph), PQ codebooks, a full delta."""
    reduced = int(re.match(r"OPQ\d+_(\d+)", spec).group(1)) if re.match(r"OPQ\d+_(\d+)", spec) else dim
    nlist = int(re.search(r"IVF(\d+)", spec).group(1))
    code = int(re.search(r"PQ(\d+)", spec).group(1))
    graph = nlist * 32 * 2 * 4 if "_HNSW" in spec else 0
    return dim * reduced * 4 + nlist * reduced * 4 + graph + 256 * reduced * 4 + delta_limit * (dim * 4 + code + 16)


def delta_limit(n_vectors: int, dim: int, budget: int) -> int:
    """Vectors an on-disk index takes in its delta before merging it into the lists: a share of the
    index, at least ondisk.COMPACT_MIN, and at most what a quarter of the budget holds."""
    share = int(ondisk.COMPACT_SHARE * n_vectors)
    return max(ondisk.COMPACT_MIN, min(share, budget // 4 // (dim * 4 + 100)))


@dataclass(frozen=True)
class IndexChoice:
    kind: str  # "memory" | "ondisk"
    spec: str
    budget: int  # bytes
    estimated_bytes: int | None  # resident memory of the chosen index
    reason: str  # one sentence for `status`
    delta_limit: int = 0  # on-disk: vectors in the delta before a merge

    def as_dict(self) -> dict:
        return {"kind": self.kind, "spec": self.spec, "budget": self.budget, "estimated_bytes": self.estimated_bytes,
                "reason": self.reason, "delta_limit": self.delta_limit}


def choose_index(n_vectors: int, dim: int, index_type: str = "auto", max_memory: int | None = None) -> IndexChoice:
    """The kind and spec for n_vectors of dim under a memory budget (None: the default)."""
    budget = max_memory or default_max_index_memory()
    wanted = (index_type or "auto").lower()
    limit = delta_limit(n_vectors, dim, budget)
    if wanted == "ondisk":
        spec = ondisk.ondisk_spec(n_vectors, dim)
        return IndexChoice("ondisk", spec, budget, ondisk_resident_memory(spec, n_vectors, dim, limit),
                           "on disk, as asked (--index-type ondisk)", limit)
    spec = choose_index_spec(n_vectors, index_type)
    need = estimated_memory(spec, n_vectors, dim)
    if wanted != "auto":
        note = f" (about {format_size(need)} in memory)" if need is not None else ""
        return IndexChoice("memory", spec, budget, need, f"{spec} in memory, as asked{note}")
    if need is None or need <= budget or n_vectors < ONDISK_MIN_VECTORS:
        return IndexChoice("memory", spec, budget, need,
                           f"{spec} in memory: about {format_size(need or 0)}, within the {format_size(budget)} budget")
    disk_spec = ondisk.ondisk_spec(n_vectors, dim)
    resident = ondisk_resident_memory(disk_spec, n_vectors, dim, limit)
    return IndexChoice("ondisk", disk_spec, budget, resident,
                       f"on disk: {spec} would need about {format_size(need)} in memory, over the "
                       f"{format_size(budget)} budget; this one keeps about {format_size(resident)} resident", limit)


def training_sample_size(choice: IndexChoice, n_vectors: int) -> int:
    if choice.kind == "ondisk":
        return ondisk.training_sample_size(choice.spec, n_vectors)
    from indexer.store.vectors import training_sample_size as memory_sample_size

    return memory_sample_size(choice.spec, n_vectors)


@dataclass(frozen=True)
class VectorFiles:
    """Where one encoder's vector index lives: `memory` (a FAISS file, its JSON sidecar beside it) or
    `ondisk` (a folder), whichever kind it is; at most one of them is current."""

    memory: Path
    ondisk: Path

    @classmethod
    def of(cls, memory_path: Path) -> "VectorFiles":
        """INDEX/vectors.faiss -> (that file, INDEX/vectors.ondisk/)."""
        return cls(Path(memory_path), Path(memory_path).with_suffix(".ondisk"))


def build_index(choice: IndexChoice, dim: int, chunks: Iterable[tuple[np.ndarray, np.ndarray]], generation: int, *,
                files: VectorFiles, train_vectors: np.ndarray | None = None):
    """A new index of the chosen kind (not yet committed: `save_index` does that)."""
    if choice.kind == "ondisk":
        index = ondisk.OnDiskIndex.build(dim, choice.spec, chunks, generation, folder=files.ondisk,
                                         train_vectors=train_vectors)
        index.extra.update({"max_index_memory": choice.budget, "delta_limit": choice.delta_limit})
        return index
    return VectorIndex.build(dim, choice.spec, chunks, generation, train_vectors=train_vectors)


def index_kind(index) -> str:
    return getattr(index, "kind", "memory")


def fits(index, choice: IndexChoice) -> bool:
    """Whether a saved index is of the kind and spec `choice` asks for (else it is rebuilt)."""
    return index is not None and index_kind(index) == choice.kind and index.spec == choice.spec


def save_index(index, files: VectorFiles) -> None:
    """Commit `index`, then remove the other kind's files (a switch of kind)."""
    if index_kind(index) == "ondisk":
        index.save(files.ondisk)
        for path in (files.memory, sidecar_path(files.memory)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return
    index.save(files.memory)
    if files.ondisk.exists():
        with contextlib.suppress(OSError):
            (files.ondisk / ondisk.MANIFEST).unlink()  # first: a half-removed folder is never loaded
        shutil.rmtree(files.ondisk, ignore_errors=True)


def load_saved(files: VectorFiles, *, mmap: bool = False, generation: int | None = None):
    """The committed index of either kind, or None. When both exist (a switch of kind was
    interrupted), the one at `generation`, else the newer."""
    found = []
    if (files.ondisk / ondisk.MANIFEST).exists():
        found.append(ondisk.OnDiskIndex.load(files.ondisk))
    if files.memory.exists():
        found.append(VectorIndex.load(files.memory, mmap=mmap))
    found = [index for index in found if index is not None]
    if not found:
        return None
    found.sort(key=lambda index: (index.generation == generation, index.generation), reverse=True)
    for other in found[1:]:
        close = getattr(other, "close", None)
        if close is not None:
            close()
    return found[0]


def saved_info(files: VectorFiles) -> dict | None:
    """What the committed index records (kind, spec, generation, ntotal, dim), without opening it."""
    for kind, path in (("ondisk", files.ondisk / ondisk.MANIFEST), ("memory", sidecar_path(files.memory))):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if kind == "memory" and not files.memory.exists():
            continue
        return {"kind": kind, **{key: data.get(key) for key in ("spec", "generation", "ntotal", "dim",
                                                                  "max_index_memory")}}
    return None
