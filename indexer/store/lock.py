"""One writer per index: an advisory file lock (fcntl.flock) beside the database."""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from indexer.errors import IndexLockedError, StoreError


@contextlib.contextmanager
def write_lock(path: Path, wait_s: float = 0.0, poll_s: float = 0.2):
    """Hold the lock for the block; wait up to wait_s for another writer, then IndexLockedError."""
    path = Path(path)
    try:
        handle = open(path, "a+")
    except OSError as exc:
        raise StoreError(f"cannot take the write lock {path}: {exc.strerror or exc} "
                         f"(is the index folder read-only?); nothing was changed") from exc
    deadline = time.monotonic() + max(0.0, wait_s)
    try:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(path)
                    raise IndexLockedError(
                        f"another mmsearch process{holder} is writing to this index; wait for it to finish "
                        f"or pass --wait SECONDS to wait for it"
                    ) from None
                time.sleep(poll_s)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        except OSError:  # the pid is only a hint for the "locked" message; a full disk must not stop us
            pass
        yield
    finally:
        with contextlib.suppress(OSError):  # a failed flush of the pid hint must not hide the real error
            handle.close()  # closing releases the lock


def is_locked(path: Path) -> bool:
    try:
        with write_lock(path, wait_s=0):
            return False
    except IndexLockedError:
        return True


def _read_holder(path: Path) -> str:
    try:
        pid = Path(path).read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid else ""
