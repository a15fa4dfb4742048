"""Reading a media file's bytes safely, and the content hash that recognises renamed and copied files."""
from __future__ import annotations

import hashlib
import os
import stat

from indexer.errors import DecodeError


class FileGoneError(DecodeError):
    """The file vanished between the scan and the read."""


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_file(path: str) -> bytes:
    return read_file_checked(path)[0]


def read_file_checked(path: str) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file and its stat taken after the read (what the bytes belong to).

    Opened non-blocking, so a FIFO or device named like an image is refused instead of hanging.
    """
    fd = _open_regular(path)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        after = os.fstat(fd)
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if not data:
        raise DecodeError("empty file (0 bytes)")
    return data, after


SAMPLE_BLOCKS = 16  # blocks of a large file read for its sampled hash
SAMPLE_BLOCK = 1 << 16
SAMPLE_WHOLE_BELOW = 4 << 20  # files smaller than this are hashed whole


def sample_file_checked(path: str) -> tuple[str, os.stat_result]:
    """A content hash of a large file without reading all of it, and its stat: the size plus 16
    blocks of 64 KB spread evenly from its first to its last byte (files under 4 MB whole).

    For sounds and videos, which their readers stream from the path: a renamed or copied 4 GB video
    is recognised after reading 1 MB, not 4 GB (the reader reads it once more only when it is new).
    Two files that differ only between the sampled blocks and have the same size would be taken for
    copies: edits that keep a media file's size to the byte are that rare. Refuses what
    read_file_checked refuses (FIFOs, devices, vanished and empty files).
    """
    fd = _open_regular(path)
    try:
        info = os.fstat(fd)
        if info.st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"sampled:{info.st_size}:".encode())
        if info.st_size < SAMPLE_WHOLE_BELOW:
            while chunk := os.read(fd, 1 << 20):
                digest.update(chunk)
        else:
            last = info.st_size - SAMPLE_BLOCK
            for number in range(SAMPLE_BLOCKS):
                digest.update(os.pread(fd, SAMPLE_BLOCK, last * number // (SAMPLE_BLOCKS - 1)))
        info = os.fstat(fd)
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return digest.hexdigest(), info



def _open_regular(path: str) -> int:
    """A descriptor of the regular file at `path`, opened non-blocking (a FIFO or a device named like
    a media file is refused instead of hanging); FileGoneError when it vanished, DecodeError else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileGoneError("file vanished before it could be read") from None
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DecodeError(f"not a regular file ({_file_kind(mode)})")
    return fd

def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"
