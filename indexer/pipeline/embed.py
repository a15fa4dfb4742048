"""The embed pipeline: files -> (read, hash, decode) in workers -> batches -> vectors.

A chain of generators (rclip's shape). Workers run with a bounded look-ahead so decoding the
next batches overlaps inference on this one while memory stays flat. A file whose content hash
is already in the index is not decoded at all: its vector is reused (renames, copies).

Every file has a time budget (`decode_timeout_s`, reading + hashing + decoding). Decoding runs in
daemon threads: a thread cannot be killed, so a file that overstays its budget is reported and
given up on, its thread is left to finish (or hang) on its own, and a fresh thread takes its
place; the run goes on and the process can still exit. We chose this over a process pool after
measuring both on 2 cores: the budget costs nothing measurable on the normal path (2,000 small
PNGs: 2.7-3.2 s with it, 2.8-3.5 s with the plain ThreadPoolExecutor it replaced), while worker
processes took 3.4x as long on the same files (every 224x224 float image is pickled back through
a pipe) and only broke even on 1024x768 JPEGs. What a pool would add, surviving a decoder that
segfaults, is not worth that price. The memory side is the pixel budget
(`DecodeOptions.max_megapixels`), checked from the header before any pixel is decoded.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, TypeVar

import numpy as np

from indexer.media.image import DecodeOptions, Decoded, FileGoneError, content_hash, decode_image, read_file_checked
from indexer.media.gpu_jpeg import DeferredJpeg, is_jpeg, jpeg_header
from indexer.media.scan import FoundFile
from indexer.store.meta import NewItem
from indexer.errors import DecodeError, MmsearchError
from indexer.media.preprocess import PreprocessConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_DECODE_TIMEOUT_S = 30.0


class DecodeStalledError(MmsearchError):
    """So many reads hung that going on would only pile up stuck threads (a dead network drive)."""


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 32
    workers: int | None = None  # decode threads; None: default_workers()
    lookahead_batches: int = 2
    decode: DecodeOptions = DecodeOptions()
    max_pending_rows: int = 512  # reused/failed rows written at least this often
    decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S  # per file; None: no limit
    # JPEGs: workers read only the header and the GPU decodes the pixels (indexer.media.gpu_jpeg); set
    # by the caller when the image tower runs on CUDA, with embed_batches(embed_jpegs=...)
    defer_jpeg: bool = False
    gpu_decode: str = "auto"  # auto | on | off: JPEGs decoded on the GPU when the tower runs on CUDA
    # with defer_jpeg: JPEGs of at least this many megapixels are shared between the GPU and the
    # decode threads (PIL draft mode) when the GPU has a batch waiting (GpuBacklog); None: GPU only.
    # nvJPEG caps 12-MP photos at ~570/s on an H200 while its 16 cores sit idle (docs/BENCHMARKS.md)
    cpu_assist_megapixels: float | None = 4.0


def default_workers(gpu_decode: bool) -> int:
    """Decode threads when not told: every core when the GPU decodes JPEGs and runs the tower (the
    threads then share big JPEGs with it), else the cores but at most 8 (the tower needs CPU too)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores if gpu_decode else max(1, min(8, cores))


@dataclass(slots=True)
class Prepared:
    """One file after its worker: decoded pixels, a vector to reuse, or an error.

    Not frozen: a frozen dataclass sets each field through object.__setattr__, several times the
    cost of this one per file, on the hot path of a GPU run (thousands of files/s).
    """

    file: FoundFile
    content_hash: str | None = None
    decoded: Decoded | None = None
    jpeg: DeferredJpeg | None = None  # header read, pixels left for the GPU (PipelineConfig.defer_jpeg)
    reuse_from: int | None = None
    error: str | None = None
    vanished: bool = False  # gone between the scan and the read: nothing to record


def prepare_file(file: FoundFile, known_hashes: Mapping[str, int], preprocess: PreprocessConfig,
                 options: DecodeOptions, defer_jpeg: bool = False,
                 decode_here: Callable[[DeferredJpeg], bool] | None = None) -> Prepared:
    """Read, hash and decode one file (or, with `defer_jpeg`, only parse a JPEG's header for the
    GPU to decode, unless `decode_here(header)` says this thread should decode it after all)."""
    try:
        data, stat = read_file_checked(file.path)
    except FileGoneError as exc:
        return Prepared(file, error=str(exc), vanished=True)
    except DecodeError as exc:
        return Prepared(file, error=str(exc))
    if (stat.st_size, stat.st_mtime) != (file.size, file.mtime):
        file = FoundFile(file.path, stat.st_size, stat.st_mtime)  # changed since the scan: describe what was read
    digest = content_hash(data)
    source = known_hashes.get(digest)
    if source is not None:
        return Prepared(file, content_hash=digest, reuse_from=source)
    try:
        if defer_jpeg and is_jpeg(data):
            deferred = jpeg_header(data, options)
            if deferred is not None and (decode_here is None or not decode_here(deferred)):
                return Prepared(file, content_hash=digest, jpeg=deferred)
        return Prepared(file, content_hash=digest, decoded=decode_image(data, preprocess, options))
    except DecodeError as exc:
        return Prepared(file, content_hash=digest, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a decoder bug costs one file, never the run
        log.exception("unexpected error decoding %s", file.path)
        return Prepared(file, content_hash=digest, error=f"unexpected decode error: {exc!r}")


class GpuBacklog:
    """Big JPEGs shared between the GPU and the decode threads: a thread decodes one itself when the
    GPU already has a full batch of JPEGs waiting for it (headers read, not yet taken).

    Then the thread's tens of ms of PIL draft decoding run while the GPU works through that batch,
    so the file is ready when its turn comes and the GPU has one file less to decode; when the
    threads fall behind, the backlog drains and every JPEG goes to the GPU again.
    """

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        # two counters, no lock: `handed` is only added to under the decode pool's lock
        # (_DecodeThreads.on_result), `taken` only by the one consumer thread
        self.handed = 0
        self.taken_count = 0

    @property
    def waiting(self) -> int:
        """JPEGs handed to the GPU, not yet taken by the consumer."""
        return self.handed - self.taken_count

    def full(self) -> bool:
        return self.waiting >= self.batch_size

    def handed_over(self, prepared: Prepared) -> None:
        if prepared.jpeg is not None:
            self.handed += 1

    def taken(self, prepared: Prepared) -> Prepared:
        if prepared.jpeg is not None:
            self.taken_count += 1
        return prepared


class _Job:
    """One file for a decode thread. `finished` is a bare lock, held until the result is in: an
    Event per file costs far more interpreter time (its Condition is Python code)."""

    __slots__ = ("file", "args", "started", "result", "finished", "abandoned", "notify")

    def __init__(self, file: FoundFile, args: tuple = (), result: Prepared | None = None,
                 notify: queue.SimpleQueue | None = None):
        self.file = file
        self.args = args
        self.notify = notify  # the unordered consumer's queue of finished jobs
        self.started: float | None = None
        self.result = result
        self.finished = threading.Lock()
        self.abandoned = False
        if result is None:
            self.finished.acquire()


class _DecodeThreads:
    """Daemon worker threads running prepare_file; a job over its time budget is abandoned."""

    max_stuck = 32  # abandoned threads still running before the run stops instead of spawning more

    def __init__(self, workers: int, on_result: Callable[[Prepared], None] | None = None):
        self.workers = max(1, workers)
        # told of each result on the worker thread before it is handed over, under self.lock
        self.on_result = on_result
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.closed = False
        self.stuck = 0
        self.next_check = 0.0  # first_finished: when to look for jobs over their time budget next
        for _ in range(self.workers):
            self._spawn()

    def _spawn(self) -> None:
        threading.Thread(target=self._work, name="decode", daemon=True).start()

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if self.closed:
                continue
            job.started = time.monotonic()
            try:
                result = prepare_file(*job.args)
            except BaseException as exc:  # noqa: BLE001 - never lose a worker silently
                result = Prepared(job.file, error=f"unexpected error: {exc!r}")
            with self.lock:
                abandoned = job.abandoned
                if abandoned:  # another thread took this one's place meanwhile
                    self.stuck -= 1
                elif self.on_result is not None:  # never for a result nobody will take
                    self.on_result(result)
                job.result = result
                job.finished.release()
            if job.notify is not None:
                job.notify.put(job)
            if abandoned:
                return

    def submit(self, file: FoundFile, args: tuple, notify: queue.SimpleQueue | None = None) -> _Job:
        job = _Job(file, args, notify=notify)
        self.jobs.put(job)
        return job

    def overdue(self, job: _Job, timeout_s: float | None) -> Prepared | None:
        """None while `job` is within its budget (or done); past it, the job is abandoned: an
        error to report in its place, and a fresh thread in its thread's place."""
        if timeout_s is None or job.started is None or time.monotonic() - job.started < timeout_s:
            return None
        with self.lock:
            if job.result is not None:
                return None
            job.abandoned = True
            self.stuck += 1
            stuck = self.stuck
        if stuck > self.max_stuck:
            raise DecodeStalledError(
                f"{stuck} files are still being read or decoded long after their {timeout_s:g} s budget (the last: "
                f"{job.file.path}); is a network drive stalled? Stopping here; finished batches are saved")
        log.warning("giving up on %s after %g s; its decode thread is abandoned", job.file.path, timeout_s)
        self._spawn()
        return Prepared(job.file, error=f"reading and decoding took longer than {timeout_s:g} s "
                                        f"(--decode-timeout); skipped")

    def result(self, job: _Job, timeout_s: float | None) -> Prepared:
        """The job's outcome; past `timeout_s` from its start, an error and a fresh thread."""
        while not job.finished.acquire(timeout=0.1):
            given_up = self.overdue(job, timeout_s)
            if given_up is not None:
                return given_up
        return job.result

    def first_finished(self, pending: dict[_Job, None], finished: queue.SimpleQueue,
                       timeout_s: float | None) -> Prepared:
        """The outcome of whichever pending job finishes first (removed from `pending`); a job past
        its budget is abandoned and reported instead."""
        while True:
            now = time.monotonic()
            if timeout_s is not None and now >= self.next_check:  # also while other files keep finishing
                self.next_check = now + 0.1
                for job in pending:  # in submission order: the started ones first
                    if job.started is None:
                        break  # jobs are taken in order: none after this one has started either
                    given_up = self.overdue(job, timeout_s)
                    if given_up is not None:
                        del pending[job]
                        return given_up
            try:
                job = finished.get(timeout=0.1)
            except queue.Empty:
                continue
            if job in pending:  # else abandoned earlier, reported then
                del pending[job]
                return job.result

    def close(self) -> None:
        self.closed = True
        for _ in range(self.workers):
            self.jobs.put(None)


def prepare_files(files: Iterable[FoundFile], known_hashes: Mapping[str, int], preprocess: PreprocessConfig,
                  config: PipelineConfig) -> Iterator[Prepared]:
    """prepare_file over files in worker threads, with a bounded window in flight.

    In order, except with `config.defer_jpeg` (a GPU run): then each file comes out as soon as it is
    ready, so a slow file never holds up the GPU, and big JPEGs (`config.cpu_assist_megapixels`)
    are shared between the GPU and the threads (GpuBacklog). An empty file (size 0 when scanned) is
    reported without a read: 100k of them cost seconds.
    """
    window = max(1, config.batch_size * config.lookahead_batches)
    decode_here, backlog = None, None
    if config.defer_jpeg and config.cpu_assist_megapixels is not None:
        assist_pixels = config.cpu_assist_megapixels * 1e6
        backlog = GpuBacklog(config.batch_size)

        def decode_here(jpeg: DeferredJpeg) -> bool:
            return jpeg.width * jpeg.height >= assist_pixels and backlog.full()
    pool = _DecodeThreads(config.workers or default_workers(config.defer_jpeg),
                          on_result=backlog.handed_over if backlog else None)
    try:
        if config.defer_jpeg:
            taken = backlog.taken if backlog else (lambda prepared: prepared)
            yield from _unordered(files, pool, window, config, taken,
                                  lambda file: (file, known_hashes, preprocess, config.decode, True, decode_here))
            return
        in_flight: deque[_Job] = deque()
        for file in files:
            if file.size == 0:
                in_flight.append(_Job(file, result=Prepared(file, error="empty file (0 bytes)")))
            else:
                in_flight.append(pool.submit(file, (file, known_hashes, preprocess, config.decode)))
            if len(in_flight) >= window:
                yield pool.result(in_flight.popleft(), config.decode_timeout_s)
        while in_flight:
            yield pool.result(in_flight.popleft(), config.decode_timeout_s)
    finally:
        pool.close()


def _unordered(files: Iterable[FoundFile], pool: _DecodeThreads, window: int, config: PipelineConfig,
               taken: Callable[[Prepared], Prepared], job_args: Callable[[FoundFile], tuple]) -> Iterator[Prepared]:
    finished: queue.SimpleQueue = queue.SimpleQueue()
    pending: dict[_Job, None] = {}  # in submission order
    for file in files:
        if file.size == 0:
            yield Prepared(file, error="empty file (0 bytes)")
            continue
        pending[pool.submit(file, job_args(file), finished)] = None
        if len(pending) >= window:
            yield taken(pool.first_finished(pending, finished, config.decode_timeout_s))
    while pending:
        yield taken(pool.first_finished(pending, finished, config.decode_timeout_s))


def _as_row(prepared: Prepared, vector: np.ndarray | None = None, error: str | None = None) -> NewItem:
    decoded = prepared.decoded or (prepared.jpeg if error is None else None)  # a failed decode records no size
    return NewItem(
        path=prepared.file.path, size=prepared.file.size, mtime=prepared.file.mtime,
        content_hash=prepared.content_hash,
        width=decoded.width if decoded else None, height=decoded.height if decoded else None,
        format=decoded.format if decoded else None,
        vector=vector, reuse_from=prepared.reuse_from, error=error or prepared.error,
        taken_at=decoded.taken_at if decoded else None,
    )


def embed_batches(prepared: Iterable[Prepared], embed_pixels, config: PipelineConfig,
                  on_vanished: Callable[[str, str], None] | None = None,
                  embed_jpegs: Callable | None = None) -> Iterator[list[NewItem]]:
    """Group prepared files into write batches; the decoded ones are embedded together.

    With `on_vanished`, a file that disappeared before it was read is reported there and gets no
    row (there is nothing to remember); without it, it is a row with an error like any other.
    `embed_jpegs` (indexer.media.gpu_jpeg.GpuJpegEmbedder.embed) takes the deferred JPEGs.
    """
    to_embed: list[Prepared] = []
    others: list[NewItem] = []

    def flush() -> list[NewItem]:
        rows = list(others)
        decoded = [item for item in to_embed if item.decoded is not None]
        deferred = [item for item in to_embed if item.decoded is None]
        if decoded:
            vectors = embed_pixels(np.stack([item.decoded.pixels for item in decoded]))
            rows.extend(_as_row(item, vector) for item, vector in zip(decoded, vectors))
        if deferred:
            if embed_jpegs is None:
                raise ValueError("deferred JPEGs (PipelineConfig.defer_jpeg) need embed_jpegs")
            outcomes = embed_jpegs([item.jpeg for item in deferred])
            rows.extend(_as_row(item, outcome.vector, outcome.error) for item, outcome in zip(deferred, outcomes))
        to_embed.clear()
        others.clear()
        return rows

    for item in prepared:
        if item.vanished and on_vanished is not None:
            on_vanished(item.file.path, item.error or "vanished")
            continue
        if item.decoded is not None or item.jpeg is not None:
            to_embed.append(item)
        else:
            others.append(_as_row(item))
        if len(to_embed) >= config.batch_size or len(others) >= config.max_pending_rows:
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
                except Exception:  # noqa: BLE001 - the error that stopped the run is the one to report
                    log.exception("a database write failed while the run was stopping")
