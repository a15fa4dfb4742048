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
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileGoneError("file vanished before it could be read") from None
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise DecodeError(f"not a regular file ({_file_kind(before.st_mode)})")
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


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"
