"""Thumbnails made once per (item, size) and kept on disk: <db>/thumbs/<id>-<size>.jpg.

A thumbnail is remade when the item was re-indexed after it was written (its `indexed_at` is
newer than the file), so an edited photo gets a fresh one. Writes go to a temp file and
`os.replace`, so concurrent requests for one thumbnail never see half a JPEG.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from PIL import Image, ImageOps

from indexer.media.image import DEFAULT_MAX_MEGAPIXELS
from indexer.store.records import ItemRecord
from retrieval.server.errors import FileUnavailableError

log = logging.getLogger(__name__)

THUMB_SIZES = (128, 256, 512)
DEFAULT_THUMB_SIZE = 256
JPEG_QUALITY = 82


class ThumbnailCache:
    def __init__(self, folder: Path, sizes: tuple[int, ...] = THUMB_SIZES):
        self.folder = Path(folder)
        self.sizes = sizes
        self.made = 0

    def path_for(self, item_id: int, size: int) -> Path:
        return self.folder / f"{item_id}-{size}.jpg"

    def get(self, record: ItemRecord, source: str, size: int) -> Path:
        """The thumbnail of `record` (whose checked file is `source`), made now if missing or stale."""
        if size not in self.sizes:
            raise ValueError(f"thumbnail size {size} is not one of {self.sizes}")
        target = self.path_for(record.id, size)
        try:
            if target.stat().st_mtime >= record.indexed_at:
                return target
        except FileNotFoundError:
            pass
        self._make(source, target, size)
        self.made += 1
        return target

    def _make(self, source: str, target: Path, size: int) -> None:
        try:
            with Image.open(source) as image:
                if image.width * image.height > DEFAULT_MAX_MEGAPIXELS * 1e6:
                    raise FileUnavailableError(f"{image.width}x{image.height} is too large for a thumbnail")
                if image.format == "JPEG":
                    image.draft("RGB", (size * 2, size * 2))
                if getattr(image, "is_animated", False):
                    image.seek(0)
                picture = ImageOps.exif_transpose(image).convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise FileUnavailableError(f"cannot make a thumbnail: {exc}") from None
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            picture.save(tmp, "JPEG", quality=JPEG_QUALITY, optimize=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        log.debug("thumbnail %s made", target)
