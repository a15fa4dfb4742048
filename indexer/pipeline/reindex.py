"""Re-embed an existing index with another model, resumably and without a window of no search.

New vectors are staged beside the live ones (searches keep using the old model meanwhile); when
every item has one, a single transaction swaps model and vectors. A killed reindex resumes where
it stopped (committed batches are never embedded again, and one killed after its swap only writes
the vector file); asking for a different model discards the staged work.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

from indexer.store.library import Library
from indexer.pipeline.embed import PipelineConfig, embed_batches, prepare_files
from indexer.media.scan import FoundFile
from indexer.pipeline.sync import IndexProgress

log = logging.getLogger(__name__)


@dataclass
class ReindexReport:
    embedded: int = 0
    failed: int = 0
    already_staged: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"embedded": self.embedded, "failed": self.failed, "already_staged": self.already_staged,
                "seconds": round(self.seconds, 3)}


def reindex(library: Library, model, pipeline: PipelineConfig = PipelineConfig(),
            on_progress: Callable[[IndexProgress], None] | None = None,
            on_file_error: Callable[[str, str], None] | None = None) -> ReindexReport:
    """Switch `library` to `model`. Call with the library's write lock held."""
    started = time.perf_counter()
    report = ReindexReport()
    progress = on_progress or (lambda _: None)
    meta = library.meta
    if meta.staged_model() is None and meta.swap_unfinished(model.info):
        # killed after its swap committed: the vectors are in; only the vector file is left to write
        library.update_vectors(base_generation=meta.generation, rebuild=True)
        meta.clear_swapped()
        report.already_staged = meta.counts()["items"]
        progress(IndexProgress("finish", 0, 0))
        report.seconds = time.perf_counter() - started
        return report
    meta.begin_staging(model.info)
    base_generation = meta.generation
    todo = meta.items_to_stage()
    report.already_staged = meta.counts()["items"] - len(todo)
    files = []
    for item_id, path, size, mtime in todo:
        try:
            stat = os.stat(path)
            files.append(FoundFile(path, stat.st_size, stat.st_mtime))
        except OSError as exc:
            files.append(FoundFile(path, size, mtime))  # prepare_file reports it missing
            log.info("reindex: %s: %s", path, exc)
    progress(IndexProgress("embed", 0, len(files)))
    done = 0
    prepared = prepare_files(files, {}, model.preprocess, pipeline)
    for rows in embed_batches(prepared, model.image.embed_pixels, pipeline):
        vectors = {row.path: row.vector for row in rows if row.vector is not None}
        errors = {row.path: row.error for row in rows if row.error is not None}
        meta.stage_batch(vectors, errors)
        report.embedded += len(vectors)
        report.failed += len(errors)
        for path, error in errors.items():
            if on_file_error is not None:
                on_file_error(path, error)
        done += len(rows)
        progress(IndexProgress("embed", done, len(files)))
    progress(IndexProgress("finish", done, len(files)))
    meta.swap_in_staged()
    library.update_vectors(base_generation=base_generation, rebuild=True)
    meta.clear_swapped()
    report.seconds = time.perf_counter() - started
    return report
