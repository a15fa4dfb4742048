"""A video hit's frame for `search --json`: a small JPEG, inline, so the JSON stands on its own.

`thumbnail` is a `data:image/jpeg;base64,...` URI of the frame at the hit's `time`, its longest side
THUMBNAIL_SIZE pixels (about 3-6 kB): a page or script shows it without a server or a cache folder
(the web server's API gives a URL instead: /api/items/N/thumb?t=...). It is None when the file can
no longer be decoded (moved, changed, deleted since it was indexed). Pictures get none: their path
is their picture.
"""
from __future__ import annotations

import base64
import io
import logging

from indexer.errors import DecodeError
from indexer.media.video_reader import VIDEO
from retrieval.query.search import Hit

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 128
JPEG_QUALITY = 80


def frame_thumbnail(path: str, seconds: float, size: int = THUMBNAIL_SIZE) -> str | None:
    """The frame at `seconds` of the video at `path` as a JPEG data URI; None when it cannot be decoded."""
    from indexer.media.video_frames import frame_at

    try:
        picture = frame_at(path, seconds, size)
    except (DecodeError, OSError) as exc:
        log.info("no thumbnail for %s @ %.3f s: %s", path, seconds, exc)
        return None
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def hit_json(hit: Hit, thumbnails: bool = True) -> dict:
    """`Hit.as_dict()`, plus a video's `thumbnail` (the frame at `time`) when `thumbnails`."""
    out = hit.as_dict()
    if thumbnails and hit.modality == VIDEO and hit.time is not None:
        out["thumbnail"] = frame_thumbnail(hit.path, hit.time)
    return out
