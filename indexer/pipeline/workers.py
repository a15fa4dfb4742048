"""A pool of daemon worker threads where every job has a time budget.

A thread cannot be killed, so a job that overstays its budget is reported (its result replaced by
what `on_timeout` says), its thread is left to finish (or hang) on its own, and a fresh thread
takes its place; the caller goes on and the process can still exit. When too many abandoned
threads are still stuck (`max_stuck`: a dead network drive), the pool stops with
`WorkersStalledError` instead of spawning more.

We chose threads over a process pool after measuring both on 2 cores (indexer/pipeline/embed.py
has the figures). Nothing here knows what a job does: the embed pipeline runs one file per job.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Callable, Generic, TypeVar

from indexer.errors import MmsearchError

log = logging.getLogger(__name__)

R = TypeVar("R")


class WorkersStalledError(MmsearchError):
    """So many jobs hung that going on would only pile up stuck threads (a dead network drive)."""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Job(Generic[R]):
    """One job. `finished` is a bare lock, held until the result is in: an Event per job costs far
    more interpreter time (its Condition is Python code)."""

    __slots__ = ("name", "args", "started", "result", "finished", "abandoned", "notify")

    def __init__(self, name: str, args: tuple = (), result: R | None = None, notify: queue.SimpleQueue | None = None):
        self.name = name  # what the job is about, for messages (a file's path)
        self.args = args
        self.notify = notify  # the unordered consumer's queue of finished jobs
        self.started: float | None = None
        self.result = result
        self.finished = threading.Lock()
        self.abandoned = False
        if result is None:
            self.finished.acquire()


class WorkerThreads(Generic[R]):
    """Daemon threads running `work(*job.args)`; a job over its time budget is abandoned.

    `on_error(job, exc)` makes the result of a job whose work raised; `on_timeout(job, seconds)` the
    result reported for an abandoned one; `on_result(result)` is told of each result on the worker
    thread, under `self.lock`, before it is handed over (never for an abandoned job's result).
    """

    max_stuck = 32  # abandoned threads still running before the pool stops instead of spawning more

    def __init__(self, workers: int, work: Callable[..., R], *, on_error: Callable[[Job, BaseException], R],
                 on_timeout: Callable[[Job, float], R], on_result: Callable[[R], None] | None = None,
                 name: str = "worker"):
        self.workers = max(1, workers)
        self.work = work
        self.on_error = on_error
        self.on_timeout = on_timeout
        self.on_result = on_result
        self.name = name
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.closed = False
        self.stuck = 0
        self.next_check = 0.0  # first_finished: when to look for jobs over their time budget next
        for _ in range(self.workers):
            self._spawn()

    def _spawn(self) -> None:
        threading.Thread(target=self._work, name=self.name, daemon=True).start()

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if self.closed:
                continue
            job.started = time.monotonic()
            try:
                result = self.work(*job.args)
            except BaseException as exc:  # noqa: BLE001 - never lose a worker silently
                result = self.on_error(job, exc)
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

    def submit(self, name: str, args: tuple, notify: queue.SimpleQueue | None = None) -> Job[R]:
        job = Job(name, args, notify=notify)
        self.jobs.put(job)
        return job

    def overdue(self, job: Job[R], timeout_s: float | None | Callable[[Job], float | None]) -> R | None:
        """None while `job` is within its budget (or done); past it, the job is abandoned: a result
        to report in its place, and a fresh thread in its thread's place. `timeout_s` may be a
        function of the job (a budget per job)."""
        if callable(timeout_s):
            timeout_s = timeout_s(job)
        if timeout_s is None or job.started is None or time.monotonic() - job.started < timeout_s:
            return None
        with self.lock:
            if job.result is not None:
                return None
            job.abandoned = True
            self.stuck += 1
            stuck = self.stuck
        if stuck > self.max_stuck:
            raise WorkersStalledError(
                f"{stuck} files are still being read or decoded long after their {timeout_s:g} s budget (the last: "
                f"{job.name}); is a network drive stalled? Stopping here; finished batches are saved")
        log.warning("giving up on %s after %g s; its %s thread is abandoned", job.name, timeout_s, self.name)
        self._spawn()
        return self.on_timeout(job, timeout_s)

    def result(self, job: Job[R], timeout_s: float | None) -> R:
        """The job's outcome; past `timeout_s` from its start, the timeout result and a fresh thread."""
        while not job.finished.acquire(timeout=0.1):
            given_up = self.overdue(job, timeout_s)
            if given_up is not None:
                return given_up
        return job.result

    def first_finished(self, pending: dict[Job[R], None], finished: queue.SimpleQueue,
                       timeout_s: float | None | Callable[[Job], float | None]) -> R:
        """The outcome of whichever pending job finishes first (removed from `pending`); a job past
        its budget is abandoned and reported instead."""
        while True:
            now = time.monotonic()
            if timeout_s is not None and now >= self.next_check:  # also while other jobs keep finishing
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
