"""Exact vectors beside an on-disk index, for re-ranking: float16 rows in item id order, read with pread.

A segment is three files written once: `S.exact` (rows), `S.ids.npy` (their item ids, ascending)
and `S.fences.npy` (every ID_BLOCK-th id, loaded whole). Nothing is memory-mapped, so searching does
not grow the process's resident memory towards the files' size (the OS page cache holds what it
can), and the reads a search needs are announced to the kernel together first (posix_fadvise
WILLNEED), so cold reads go to the disk in one round, not one after another.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from indexer.errors import StoreError

EXACT_DTYPE = np.float16
ID_BLOCK = 1024  # exact segments: one id in this many is kept in memory to find the block of the rest


class ExactSegment:
    """Exact vectors of ascending item ids, read with pread: nothing of the files is mapped, so a
    search does not grow the process's resident memory, and every read it needs is announced to the
    kernel first (posix_fadvise WILLNEED), so cold reads go to the disk together, not one by one.

    Ids are found through fences (every ID_BLOCK-th id, in memory: 8 MB per billion vectors), then
    the one block of ids each falls in."""

    def __init__(self, folder: Path, ids_name: str, rows_name: str, dim: int, dead: np.ndarray | None = None):
        self.ids_name, self.rows_name, self.dim = ids_name, rows_name, dim
        # ids removed from the lists after this segment was written (a newer segment may hold them again)
        self.dead = dead if dead is not None else np.zeros(0, np.int64)
        mapped = np.load(folder / ids_name, mmap_mode="r")  # for the header only: no page of it is read
        self.ids_offset, self.count = mapped.offset, len(mapped)
        del mapped
        self.fences = np.load(folder / fences_name(ids_name))
        if len(self.fences) != -(-self.count // ID_BLOCK):
            raise StoreError(f"{folder / fences_name(ids_name)} does not match {ids_name}")
        self.row_bytes = dim * np.dtype(EXACT_DTYPE).itemsize
        self.ids_fd = self.fd = -1
        self.ids_fd = os.open(folder / ids_name, os.O_RDONLY)
        self.fd = os.open(folder / rows_name, os.O_RDONLY)
        size = os.fstat(self.fd).st_size
        if size != self.count * self.row_bytes:
            self.close()
            raise StoreError(f"{folder / rows_name} holds {size} bytes, not {self.count} rows of {dim}")

    def close(self) -> None:
        """Close the files (once: a descriptor number closed twice may by then name another file)."""
        for name in ("fd", "ids_fd"):
            fd = getattr(self, name, -1)
            setattr(self, name, -1)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def find(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, row numbers of the found) for ascending item_ids; dead rows are not found."""
        if not self.count or not len(item_ids):
            return np.zeros(len(item_ids), bool), np.zeros(0, np.int64)
        blocks = np.maximum(np.searchsorted(self.fences, item_ids, side="right") - 1, 0)
        wanted = np.unique(blocks)
        starts = wanted * ID_BLOCK
        stops = np.minimum(self.count, starts + ID_BLOCK)
        spans = [(self.ids_offset + int(start) * 8, int(stop - start) * 8) for start, stop in zip(starts, stops)]
        announce(self.ids_fd, spans)
        # the blocks, in order, are one ascending run of ids: one binary search over all of them
        ids = np.frombuffer(b"".join(os.pread(self.ids_fd, length, offset) for offset, length in spans), dtype=np.int64)
        at = np.minimum(np.searchsorted(ids, item_ids), len(ids) - 1)
        found = ids[at] == item_ids
        # position in the joined blocks -> row of the segment
        block_of = np.searchsorted(np.cumsum(stops - starts), at, side="right")
        rows = starts[block_of] + at - np.concatenate([[0], np.cumsum(stops - starts)])[block_of]
        if len(self.dead):
            found &= ~np.isin(item_ids, self.dead)
        return found, rows[found]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), dim] for ascending rows; neighbouring rows are read in one call."""
        out = bytearray(len(rows) * self.row_bytes)
        view = memoryview(out)
        if len(rows):
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            starts = np.concatenate([[0], breaks]).tolist()
            stops = np.concatenate([breaks, [len(rows)]]).tolist()
            announce(self.fd, [(int(rows[start]) * self.row_bytes, (stop - start) * self.row_bytes)
                                for start, stop in zip(starts, stops)])
            for start, stop in zip(starts, stops):
                size = (stop - start) * self.row_bytes
                data = os.pread(self.fd, size, int(rows[start]) * self.row_bytes)
                if len(data) != size:
                    raise StoreError(f"{self.rows_name} is shorter than its ids say")
                view[start * self.row_bytes:stop * self.row_bytes] = data
        return np.frombuffer(out, dtype=EXACT_DTYPE).reshape(len(rows), self.dim).astype(np.float32)


class ExactWriter:
    """Writes one exact segment: ids ascending, float16 rows appended as they come."""

    def __init__(self, folder: Path, stem: str, dim: int):
        self.folder, self.dim = folder, dim
        self.ids_name, self.rows_name = f"{stem}.ids.npy", f"{stem}.exact"
        self.handle = open(folder / self.rows_name, "wb")
        self.parts: list[np.ndarray] = []
        self.last = -1

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids[0] <= self.last or (len(ids) > 1 and np.any(np.diff(ids) <= 0))):
            raise ValueError("vectors must come in ascending item id order (as MetaStore.iter_vectors gives them)")
        if len(ids):
            self.last = int(ids[-1])
            self.parts.append(ids)
            self.handle.write(np.ascontiguousarray(vectors, dtype=EXACT_DTYPE).tobytes())

    def finish(self) -> tuple[str, str]:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        ids = np.concatenate(self.parts) if self.parts else np.zeros(0, np.int64)
        for name, array in ((self.ids_name, ids), (fences_name(self.ids_name), ids[::ID_BLOCK])):
            with open(self.folder / name, "wb") as handle:
                np.save(handle, array)
                handle.flush()
                os.fsync(handle.fileno())
        return self.ids_name, self.rows_name

    def abandon(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()


def fences_name(ids_name: str) -> str:
    """S.ids.npy -> S.fences.npy: every ID_BLOCK-th id of the segment, loaded whole."""
    return ids_name[: -len(".ids.npy")] + ".fences.npy"


def announce(fd: int, spans) -> None:
    """Ask the kernel to start reading these (offset, length) spans now (readahead, asynchronous):
    the preads that follow then wait for one round of disk reads, not one per span. Nothing
    happens for pages already cached but a system call each."""
    if len(spans) < 2 or not hasattr(os, "posix_fadvise"):
        return
    for offset, length in spans:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
