"""Thumbnails made once per (item, size, file) and kept on disk: <db>/thumbs/<id>-<size>-<file key>.jpg.

A thumbnail is made only from a file `FileGuard` opened and checked, read through that open
descriptor, and it is named by that file's identity (device, inode, size, mtime, ctime): a request
finds a cached thumbnail only after its own check of the file passed, and only the thumbnail of
the file it checked. A replaced or edited file gets a fresh one (the old one is removed), and so
does an item re-indexed after its thumbnail was written. Writes go to a temp file and `os.replace`,
so concurrent requests for one thumbnail never see half a JPEG; at most `makers` are made at once.
A picture with transparency is composited over a light neutral background (a JPEG has no alpha, and
dropping it showed transparent PNGs on black); THUMB_FORMAT in the file key retires older thumbnails.
A video's thumbnail is the frame at one of its moments (`get(..., at=seconds)`), decoded with PyAV
(`indexer.media.video_frames`) and named <id>-<size>-<file key>-t<milliseconds>.jpg. A sound's is
its waveform (retrieval.server.waveform), one per file.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from pathlib import Path

from PIL import Image, ImageOps

from indexer.errors import DecodeError
from indexer.media.audio_reader import AUDIO
from indexer.media.image import DEFAULT_MAX_MEGAPIXELS
from indexer.store.records import ItemRecord
from retrieval.server.errors import FileUnavailableError
from retrieval.server.files import OpenedFile

log = logging.getLogger(__name__)

THUMB_SIZES = (128, 256, 512)
DEFAULT_THUMB_SIZE = 256
JPEG_QUALITY = 82
DEFAULT_MAKERS = 2  # thumbnails decoded at once: each can hold a whole decoded picture
THUMB_FORMAT = 2  # bump when thumbnails are made differently: 2 = transparency over BACKGROUND, not black
BACKGROUND = (242, 242, 240)  # what transparent pixels show in a thumbnail: light and neutral


def file_key(opened: OpenedFile) -> str:
    return hashlib.blake2b(repr((THUMB_FORMAT, opened.identity)).encode(), digest_size=8).hexdigest()


def has_alpha(image: Image.Image) -> bool:
    """An alpha channel, or a transparent colour (tRNS, GIF) in a mode that converts to RGBA."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or \
        (image.mode in ("1", "L", "P", "RGB") and "transparency" in image.info)


def flatten(picture: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """An RGB picture: one with transparency composited over `background`, any other converted."""
    if not has_alpha(picture):
        return picture.convert("RGB")
    rgba = picture.convert("RGBA")
    flat = Image.new("RGB", rgba.size, background)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


class ThumbnailCache:
    def __init__(self, folder: Path, sizes: tuple[int, ...] = THUMB_SIZES, makers: int = DEFAULT_MAKERS):
        self.folder = Path(folder)
        self.sizes = sizes
        self.made = 0
        self._makers = threading.BoundedSemaphore(makers)

    def path_for(self, item_id: int, size: int, opened: OpenedFile, at: float | None = None) -> Path:
        moment = "" if at is None else f"-t{round(at * 1000)}"
        return self.folder / f"{item_id}-{size}-{file_key(opened)}{moment}.jpg"

    def get(self, record: ItemRecord, opened: OpenedFile, size: int, at: float | None = None) -> Path:
        """The thumbnail of `record`'s checked, open file `opened` (for a video: its frame at `at`
        seconds), made now if missing or stale."""
        if size not in self.sizes:
            raise ValueError(f"thumbnail size {size} is not one of {self.sizes}")
        target = self.path_for(record.id, size, opened, at)
        try:
            if target.stat().st_mtime >= record.indexed_at:
                return target
        except FileNotFoundError:
            pass
        with self._makers:
            if record.modality == AUDIO:
                self._save(self._waveform(opened, size), target)
            elif at is None:
                self._save(self._picture(opened, size), target)
            else:
                self._save(self._frame(opened, size, at), target)
        self.made += 1
        self._remove_others(record.id, size, keep=target)
        return target

    def _frame(self, opened: OpenedFile, size: int, at: float) -> Image.Image:
        from indexer.media.video_frames import frame_at

        try:
            with opened.reader() as handle:
                return frame_at(handle, at, size)
        except (DecodeError, OSError) as exc:
            raise FileUnavailableError(f"cannot make a thumbnail: {exc}") from None

    def _waveform(self, opened: OpenedFile, size: int) -> Image.Image:
        from retrieval.server.waveform import waveform_of

        try:
            with opened.reader() as handle:
                return waveform_of(handle, size)
        except (DecodeError, OSError) as exc:
            raise FileUnavailableError(f"cannot make a thumbnail: {exc}") from None

    def _picture(self, opened: OpenedFile, size: int) -> Image.Image:
        try:
            with opened.reader() as handle, Image.open(handle) as image:
                if image.width * image.height > DEFAULT_MAX_MEGAPIXELS * 1e6:
                    raise FileUnavailableError(f"{image.width}x{image.height} is too large for a thumbnail")
                if image.format == "JPEG":
                    image.draft("RGB", (size * 2, size * 2))
                if getattr(image, "is_animated", False):
                    image.seek(0)
                picture = flatten(ImageOps.exif_transpose(image))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise FileUnavailableError(f"cannot make a thumbnail: {exc}") from None
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
        return picture

    def _save(self, picture: Image.Image, target: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            picture.save(tmp, "JPEG", quality=JPEG_QUALITY, optimize=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        log.debug("thumbnail %s made", target)

    def _remove_others(self, item_id: int, size: int, keep: Path) -> None:
        """Thumbnails of the item's earlier files (and of the older <id>-<size>.jpg naming); a video's
        other moments of the same file stay."""
        same_file = keep.name.split("-t")[0] + "-t" if "-t" in keep.name else None
        for path in [self.folder / f"{item_id}-{size}.jpg", *self.folder.glob(f"{item_id}-{size}-*.jpg")]:
            if path != keep and not (same_file and path.name.startswith(same_file)):
                path.unlink(missing_ok=True)
