"""Walk folders for media files: recursive, excludes, hidden files, symlinks without loops."""
from __future__ import annotations

import fnmatch
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

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


class FoundFile(NamedTuple):
    """One media file found by the walk. A tuple, not a frozen dataclass: a re-run over a million
    unchanged files makes a million of them, and a frozen dataclass's __init__ costs 3x as much."""

    path: str  # absolute, as walked (symlinked folders keep their link path)
    size: int
    mtime: float


@dataclass(frozen=True)
class ScanOptions:
    extensions: frozenset[str] = IMAGE_EXTENSIONS
    exclude: tuple[str, ...] = ()
    include_hidden: bool = False
    follow_symlinks: bool = True
    follow_outside: bool = False  # follow symbolic links whose target lies outside the walked root


def _excluded(path: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(path, pattern) for pattern in patterns)


def walk(root: str | Path, options: ScanOptions = ScanOptions(),
         on_skip: Callable[[str, str], None] | None = None) -> Iterator[FoundFile]:
    """Yield media files under root (or root itself if it is a file), depth first, sorted by name.

    A folder reached twice through symlinks (a loop, or two links to one place) is walked once.
    A symbolic link whose target lies outside `root` (`ln -s .. loop`, a link to another disk) is
    not followed, and costs one `on_skip` call, unless `options.follow_outside`.
    Unreadable folders, symlink loops, dangling links and special files (FIFOs, devices) named
    like images cost an `on_skip(path, reason)` call, never the walk.

    Each folder is opened once and its entries listed and stat()ed relative to it (scandir and
    fstatat on the folder's descriptor: the kernel resolves one name, not the whole path, per
    file); entries whose name is not a media file are passed over before anything else is asked.
    """
    root = os.path.abspath(os.path.expanduser(str(root)))
    if os.path.isfile(root):
        found = _found(root, on_skip)
        if found is not None and os.path.splitext(root)[1].lower() in options.extensions:
            yield found
        return
    extensions, exclude, hidden, follow = options.extensions, options.exclude, options.include_hidden, \
        options.follow_symlinks
    visited: set[tuple[int, int]] = set()
    stack = [root]
    inside = None if options.follow_outside or not follow else os.path.realpath(root)
    while stack:
        folder = stack.pop()
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            _skip(on_skip, folder, exc.strerror or str(exc))
            continue
        try:
            folder_stat = os.fstat(fd)
            key = (folder_stat.st_dev, folder_stat.st_ino)
            if key in visited:
                continue
            visited.add(key)
            try:
                with os.scandir(fd) as listing:
                    entries = sorted(listing, key=_name)
            except OSError as exc:
                _skip(on_skip, folder, exc.strerror or str(exc))
                continue
            prefix = folder if folder.endswith(os.sep) else folder + os.sep
            subfolders = []
            for entry in entries:
                name = entry.name
                if not hidden and name.startswith("."):
                    continue
                if exclude and _excluded(prefix + name, name, exclude):
                    continue
                dot = name.rfind(".")
                extension = name[dot:].lower() if dot > 0 else ""
                media = extension in extensions
                if not media and extension:  # notes.txt, IMG_1.xmp: neither a folder to enter nor a file to index
                    if not _maybe_folder(entry, follow):
                        continue
                if inside is not None and entry.is_symlink() and not _leads_inside(prefix + name, inside):
                    _skip(on_skip, prefix + name, "symbolic link that leads outside the indexed folder (not "
                                                  "followed; --follow-outside follows it)")
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=follow)
                    is_file = not is_dir and media and entry.is_file(follow_symlinks=follow)
                except OSError as exc:  # a symlink loop, a name too long to stat, a permission problem
                    if media or not extension:
                        _skip(on_skip, prefix + name, exc.strerror or str(exc))
                    continue
                if is_dir:
                    subfolders.append(prefix + name)
                elif media:
                    path = prefix + name
                    if is_file:
                        try:
                            stat_result = entry.stat()  # fstatat on the folder's descriptor, links followed
                        except OSError as exc:  # vanished since the listing
                            _skip(on_skip, path, exc.strerror or str(exc))
                            continue
                        if stat.S_ISREG(stat_result.st_mode):
                            yield FoundFile(path, stat_result.st_size, stat_result.st_mtime)
                        else:
                            _skip(on_skip, path, "not a regular file")
                    elif entry.is_symlink() and not os.path.exists(path):
                        _skip(on_skip, path, "broken symbolic link")
                    else:
                        _skip(on_skip, path, f"not a regular file ({_kind(path)})")
        finally:
            os.close(fd)
        stack.extend(reversed(subfolders))


def _leads_inside(link: str, inside: str) -> bool:
    target = os.path.realpath(link)
    return target == inside or target.startswith(inside if inside.endswith(os.sep) else inside + os.sep)


def _name(entry: os.DirEntry) -> str:
    return entry.name


def _maybe_folder(entry: os.DirEntry, follow: bool) -> bool:
    """Whether an entry with a non-media extension may be a folder (a folder named `2024.trip`):
    known from the listing's file type for everything but symlinks and unknown types."""
    try:
        return entry.is_dir(follow_symlinks=follow)
    except OSError:
        return False


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
