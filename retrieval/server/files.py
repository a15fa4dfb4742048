"""Which files the server may serve, opened once and checked as opened.

The rule (README, "Guarantees"): an item's file is served only while
- the item is in the index (files are addressed by item id only);
- its real path, every symlink resolved, lies under a folder whose latest `index` or `forget`
  was an `index` (`ServedFolders`: the indexed roots minus what was forgotten since);
- it is a regular file with an image, video or sound extension;
- it has one hard link, unless the server was started with `--allow-hard-links` (a hard link gives
  an outside file a name inside the folders, and nothing on disk tells which name is the original).

`open_resolved` walks the path from "/" one component at a time, each opened relative to the
already opened folder with O_NOFOLLOW, and resolves symlinks itself. The real path it returns is
the chain of entries it actually opened, and the descriptor it returns is what gets checked and
then served (bytes and thumbnail alike): swapping a folder for a symlink between the check and the
read cannot change what is served.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from indexer.media.audio import AUDIO_EXTENSIONS
from indexer.media.scan import image_extensions
from indexer.media.video_reader import VIDEO_EXTENSIONS
from indexer.store.library import Library
from indexer.store.records import ItemRecord
from retrieval.server.errors import FileUnavailableError, ForbiddenFileError

log = logging.getLogger(__name__)

MAX_SYMLINKS = 40  # as the kernel's own limit for one path
# O_NOFOLLOW, O_DIRECTORY and openat/fstatat/readlinkat (dir_fd): Linux, macOS, the BSDs; not Windows
SAFE_OPEN = hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd \
    and os.stat in os.supports_dir_fd and os.readlink in os.supports_dir_fd
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC | getattr(os, "O_PATH", 0)
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class ServedFolders:
    """The folders whose files may be served: real paths of index/forget events, oldest first.

    A path is served when the latest event naming it or a folder above it is an `index`: indexing a
    folder again serves what a `forget` had dropped, forgetting a subfolder stops serving it.
    """

    events: tuple[tuple[str, bool], ...] = ()  # (real path, True for index / False for forget)

    @classmethod
    def from_history(cls, history: Iterable[tuple[str, Sequence[str]]],
                     realpath: Callable[[str], str] = os.path.realpath) -> "ServedFolders":
        events = []
        for command, paths in history:
            if command not in ("index", "forget"):
                continue
            events.extend((realpath(path), command == "index") for path in paths if path)
        return cls(tuple(events))

    def covers(self, real_path: str) -> bool:
        for folder, included in reversed(self.events):
            if _is_under(real_path, folder):
                return included
        return False

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(sorted({folder for folder, included in self.events if included and self.covers(folder)}))


class OpenedFile:
    """An open, checked file: its descriptor, real path and stat. Closed by `close()` or when collected."""

    def __init__(self, fd: int, real_path: str, stat_result: os.stat_result):
        self.fd = fd
        self.real_path = real_path
        self.stat = stat_result
        self._finalizer = weakref.finalize(self, os.close, fd)

    def close(self) -> None:
        self._finalizer()

    def reader(self):
        """A binary file object over the descriptor (for Pillow); does not close it."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        return open(self.fd, "rb", closefd=False)

    @property
    def identity(self) -> tuple[int, ...]:
        """What changes when the file is replaced or edited: device, inode, size, mtime, ctime."""
        st = self.stat
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    def __enter__(self) -> "OpenedFile":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _components(path: str) -> list[str]:
    return [part for part in os.path.normpath(os.path.join(os.sep, path)).split(os.sep) if part]


def open_resolved(path: str) -> OpenedFile:
    """Open the regular file at absolute `path` without letting the kernel follow any symlink.

    Each symlink met is read (readlinkat) and the walk starts again from "/" on the path it names,
    at most MAX_SYMLINKS times. Raises FileUnavailableError (missing, not a regular file, a loop).
    """
    if not SAFE_OPEN:
        raise FileUnavailableError("serving files needs O_NOFOLLOW and openat (Linux, macOS, BSD)")
    pending = _components(path)
    hops = 0
    while True:
        restart = _walk(pending)
        if isinstance(restart, OpenedFile):
            return restart
        hops += 1
        if hops > MAX_SYMLINKS:
            raise FileUnavailableError("too many symlinks (or a folder that keeps changing) on the way to the file")
        pending = restart


def _walk(pending: list[str]) -> OpenedFile | list[str]:
    """One pass down `pending`: the opened file, or the components to walk instead (a symlink, a race)."""
    if not pending:
        raise FileUnavailableError("not a file")
    opened: list[int] = [os.open(os.sep, _DIR_FLAGS)]
    try:
        for index, name in enumerate(pending):
            folder = opened[-1]
            try:
                entry = os.stat(name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                raise FileUnavailableError("the file is missing on disk") from None
            except OSError as exc:
                raise FileUnavailableError(f"cannot reach the file: {exc.strerror or exc}") from None
            if stat.S_ISLNK(entry.st_mode):
                try:
                    target = os.readlink(name, dir_fd=folder)
                except OSError:
                    return pending  # replaced since the stat: walk again
                here = os.path.join(os.sep, *pending[:index])
                return _components(os.path.join(here, target, *pending[index + 1:]))
            last = index == len(pending) - 1
            if last and not stat.S_ISREG(entry.st_mode):
                raise FileUnavailableError("not a regular file")
            if not last and not stat.S_ISDIR(entry.st_mode):
                raise FileUnavailableError("a folder on the file's path is not a folder")
            try:
                fd = os.open(name, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=folder)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EISDIR):
                    return pending  # replaced since the stat (by a symlink, say): walk again
                raise FileUnavailableError(f"cannot open the file: {exc.strerror or exc}") from None
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (entry.st_dev, entry.st_ino):
                os.close(fd)
                return pending
            if last:
                return OpenedFile(fd, os.path.join(os.sep, *pending), now)
            opened.append(fd)
    finally:
        for fd in opened:
            os.close(fd)
    raise AssertionError("unreachable")


class FileGuard:
    """Opens an item's file under the serving rule above; see the module docstring."""

    def __init__(self, library: Library, *, allow_hard_links: bool = False):
        self.library = library
        self.allow_hard_links = allow_hard_links
        self._folders: tuple[tuple, ServedFolders] | None = None

    def served_folders(self) -> ServedFolders:
        """From the store's index/forget history; real paths resolved once per change of that history."""
        history = tuple((command, tuple(paths)) for command, paths in self.library.runs.root_history())
        if self._folders is None or self._folders[0] != history:
            self._folders = (history, ServedFolders.from_history(history))
        return self._folders[1]

    def open(self, record: ItemRecord) -> OpenedFile:
        """The item's file, open and checked; the caller closes it (or serves it, which closes it)."""
        try:
            opened = open_resolved(record.path)
        except FileUnavailableError as exc:
            raise FileUnavailableError(f"the file of item {record.id}: {exc}") from None
        try:
            self._check(record, opened)
        except BaseException:
            opened.close()
            raise
        return opened

    def _check(self, record: ItemRecord, opened: OpenedFile) -> None:
        real = opened.real_path
        if not self.served_folders().covers(real):
            log.warning("refused item %d: %s resolves to %s, outside the indexed folders", record.id, record.path, real)
            raise ForbiddenFileError(f"the file of item {record.id} now resolves outside the indexed folders")
        extension = os.path.splitext(real)[1].lower()
        if extension not in image_extensions() and extension not in VIDEO_EXTENSIONS and extension not in AUDIO_EXTENSIONS:
            log.warning("refused item %d: %s resolves to %s, not an image, video or sound file", record.id, record.path,
                        real)
            raise ForbiddenFileError(f"the file of item {record.id} no longer resolves to an image, video or sound file")
        if opened.stat.st_nlink > 1 and not self.allow_hard_links:
            log.warning("refused item %d: %s has %d hard links", record.id, real, opened.stat.st_nlink)
            raise ForbiddenFileError(f"the file of item {record.id} has {opened.stat.st_nlink} hard links; "
                                     "start the server with --allow-hard-links to serve such files")
