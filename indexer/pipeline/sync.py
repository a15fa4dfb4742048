"""Index runs: walk, mark unchanged files, embed new and changed ones, sweep what vanished.

rclip's mark / clear / sweep, made crash-safe by tagging rows with the run that saw them (a
killed run leaves committed batches; the next run skips them and finishes the rest).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Protocol, Sequence

from indexer.media.kinds import Media
from indexer.media.scan import FoundFile, ScanOptions, walk
from indexer.pipeline.embed import PipelineConfig, embed_batches, prepare_files, write_behind
from indexer.store.library import Library
from indexer.store.records import NewItem, WriteResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexConfig:
    roots: tuple[str, ...]
    scan: ScanOptions = ScanOptions()
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    index_type: str | None = None  # None keeps the index's own setting (default auto)
    scans: Mapping[str, ScanOptions] = field(default_factory=dict)  # per absolute root, instead of `scan`
    embedding: "Embedding | None" = None  # where files are embedded; None: here (LocalEmbedding)


@dataclass(frozen=True)
class IndexProgress:
    phase: str  # "scan" | "prepare" (the encoders' one-time set-up) | "embed" | "finish"
    done: int
    total: int


@dataclass
class IndexReport:
    embedded: int = 0
    reused: int = 0
    removed: int = 0
    failed: int = 0  # files recorded with an error (not retried until they change)
    unchanged: int = 0
    seconds: float = 0.0
    skipped: int = 0  # files reported but not recorded: unreadable folders, broken links, vanished files
    prepare_seconds: float = 0.0  # of `seconds`: the encoders' set-up (weights, a one-time export)
    failures: list[tuple[str, str]] = field(default_factory=list)
    embedding: dict = field(default_factory=dict)  # where the files were embedded (Embedding.describe)

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "embedded": self.embedded, "reused": self.reused, "removed": self.removed, "failed": self.failed,
            "unchanged": self.unchanged, "seconds": round(self.seconds, 3), "images_per_s": round(self.images_per_s, 2),
            "skipped": self.skipped, "prepare_seconds": round(self.prepare_seconds, 3),
            **({"embedding": self.embedding} if self.embedding else {}),
        }


def _split_changed(root: str, library: Library, options: ScanOptions,
                   on_skip) -> tuple[list[FoundFile], list[int]]:
    """Walk root: (files to process, ids of unchanged rows)."""
    known = library.items.known_files(root)
    to_process, unchanged = [], []
    for found in walk(root, options, on_skip=on_skip):
        row = known.get(found.path)
        if row is not None and row.size == found.size and row.mtime == found.mtime:
            unchanged.append(row.item_id)
        else:
            to_process.append(found)
    return to_process, unchanged


def index_folders(library: Library, media: Media, config: IndexConfig,
                  on_progress: Callable[[IndexProgress], None] | None = None,
                  on_file_error: Callable[[str, str], None] | None = None,
                  on_written: Callable[[list[NewItem], WriteResult], None] | None = None) -> IndexReport:
    """Bring the index up to date with config.roots (files of `media`'s extensions). Call with the
    library's write lock held. `on_written` sees each batch once it is committed."""
    started = time.perf_counter()
    report = IndexReport()
    progress = on_progress or (lambda _: None)

    def file_error(path: str, reason: str) -> None:
        report.failures.append((path, reason))
        if on_file_error is not None:
            on_file_error(path, reason)

    def file_skipped(path: str, reason: str) -> None:
        report.skipped += 1
        file_error(path, reason)

    for name, encoder in media.encoders.items():
        library.bind_encoder(name, encoder.info)
    if config.index_type:
        library.set_index_type(config.index_type)
    roots = [os.path.abspath(os.path.expanduser(root)) for root in config.roots]
    base_generation = library.generation
    run_id = library.runs.start("index", roots)

    to_process: list[FoundFile] = []
    for root in roots:
        scan = dataclasses.replace(config.scans.get(root, config.scan), extensions=media.extensions)
        files, unchanged = _split_changed(root, library, scan, on_skip=file_skipped)
        library.items.mark_seen(unchanged, run_id)
        report.unchanged += len(unchanged)
        to_process.extend(files)
        progress(IndexProgress("scan", len(to_process) + report.unchanged, 0))

    added: list[int] = []
    removed: list[int] = []
    total = len(to_process)
    embedding = config.embedding or LocalEmbedding(media, config.pipeline)
    if to_process:
        report.prepare_seconds = embedding.prepare(progress, {os.path.splitext(file.path)[1].lower()
                                                              for file in to_process})
    progress(IndexProgress("embed", 0, total))
    if to_process:
        known_hashes = library.items.hashes_with_vectors()
        done = 0

        def write(rows):  # on the writer thread, while the next batch is embedded
            return library.items.write_batch(rows, run_id)

        batches = embedding.batches(to_process, known_hashes, file_skipped)
        for rows, written in write_behind(batches, write):
            added.extend(written.added)
            removed.extend(written.removed)
            for row in rows:
                if row.error is not None:
                    report.failed += 1
                    file_error(row.path, row.error)
                elif row.vectors:
                    report.embedded += 1
                else:
                    report.reused += 1
            if on_written is not None:  # the words pass starts reading these pictures (--ocr)
                on_written(rows, written)
            # hashes embedded now serve later duplicates in this same run
            known_hashes.update((content_hash, item_id) for item_id, content_hash in written.hashes.items() if content_hash)
            done += len(rows)
            progress(IndexProgress("embed", done, total))

    report.embedding = embedding.describe()
    for root in roots:
        swept = library.items.sweep(root, run_id)
        removed.extend(swept.removed)
        report.removed += len(swept.deleted_items)
    progress(IndexProgress("finish", total, total))
    library.update_vectors(base_generation=base_generation, added=added, removed=removed)
    report.seconds = time.perf_counter() - started
    library.runs.finish(run_id, **{k: v for k, v in report.as_dict().items() if k in
                                   ("embedded", "reused", "removed", "failed", "unchanged", "seconds")})
    return report


class Embedding(Protocol):
    """Where an index run's files are read, decoded and embedded: here on threads (LocalEmbedding),
    or on a cluster (retrieval.ray_embed). Change detection and every write stay with the run."""

    def prepare(self, progress: Callable[[IndexProgress], None], extensions: set[str] | None = None) -> float:
        """Set up before the first batch (load the model, start workers); returns its seconds.
        `extensions`: those of the files to embed (None: any)."""

    def batches(self, files: list[FoundFile], known_hashes: dict[str, int],
                on_vanished: Callable[[str, str], None]) -> Iterator[list[NewItem]]:
        """Each file's outcome, in batches to write (any order)."""

    def describe(self) -> dict:
        """Where it ran, for the run's summary."""


class LocalEmbedding:
    """The files embedded on this machine: decode threads with a time budget, batches to the encoders."""

    def __init__(self, media: Media, pipeline: PipelineConfig):
        self.media = media
        self.pipeline = dataclasses.replace(pipeline, unordered=pipeline.unordered or media.defers)

    def prepare(self, progress: Callable[[IndexProgress], None], extensions: set[str] | None = None) -> float:
        return warm_encoders(self.media, progress, extensions)

    def batches(self, files: list[FoundFile], known_hashes: dict[str, int],
                on_vanished: Callable[[str, str], None]) -> Iterator[list[NewItem]]:
        prepared = prepare_files(files, known_hashes, self.media.by_extension(), self.pipeline)
        return embed_batches(prepared, self.media.encoders, self.pipeline, on_vanished=on_vanished)

    def describe(self) -> dict:
        return {}


def warm_encoders(media: Media, progress: Callable[[IndexProgress], None], extensions: set[str] | None = None) -> float:
    """Set up, before the first batch and as a step of its own, every encoder the files of `extensions`
    reach (None: every encoder); returns its seconds. An encoder no file reaches is left cold: a run
    over new pictures does not load the audio tower (torch)."""
    started = time.perf_counter()
    names = list(media.encoders) if extensions is None else media.encoders_for(extensions)
    encoders = [media.encoders[name] for name in names]
    progress(IndexProgress("prepare", 0, len(encoders)))
    for done, encoder in enumerate(encoders, 1):
        encoder.warm()
        progress(IndexProgress("prepare", done, len(encoders)))
    return time.perf_counter() - started


def forget_paths(library: Library, paths: Sequence[str]) -> int:
    """Drop folders (or single files) from the index. Call with the write lock held."""
    base_generation = library.generation
    absolute = [os.path.abspath(os.path.expanduser(path)) for path in paths]
    run_id = library.runs.start("forget", absolute)  # first: the web server stops serving them at once
    removed: list[int] = []
    deleted = 0
    for path in absolute:
        result = library.items.forget(path)
        library.roots.forget(path)  # the next run of a root above it skips it
        removed.extend(result.removed)
        deleted += len(result.deleted_items)
    if deleted:
        library.update_vectors(base_generation=base_generation, removed=removed)
    library.runs.finish(run_id, removed=deleted)
    return deleted
