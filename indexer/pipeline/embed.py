"""The embed pipeline: files -> (read, hash, decode) on worker threads -> batches -> vectors.

A chain of generators (rclip's shape). Workers run with a bounded look-ahead so decoding the
next batches overlaps inference on this one while memory stays flat. A file whose content hash
is already in the index is not decoded at all: its vectors are reused (renames, copies). What a
file becomes is its reader's business (indexer.media.kinds): the pipeline groups the segments of
a batch by encoder and hands each encoder its own.

Every file has a time budget (`decode_timeout_s`, reading + hashing + decoding), kept by
indexer.pipeline.workers: a file that overstays it is reported and given up on, and the run goes
on. We chose threads over a process pool after measuring both on 2 cores: the budget costs
nothing measurable on the normal path (2,000 small PNGs: 2.7-3.2 s with it, 2.8-3.5 s with the
plain ThreadPoolExecutor it replaced), while worker processes took 3.4x as long on the same files
(every 224x224 float image is pickled back through a pipe) and only broke even on 1024x768 JPEGs.
What a pool would add, surviving a decoder that segfaults, is not worth that price. The memory
side is each reader's budget (for images `DecodeOptions.max_megapixels`, checked from the header
before any pixel is decoded).
"""
from __future__ import annotations

import logging
import os
import queue
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, TypeVar

from indexer.errors import DecodeError
from indexer.media.files import FileGoneError, content_hash, read_file_checked, sample_file_checked
from indexer.media.kinds import DecodedItem, Encoder, Reader
from indexer.media.scan import FoundFile
from indexer.pipeline.workers import Job, WorkerThreads, usable_cores
from indexer.store.records import Embedded, NewItem

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_DECODE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 32  # segments per encoder call
    workers: int | None = None  # decode threads; None: default_workers()
    lookahead_batches: int = 2
    max_pending_rows: int = 512  # reused/failed rows written at least this often
    decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S  # per file; None: no limit
    # files come out as soon as they are ready (not in order), so a slow file never holds up a GPU;
    # set by the caller when some reader defers work to a device (a GPU JPEG decode)
    unordered: bool = False


def default_workers(device_decodes: bool) -> int:
    """Decode threads when not told: every core when a GPU decodes (the threads then share big
    files with it), else the cores but at most 8 (the encoders need CPU too)."""
    cores = usable_cores()
    return cores if device_decodes else max(1, min(8, cores))


@dataclass(slots=True)
class Prepared:
    """One file after its worker: decoded segments, an item to reuse vectors from, or an error.

    Not frozen: a frozen dataclass sets each field through object.__setattr__, several times the
    cost of this one per file, on the hot path of a GPU run (thousands of files/s).
    """

    file: FoundFile
    modality: str | None = None
    content_hash: str | None = None
    decoded: DecodedItem | None = None
    reuse_from: int | None = None
    error: str | None = None
    vanished: bool = False  # gone between the scan and the read: nothing to record


def prepare_file(file: FoundFile, known_hashes: Mapping[str, int], readers: Mapping[str, Reader],
                 busy: Callable[[], bool]) -> Prepared:
    """Read, hash and decode one file with the reader of its extension."""
    reader = readers.get(os.path.splitext(file.path)[1].lower())
    modality = reader.modality if reader is not None else None
    if reader is not None and getattr(reader, "streams", False):
        return _prepare_streamed(file, known_hashes, reader, busy)
    try:
        data, stat = read_file_checked(file.path)
    except FileGoneError as exc:
        return Prepared(file, modality, error=str(exc), vanished=True)
    except DecodeError as exc:
        return Prepared(file, modality, error=str(exc))
    if (stat.st_size, stat.st_mtime) != (file.size, file.mtime):
        file = FoundFile(file.path, stat.st_size, stat.st_mtime)  # changed since the scan: describe what was read
    digest = content_hash(data)
    source = known_hashes.get(digest)
    if source is not None:
        return Prepared(file, modality, content_hash=digest, reuse_from=source)
    if reader is None:
        return Prepared(file, modality, content_hash=digest, error="no reader for this kind of file")
    try:
        return Prepared(file, modality, content_hash=digest, decoded=reader.read(data, busy))
    except DecodeError as exc:
        return Prepared(file, modality, content_hash=digest, error=str(exc))
    except Exception as exc:
        log.exception("unexpected error decoding %s", file.path)
        return Prepared(file, modality, content_hash=digest, error=f"unexpected decode error: {exc!r}")


def _prepare_streamed(file: FoundFile, known_hashes: Mapping[str, int], reader: Reader,
                      busy: Callable[[], bool]) -> Prepared:
    """prepare_file for a reader that streams its file: a sampled hash first, a full read only for new content."""
    modality = reader.modality
    try:
        digest, stat = sample_file_checked(file.path)
    except FileGoneError as exc:
        return Prepared(file, modality, error=str(exc), vanished=True)
    except DecodeError as exc:
        return Prepared(file, modality, error=str(exc))
    if (stat.st_size, stat.st_mtime) != (file.size, file.mtime):
        file = FoundFile(file.path, stat.st_size, stat.st_mtime)
    source = known_hashes.get(digest)
    if source is not None:
        return Prepared(file, modality, content_hash=digest, reuse_from=source)
    try:
        return Prepared(file, modality, content_hash=digest, decoded=reader.read_path(file.path, busy))
    except DecodeError as exc:
        return Prepared(file, modality, content_hash=digest, error=str(exc))
    except Exception as exc:  # a decoder bug costs one file, never the run (logged with its traceback)
        log.exception("unexpected error decoding %s", file.path)
        return Prepared(file, modality, content_hash=digest, error=f"unexpected decode error: {exc!r}")


class Backlog:
    """Deferred work (payloads a device decodes itself) handed out but not yet taken by the consumer.

    A reader asks `full()` (its `busy`) to decide whether to decode a big file itself: then its
    tens of ms of CPU decoding run while the device works through the waiting batch, so the file is
    ready when its turn comes; when the threads fall behind, the backlog drains and the device gets
    every file again.
    """

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        # two counters, no lock: `handed` is only added to under the worker pool's lock
        # (WorkerThreads.on_result), `taken_count` only by the one consumer thread
        self.handed = 0
        self.taken_count = 0

    @property
    def waiting(self) -> int:
        return self.handed - self.taken_count

    def full(self) -> bool:
        return self.waiting >= self.batch_size

    def handed_over(self, prepared: Prepared) -> None:
        if prepared.decoded is not None and prepared.decoded.deferred:
            self.handed += 1

    def taken(self, prepared: Prepared) -> Prepared:
        if prepared.decoded is not None and prepared.decoded.deferred:
            self.taken_count += 1
        return prepared


def _never_busy() -> bool:
    return False


def _failed(job: Job, exc: BaseException) -> Prepared:
    return Prepared(job.args[0], error=f"unexpected error: {exc!r}")


def _timed_out(job: Job, timeout_s: float) -> Prepared:
    return Prepared(job.args[0], error=f"reading and decoding took longer than {timeout_s:g} s (--decode-timeout); skipped")


def prepare_files(files: Iterable[FoundFile], known_hashes: Mapping[str, int], readers: Mapping[str, Reader],
                  config: PipelineConfig) -> Iterator[Prepared]:
    """prepare_file over files on worker threads, with a bounded window in flight.

    In order, except with `config.unordered` (a GPU run): then each file comes out as soon as it is
    ready, so a slow file never holds up the GPU, and readers may decode deferred work themselves
    while a full batch of it waits (`Backlog`). An empty file (size 0 when scanned) is reported
    without a read: 100k of them cost seconds.
    """
    window = max(1, config.batch_size * config.lookahead_batches)
    backlog = Backlog(config.batch_size) if config.unordered else None
    busy = backlog.full if backlog is not None else _never_busy
    pool = WorkerThreads(config.workers or default_workers(config.unordered), prepare_file, on_error=_failed,
                         on_timeout=_timed_out, on_result=backlog.handed_over if backlog else None, name="decode")
    try:
        if backlog is not None:
            yield from _unordered(files, pool, window, config, backlog,
                                  lambda file: (file, known_hashes, readers, busy))
            return
        in_flight: deque[tuple[Job, bool]] = deque()  # (job, streamed: a long sound or a video)
        limit = config.workers or default_workers(False)
        for file in files:
            streamed = _streams(file, readers)
            if file.size == 0:
                in_flight.append((Job(file.path, result=Prepared(file, error="empty file (0 bytes)")), False))
            else:
                in_flight.append((pool.submit(file.path, (file, known_hashes, readers, busy)), streamed))
            # a window of files, but at most `limit` streamed ones decoded ahead: a video's moments
            # are tens of MB, a picture's pixels a fraction of one
            while len(in_flight) >= window or (streamed and sum(kind for _, kind in in_flight) > limit):
                job, _ = in_flight.popleft()
                yield pool.result(job, _budget(job, config))
        while in_flight:
            job, _ = in_flight.popleft()
            yield pool.result(job, _budget(job, config))
    finally:
        pool.close()


STREAMED_BUDGET_BYTES = 50 << 20  # a streamed file's time budget grows by one budget per 50 MB


def _streams(file: FoundFile, readers: Mapping[str, Reader]) -> bool:
    reader = readers.get(os.path.splitext(file.path)[1].lower())
    return bool(reader is not None and getattr(reader, "streams", False))


def _budget(job: Job, config: PipelineConfig) -> float | None:
    """The job's time budget: `decode_timeout_s`, times the file's size in 50 MB for a streamed file
    (an hour of video takes minutes to decode; a hung read is still given up, later)."""
    if config.decode_timeout_s is None or not job.args:
        return config.decode_timeout_s
    file, readers = job.args[0], job.args[2]
    if not _streams(file, readers):
        return config.decode_timeout_s
    return config.decode_timeout_s * max(1.0, file.size / STREAMED_BUDGET_BYTES)


def _unordered(files: Iterable[FoundFile], pool: WorkerThreads, window: int, config: PipelineConfig,
               backlog: Backlog, job_args: Callable[[FoundFile], tuple]) -> Iterator[Prepared]:
    finished: queue.SimpleQueue = queue.SimpleQueue()
    pending: dict[Job, None] = {}  # in submission order
    for file in files:
        if file.size == 0:
            yield Prepared(file, error="empty file (0 bytes)")
            continue
        pending[pool.submit(file.path, job_args(file), finished)] = None
        if len(pending) >= window:
            yield backlog.taken(pool.first_finished(pending, finished, lambda job: _budget(job, config)))
    while pending:
        yield backlog.taken(pool.first_finished(pending, finished, lambda job: _budget(job, config)))


def _as_row(prepared: Prepared, vectors: list[Embedded] | None = None, error: str | None = None) -> NewItem:
    decoded = prepared.decoded if error is None else None  # a failed embed records no size
    row = NewItem(path=prepared.file.path, size=prepared.file.size, mtime=prepared.file.mtime,
                  content_hash=prepared.content_hash, vectors=vectors, reuse_from=prepared.reuse_from,
                  error=error or prepared.error)
    if prepared.modality is not None:
        row.modality = prepared.modality
    if decoded is not None:
        row.width, row.height, row.format = decoded.width, decoded.height, decoded.format
        row.taken_at, row.duration_s = decoded.taken_at, decoded.duration_s
        row.text_screen = decoded.text_screen
    return row


def embed_decoded(items: list[Prepared], encoders: Mapping[str, Encoder], batch_size: int) -> list[NewItem]:
    """Embed every segment of `items`, grouped by encoder in calls of at most `batch_size`.

    An item whose segment could not be embedded gets that error and no vectors."""
    by_encoder: dict[str, list[tuple[int, int]]] = {}  # encoder -> (item index, segment index)
    for item_index, item in enumerate(items):
        for segment_index, segment in enumerate(item.decoded.segments):
            by_encoder.setdefault(segment.encoder, []).append((item_index, segment_index))
    results: list[list] = [[None] * len(item.decoded.segments) for item in items]
    errors: list[str | None] = [None] * len(items)
    for name, places in by_encoder.items():
        encoder = encoders.get(name)
        if encoder is None:
            for item_index, _ in places:
                errors[item_index] = f"no {name} encoder in this index's model"
            continue
        for start in range(0, len(places), batch_size):
            chunk = places[start:start + batch_size]
            outcomes = encoder.embed([items[i].decoded.segments[j].payload for i, j in chunk])
            for (item_index, segment_index), outcome in zip(chunk, outcomes):
                if isinstance(outcome, str):
                    errors[item_index] = errors[item_index] or outcome
                else:
                    results[item_index][segment_index] = outcome
    rows = []
    for item, vectors, error in zip(items, results, errors):
        if error is not None:
            rows.append(_as_row(item, error=error))
        else:
            rows.append(_as_row(item, [Embedded(segment.encoder, segment.start_s, vector)
                                       for segment, vector in zip(item.decoded.segments, vectors)]))
    return rows


def embed_batches(prepared: Iterable[Prepared], encoders: Mapping[str, Encoder], config: PipelineConfig,
                  on_vanished: Callable[[str, str], None] | None = None) -> Iterator[list[NewItem]]:
    """Group prepared files into write batches; the decoded ones are embedded together.

    A batch is written once its decoded files hold `batch_size` segments (a long sound's windows
    stay with their file), or `max_pending_rows` other rows wait. With `on_vanished`, a file that
    disappeared before it was read is reported there and gets no row (there is nothing to
    remember); without it, it is a row with an error like any other.
    """
    to_embed: list[Prepared] = []
    segments = 0
    others: list[NewItem] = []

    def flush() -> list[NewItem]:
        nonlocal segments
        rows = list(others)
        if to_embed:
            rows.extend(embed_decoded(to_embed, encoders, config.batch_size))
        to_embed.clear()
        others.clear()
        segments = 0
        return rows

    for item in prepared:
        if item.vanished and on_vanished is not None:
            on_vanished(item.file.path, item.error or "vanished")
            continue
        if item.decoded is not None:
            to_embed.append(item)
            segments += len(item.decoded.segments)
        else:
            others.append(_as_row(item))
        if segments >= config.batch_size or len(others) >= config.max_pending_rows:
            yield flush()
    if to_embed or others:
        yield flush()


def write_behind(batches: Iterable[list[NewItem]], write: Callable[[list[NewItem]], T]) -> Iterator[tuple[list[NewItem], T]]:
    """(batch, write(batch)) for each batch, in order, with the writes on one writer thread.

    Writing batch i (its own SQLite transaction) overlaps embedding batch i+1: on a GPU the
    database writes were a third of a run's wall time, done one after the other. When the producer
    or the consumer stops with an error, the write in flight is allowed to finish first, so a batch
    is either committed whole or not at all, as before.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer:
        previous = None
        try:
            for batch in batches:
                current = (batch, writer.submit(write, batch))
                if previous is not None:
                    done, previous = previous, None
                    yield done[0], done[1].result()
                previous = current
            if previous is not None:
                done, previous = previous, None
                yield done[0], done[1].result()
        finally:
            if previous is not None:  # stopped early: wait for the write in flight, keep the first error
                try:
                    previous[1].result()
                except Exception:
                    log.exception("a database write failed while the run was stopping")
