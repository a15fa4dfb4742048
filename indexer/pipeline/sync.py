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
from typing import Callable, Sequence

from indexer.store.library import Library
from indexer.pipeline.embed import PipelineConfig, embed_batches, prepare_files, write_behind
from indexer.media.scan import FoundFile, ScanOptions, walk
from indexer.errors import MmsearchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexConfig:
    roots: tuple[str, ...]
    scan: ScanOptions = ScanOptions()
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    index_type: str | None = None  # None keeps the index's own setting (default auto)


@dataclass(frozen=True)
class IndexProgress:
    phase: str  # "scan" | "embed" | "finish"
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
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "embedded": self.embedded, "reused": self.reused, "removed": self.removed, "failed": self.failed,
            "unchanged": self.unchanged, "seconds": round(self.seconds, 3), "images_per_s": round(self.images_per_s, 2),
            "skipped": self.skipped,
        }


def _split_changed(root: str, library: Library, options: ScanOptions,
                   on_skip) -> tuple[list[FoundFile], list[int]]:
    """Walk root: (files to process, ids of unchanged rows)."""
    known = library.meta.known_files(root)
    to_process, unchanged = [], []
    for found in walk(root, options, on_skip=on_skip):
        row = known.get(found.path)
        if row is not None and row.size == found.size and row.mtime == found.mtime:
            unchanged.append(row.item_id)
        else:
            to_process.append(found)
    return to_process, unchanged


def _gpu_jpeg_setup(model, pipeline: PipelineConfig):
    """(pipeline, embed_jpegs): JPEGs decoded on the GPU when the image tower runs on CUDA and
    `pipeline.gpu_decode` allows it (auto: whenever it can); else the pipeline as given and None."""
    if pipeline.gpu_decode == "off":
        return pipeline, None
    from indexer.media.gpu_jpeg import GpuJpegEmbedder, gpu_decode_available

    requested = str(model.requested_device)
    device = model.device if requested.startswith(("cuda", "auto")) else requested  # "cpu": no torch import
    if not gpu_decode_available(device):
        if pipeline.gpu_decode == "on":
            raise MmsearchError(f"--gpu-decode on needs a CUDA device and torchvision's GPU JPEG decoder "
                                f"(the image tower runs on {device})")
        return pipeline, None
    embedder = GpuJpegEmbedder(model.image, model.preprocess, pipeline.decode)
    log.info("JPEGs are decoded on %s (nvJPEG)", model.device)
    return dataclasses.replace(pipeline, defer_jpeg=True), embedder.embed


def index_folders(library: Library, model, config: IndexConfig,
                  on_progress: Callable[[IndexProgress], None] | None = None,
                  on_file_error: Callable[[str, str], None] | None = None) -> IndexReport:
    """Bring the index up to date with config.roots. Call with the library's write lock held."""
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

    library.meta.bind_model(model.info)
    if config.index_type:
        library.set_index_type(config.index_type)
    roots = [os.path.abspath(os.path.expanduser(root)) for root in config.roots]
    base_generation = library.meta.generation
    run_id = library.meta.start_run("index", roots)

    to_process: list[FoundFile] = []
    for root in roots:
        files, unchanged = _split_changed(root, library, config.scan, on_skip=file_skipped)
        library.meta.mark_seen(unchanged, run_id)
        report.unchanged += len(unchanged)
        to_process.extend(files)
        progress(IndexProgress("scan", len(to_process) + report.unchanged, 0))

    changed_ids: list[int] = []
    total = len(to_process)
    progress(IndexProgress("embed", 0, total))
    if to_process:
        known_hashes = library.meta.hashes_with_vectors()
        pipeline, embed_jpegs = _gpu_jpeg_setup(model, config.pipeline)
        prepared = prepare_files(to_process, known_hashes, model.preprocess, pipeline)
        done = 0
        embed = (lambda pixels: model.image.embed_pixels(pixels))

        def write(rows):  # on the writer thread, while the next batch is embedded
            return library.meta.write_batch(rows, run_id)

        batches = embed_batches(prepared, embed, pipeline, on_vanished=file_skipped, embed_jpegs=embed_jpegs)
        for rows, written in write_behind(batches, write):
            changed_ids.extend(written)
            for row in rows:
                if row.error is not None:
                    report.failed += 1
                    file_error(row.path, row.error)
                elif row.vector is not None:
                    report.embedded += 1
                else:
                    report.reused += 1
            # hashes embedded now serve later duplicates in this same run
            known_hashes.update((content_hash, item_id) for item_id, content_hash in written.items() if content_hash)
            done += len(rows)
            progress(IndexProgress("embed", done, total))

    removed_ids: list[int] = []
    for root in roots:
        removed_ids.extend(library.meta.sweep(root, run_id))
    report.removed = len(removed_ids)
    progress(IndexProgress("finish", total, total))
    library.update_vectors(base_generation=base_generation, changed_ids=changed_ids, removed_ids=removed_ids)
    report.seconds = time.perf_counter() - started
    library.meta.finish_run(run_id, **{k: v for k, v in report.as_dict().items() if k in
                                       ("embedded", "reused", "removed", "failed", "unchanged", "seconds")})
    return report


def forget_paths(library: Library, paths: Sequence[str]) -> int:
    """Drop folders (or single files) from the index. Call with the write lock held."""
    base_generation = library.meta.generation
    removed: list[int] = []
    for path in paths:
        removed.extend(library.meta.forget(os.path.abspath(os.path.expanduser(path))))
    if removed:
        library.update_vectors(base_generation=base_generation, removed_ids=removed)
    return len(removed)
