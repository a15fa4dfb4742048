"""Near-duplicate pictures: pairs found through the index's own range search, grouped, an original suggested.

The stored picture vectors are read back in blocks and each block is range-searched against the
index's vector file (faiss `range_search`: every vector within `threshold` cosine; an IVF index
probes only `nprobe` lists, enough for copies, which land in the same list as their original):
no all-pairs scan. A pair can then be confirmed by a perceptual hash of both files
(indexer.media.perceptual_hash), which keeps two different pictures of the same thing apart when
the model finds them alike; docs/BENCHMARKS.md "Near-duplicates" measures what each costs and gives.
Pairs join into groups (union-find); each group suggests one file to keep: the largest (pixels),
then the oldest, then the heaviest.

Nothing here deletes. `move_duplicates` moves the other files of each group into a folder, never
over an existing file, and writes a log line per move; the next index run sees them gone.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from indexer.errors import MmsearchError
from indexer.media.perceptual_hash import hamming, phash_file
from indexer.store.library import Library
from indexer.store.records import IMAGE, ItemRecord

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.90  # cosine; with the hash check: precision 0.96, recall 0.83 (docs/BENCHMARKS.md "Near-duplicates")
DEFAULT_HASH_DISTANCE = 22  # of 64 bits
SURE_THRESHOLD = 0.985  # a pair this alike needs no hash check (a copy re-encoded, resized)
DEFAULT_NPROBE = 4
BLOCK = 8192
MOVE_LOG = "mmsearch-moves.jsonl"


class DuplicatesError(MmsearchError):
    """A duplicates request that cannot be carried out (a bad threshold, a move target that is unusable)."""


@dataclass(frozen=True)
class DuplicateOptions:
    threshold: float = DEFAULT_THRESHOLD
    hash_distance: int | None = DEFAULT_HASH_DISTANCE  # None: vectors only
    sure_threshold: float = SURE_THRESHOLD
    nprobe: int = DEFAULT_NPROBE
    block: int = BLOCK
    path_glob: str | None = None


@dataclass(frozen=True)
class DuplicateItem:
    id: int
    path: str
    width: int | None
    height: int | None
    size: int
    mtime: float

    def as_dict(self) -> dict:
        return {"path": self.path, "id": self.id, "width": self.width, "height": self.height, "size": self.size,
                "mtime": self.mtime}


@dataclass(frozen=True)
class DuplicateGroup:
    items: tuple[DuplicateItem, ...]  # the suggested one first, then by path
    keep: int
    score: float  # the lowest cosine of the pairs that joined it

    def as_dict(self) -> dict:
        return {"items": [item.as_dict() for item in self.items], "keep": self.keep, "score": round(self.score, 4)}


@dataclass
class DuplicateReport:
    groups: list[DuplicateGroup]
    pictures: int
    candidate_pairs: int  # within the threshold by the vectors
    confirmed_pairs: int  # kept after the hash check
    seconds: float
    options: DuplicateOptions
    notes: list[str] = field(default_factory=list)


def check_options(options: DuplicateOptions) -> None:
    if not 0.0 < options.threshold <= 1.0:
        raise DuplicatesError(f"--threshold {options.threshold} must be in (0, 1]: a cosine, 1 meaning identical")
    if options.hash_distance is not None and not 0 <= options.hash_distance <= 64:
        raise DuplicatesError("--hash-distance must be between 0 and 64 bits")


# --- pairs ---------------------------------------------------------------------------------
def range_pairs(index, blocks: Iterable[tuple[np.ndarray, np.ndarray]], threshold: float,
                nprobe: int = DEFAULT_NPROBE) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(ids a, ids b, cosines) of every vector pair above `threshold`, a < b, block by block.

    `index` is an indexer.store.vectors.VectorIndex (vector ids as labels); `blocks` yields
    (vector ids, vectors) of the vectors to look for, usually all of them.
    """
    import faiss

    params = None
    if index.spec.startswith("IVF"):
        params = faiss.SearchParametersIVF(nprobe=max(1, nprobe))
    for ids, vectors in blocks:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        try:
            limits, scores, labels = index.index.range_search(vectors, float(threshold), params=params)
        except RuntimeError:  # an index type without range search (HNSW): its top 64, cut at the threshold
            scores, labels = index.index.search(vectors, min(64, index.ntotal))
            keep = (scores >= threshold) & (labels >= 0)
            counts = keep.sum(axis=1)
            limits = np.concatenate([[0], np.cumsum(counts)])
            scores, labels = scores[keep], labels[keep]
        sources = np.repeat(ids.astype(np.int64), np.diff(limits).astype(np.int64))
        wanted = sources < labels  # each pair once, never a vector with itself
        yield sources[wanted], labels[wanted], scores[wanted]


def group_pairs(pairs: Iterable[tuple[int, int, float]]) -> list[tuple[list[int], float]]:
    """Connected components of the pairs (union-find): (member ids sorted, lowest pair score)."""
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    lowest: dict[int, float] = {}
    edges = []
    for a, b, score in pairs:
        edges.append((a, b, score))
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[rb] = ra
    members: dict[int, list[int]] = {}
    for node in parent:
        members.setdefault(root(node), []).append(node)
    for a, _, score in edges:
        top = root(a)
        lowest[top] = min(lowest.get(top, 1.0), score)
    return [(sorted(group), lowest[top]) for top, group in members.items()]


def suggest_keep(items: Iterable[DuplicateItem]) -> DuplicateItem:
    """The likely original: the largest (most pixels), then the oldest, then the most bytes, then the
    shortest path. Age before bytes: a PNG re-encode of a JPEG is heavier but newer than its original."""
    return min(items, key=lambda item: (-(item.width or 0) * (item.height or 0), item.mtime, -item.size,
                                        len(item.path), item.path))


def _item(record: ItemRecord) -> DuplicateItem:
    return DuplicateItem(record.id, record.path, record.width, record.height, record.size, record.mtime)


# --- the whole search ----------------------------------------------------------------------
def find_duplicates(library: Library, options: DuplicateOptions = DuplicateOptions(),
                    on_progress: Callable[[int, int], None] | None = None) -> DuplicateReport:
    """Groups of near-duplicate pictures in the index (read-only)."""
    check_options(options)
    started = time.perf_counter()
    info = library.model(IMAGE)
    if info is None:
        return DuplicateReport([], 0, 0, 0, 0.0, options, ["the index holds no pictures yet"])
    index = library.vectors_for_search(IMAGE)
    if index is None or index.ntotal == 0:
        return DuplicateReport([], 0, 0, 0, 0.0, options, ["the index holds no pictures yet"])
    pictures = library.reads.filter_ids(modalities=(IMAGE,), path_like=options.path_glob, encoder=IMAGE)
    wanted = set(pictures.tolist())
    total, done = len(pictures), 0
    found: list[tuple[int, int, float]] = []

    def blocks():
        nonlocal done
        for ids, vectors in library.reads.iter_vectors(info.dim, IMAGE, chunk=options.block):
            keep = np.isin(ids, pictures)
            done += int(keep.sum())
            yield ids[keep], vectors[keep]
            if on_progress is not None:
                on_progress(done, total)

    for a, b, scores in range_pairs(index, blocks(), options.threshold, options.nprobe):
        for left, right, score in zip(a.tolist(), b.tolist(), scores.tolist()):
            if right in wanted:
                found.append((left, right, min(1.0, score)))
    vector_hits = library.reads.hits(sorted({vector for pair in found for vector in pair[:2]}))
    by_vector = {vector: _item(hit.item) for vector, hit in vector_hits.items() if hit.item.modality == IMAGE}
    pairs = [(by_vector[a].id, by_vector[b].id, score) for a, b, score in found
             if a in by_vector and b in by_vector and by_vector[a].id != by_vector[b].id]
    candidates = len(pairs)
    items = {item.id: item for item in by_vector.values()}
    if options.hash_distance is not None:
        pairs = confirm_by_hash(pairs, items, options)
    groups = []
    for members, score in group_pairs(pairs):
        group_items = [items[member] for member in members]
        keep = suggest_keep(group_items)
        ordered = (keep, *sorted((item for item in group_items if item.id != keep.id), key=lambda item: item.path))
        groups.append(DuplicateGroup(ordered, keep.id, score))
    groups.sort(key=lambda group: (-len(group.items), group.items[0].path))
    return DuplicateReport(groups, total, candidates, len(pairs), time.perf_counter() - started, options)


def confirm_by_hash(pairs: list[tuple[int, int, float]], items: dict[int, DuplicateItem],
                    options: DuplicateOptions) -> list[tuple[int, int, float]]:
    """The pairs sure by their cosine alone, and those whose files' perceptual hashes are close.
    A file that cannot be read keeps its pairs only when they are sure."""
    hashes: dict[int, int | None] = {}

    def hash_of(item_id: int) -> int | None:
        if item_id not in hashes:
            hashes[item_id] = phash_file(items[item_id].path)
        return hashes[item_id]

    kept = []
    for a, b, score in pairs:
        if score >= options.sure_threshold:
            kept.append((a, b, score))
            continue
        first, second = hash_of(a), hash_of(b)
        if first is not None and second is not None and hamming(first, second) <= options.hash_distance:
            kept.append((a, b, score))
    return kept


# --- moving the extra copies ---------------------------------------------------------------
@dataclass
class MoveReport:
    moved: list[tuple[str, str]] = field(default_factory=list)  # (from, to)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    log_path: Path | None = None


def move_duplicates(groups: Iterable[DuplicateGroup], target: Path, roots: Iterable[str] = ()) -> MoveReport:
    """Move every file of each group but the one to keep into `target`, under its path relative to
    the indexed folder that holds it (else its parent folder's name), never over an existing file.
    Each move is a line of JSON in target/mmsearch-moves.jsonl (from, to, time), written as it happens."""
    target = Path(target).expanduser().absolute()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DuplicatesError(f"cannot create {target}: {exc.strerror or exc}") from exc
    folders = sorted((os.path.abspath(root) for root in roots), key=len, reverse=True)
    report = MoveReport(log_path=target / MOVE_LOG)
    with open(report.log_path, "a", encoding="utf-8") as journal:
        for group in groups:
            for item in group.items:
                if item.id == group.keep:
                    continue
                source = Path(item.path)
                if _inside(source, target):
                    report.skipped.append((item.path, "already inside the target folder"))
                    continue
                destination = target / _relative_name(item.path, folders)
                why = _move_one(source, destination)
                if why:
                    report.skipped.append((item.path, why))
                    continue
                report.moved.append((item.path, str(destination)))
                journal.write(json.dumps({"from": item.path, "to": str(destination), "kept": _kept_path(group),
                                          "time": time.time()}, ensure_ascii=False) + "\n")
                journal.flush()
    return report


def _kept_path(group: DuplicateGroup) -> str:
    return next(item.path for item in group.items if item.id == group.keep)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.absolute().relative_to(folder)
        return True
    except ValueError:
        return False


def _relative_name(path: str, folders: list[str]) -> str:
    for folder in folders:
        if path.startswith(folder.rstrip(os.sep) + os.sep):
            return os.path.join(os.path.basename(folder.rstrip(os.sep)) or "root", path[len(folder.rstrip(os.sep)) + 1:])
    return os.path.join(os.path.basename(os.path.dirname(path)) or "root", os.path.basename(path))


def _move_one(source: Path, destination: Path) -> str | None:
    """Move without overwriting; the reason when it cannot."""
    if not source.exists():
        return "no longer there"
    if destination.exists() or destination.is_symlink():
        return f"{destination} already exists (nothing is overwritten)"
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, destination)  # fails if the name exists: no race overwrites a file
            os.unlink(source)
        except OSError:  # another file system, or no hard links: copy to a name of our own, then move it in
            if destination.exists():
                return f"{destination} already exists (nothing is overwritten)"
            staged = destination.with_name(f".{destination.name}.mmsearch-tmp")
            shutil.copy2(source, staged)
            try:
                os.link(staged, destination)
            finally:
                os.unlink(staged)
            os.unlink(source)
    except FileExistsError:
        return f"{destination} already exists (nothing is overwritten)"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


# --- one library call for the CLI -----------------------------------------------------------
@dataclass(frozen=True)
class DuplicatesRequest:
    db: Path
    options: DuplicateOptions = DuplicateOptions()
    move_to: Path | None = None  # move every copy but the suggested one here


@dataclass
class DuplicatesOutcome:
    report: DuplicateReport
    moves: MoveReport | None = None


def duplicates_in_index(request: DuplicatesRequest,
                        on_progress: Callable[[int, int], None] | None = None) -> DuplicatesOutcome:
    """Find the groups in the index at `request.db`; with `move_to`, move the extra copies there."""
    check_options(request.options)
    with Library(request.db, create=False, read_only=True) as library:
        report = find_duplicates(library, request.options, on_progress)
        if request.move_to is None:
            return DuplicatesOutcome(report)
        roots = [root.path for root in library.roots.all()]
    return DuplicatesOutcome(report, move_duplicates(report.groups, request.move_to, roots))
