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

from indexer.media.kinds import Media
from indexer.media.scan import FoundFile
from indexer.pipeline.embed import PipelineConfig, embed_batches, prepare_files
from indexer.pipeline.sync import IndexProgress, warm_encoders
from indexer.store.library import Library
from indexer.store.records import IMAGE
from indexer.store.staging import Staging

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


def reindex(library: Library, media: Media, pipeline: PipelineConfig = PipelineConfig(),
            on_progress: Callable[[IndexProgress], None] | None = None,
            on_file_error: Callable[[str, str], None] | None = None, encoder: str = IMAGE) -> ReindexReport:
    """Switch `library`'s `encoder` (the pictures', or the sounds') to `media`'s. Call with the library's
    write lock held."""
    started = time.perf_counter()
    report = ReindexReport()
    progress = on_progress or (lambda _: None)
    staging = library.staging if encoder == IMAGE else Staging(library.db, encoder)
    info = media.encoders[encoder].info
    if staging.model() is None and staging.swap_unfinished(info):
        # killed after its swap committed: the vectors are in; only the vector file is left to write
        library.update_vectors(base_generation=library.generation, rebuild=True)
        staging.clear_swapped()
        report.already_staged = library.reads.counts()["items"]
        progress(IndexProgress("finish", 0, 0))
        report.seconds = time.perf_counter() - started
        return report
    staging.begin(info)
    base_generation = library.generation
    todo = staging.todo()
    report.already_staged = staging.staged_count()
    files = []
    for _item_id, path, size, mtime in todo:
        try:
            stat = os.stat(path)
            files.append(FoundFile(path, stat.st_size, stat.st_mtime))
        except OSError as exc:
            files.append(FoundFile(path, size, mtime))  # prepare_file reports it missing
            log.info("reindex: %s: %s", path, exc)
    if files:
        warm_encoders(media, progress)
    progress(IndexProgress("embed", 0, len(files)))
    done = 0
    prepared = prepare_files(files, {}, media.by_extension(), pipeline)
    for rows in embed_batches(prepared, media.encoders, pipeline):
        staging.add_batch(rows)
        for row in rows:
            if row.error is not None:
                report.failed += 1
                if on_file_error is not None:
                    on_file_error(row.path, row.error)
            else:
                report.embedded += 1
        done += len(rows)
        progress(IndexProgress("embed", done, len(files)))
    progress(IndexProgress("finish", done, len(files)))
    staging.swap_in()
    library.update_vectors(base_generation=base_generation, rebuild=True)
    staging.clear_swapped()
    report.seconds = time.perf_counter() - started
    return report
