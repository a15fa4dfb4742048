"""Walk folders for media files: recursive, excludes, hidden files, symlinks without loops."""
from __future__ import annotations

import fnmatch
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})


def image_extensions() -> frozenset[str]:
    """Extensions indexed: HEIC/HEIF too when pillow-heif is installed."""
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return IMAGE_EXTENSIONS
    return IMAGE_EXTENSIONS | HEIF_EXTENSIONS


@dataclass(frozen=True)
class FoundFile:
    path: str  # absolute, as walked (symlinked folders keep their link path)
    size: int
    mtime: float


@dataclass(frozen=True)
class ScanOptions:
    extensions: frozenset[str] = IMAGE_EXTENSIONS
    exclude: tuple[str, ...] = ()
    include_hidden: bool = False
    follow_symlinks: bool = True


def _excluded(path: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(path, pattern) for pattern in patterns)


def walk(root: str | Path, options: ScanOptions = ScanOptions(),
         on_skip: Callable[[str, str], None] | None = None) -> Iterator[FoundFile]:
    """Yield media files under root (or root itself if it is a file), depth first, sorted by name.

    A folder reached twice through symlinks (a loop, or two links to one place) is walked once.
    Unreadable folders, symlink loops, dangling links and special files (FIFOs, devices) named
    like images cost an `on_skip(path, reason)` call, never the walk.
    """
    root = os.path.abspath(os.path.expanduser(str(root)))
    if os.path.isfile(root):
        found = _found(root, on_skip)
        if found is not None and os.path.splitext(root)[1].lower() in options.extensions:
            yield found
        return
    visited: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            folder_stat = os.stat(folder)
        except OSError as exc:
            _skip(on_skip, folder, exc.strerror or str(exc))
            continue
        key = (folder_stat.st_dev, folder_stat.st_ino)
        if key in visited:
            continue
        visited.add(key)
        try:
            with os.scandir(folder) as entries:
                entries = sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            _skip(on_skip, folder, exc.strerror or str(exc))
            continue
        subfolders = []
        for entry in entries:
            if not options.include_hidden and entry.name.startswith("."):
                continue
            if options.exclude and _excluded(entry.path, entry.name, options.exclude):
                continue
            extension = os.path.splitext(entry.name)[1].lower()
            try:
                is_dir = entry.is_dir(follow_symlinks=options.follow_symlinks)
                is_file = not is_dir and entry.is_file(follow_symlinks=options.follow_symlinks)
            except OSError as exc:  # a symlink loop, a name too long to stat, a permission problem
                if extension in options.extensions or not extension:
                    _skip(on_skip, entry.path, exc.strerror or str(exc))
                continue
            if is_dir:
                subfolders.append(entry.path)
            elif extension in options.extensions:
                if is_file:
                    found = _found(entry.path, on_skip)
                    if found is not None:
                        yield found
                elif entry.is_symlink() and not os.path.exists(entry.path):
                    _skip(on_skip, entry.path, "broken symbolic link")
                else:
                    _skip(on_skip, entry.path, f"not a regular file ({_kind(entry.path)})")
        stack.extend(reversed(subfolders))


def _kind(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return exc.strerror or str(exc)
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def _found(path: str, on_skip) -> FoundFile | None:
    try:
        stat_result = os.stat(path)
    except OSError as exc:  # vanished or a dangling link
        _skip(on_skip, path, exc.strerror or str(exc))
        return None
    if not stat.S_ISREG(stat_result.st_mode):
        _skip(on_skip, path, "not a regular file")
        return None
    return FoundFile(path, stat_result.st_size, stat_result.st_mtime)


def _skip(on_skip, path: str, reason: str) -> None:
    log.info("skipping %s: %s", path, reason)
    if on_skip is not None:
        on_skip(path, reason)
