"""One frame of a video, at a moment: what a result's thumbnail shows (the web UI, `search --json`).

The moments `video_reader` stores are frames' own times, so seeking to the keyframe at or before a
moment and decoding forward to the first frame at that time finds the very frame that was embedded.
The decode is bounded (`max_frames` after the keyframe: encoders that put keyframes far apart cost
at most that many frames), the frame is scaled in FFmpeg to fit the requested box, and rotation
metadata is applied as the reader applies it.
"""
from __future__ import annotations

import logging
from typing import BinaryIO

from PIL import Image

from indexer.errors import DecodeError
from indexer.media.video_reader import VideoReadOptions, _pyav, _reason, _seconds, open_container

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAMES = 600  # frames decoded after the keyframe, at most (20 s at 30 fps)
MAX_MEGAPIXELS = VideoReadOptions().max_megapixels  # what the reader embeds, a thumbnail shows
TIME_SLACK_S = 0.002  # moments are stored rounded to the millisecond


def frame_at(source: str | BinaryIO, seconds: float, box: int, *, max_frames: int = DEFAULT_MAX_FRAMES) -> Image.Image:
    """The frame shown at `seconds` (or the last one decodable before it), as an RGB picture that fits
    `box` x `box`, rotated as the video says it is shown. `source`: a path or a binary file object.
    Raises DecodeError for a file without a decodable video stream."""
    av = _pyav()
    if not seconds >= 0:  # also refuses NaN
        raise DecodeError(f"no moment at {seconds} s")
    container = open_container(source)
    try:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width <= 0 or height <= 0 or width * height / 1e6 > MAX_MEGAPIXELS:
            raise DecodeError(f"the video's frames ({width}x{height}) are not a picture this can show")
        stream.thread_type = "AUTO"
        frame = _decode_to(container, stream, seconds, max_frames)
        if frame is None:
            raise DecodeError(f"no frame of the video decodes at {seconds:g} s")
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        scale = min(1.0, box / max(frame.width, frame.height))
        image = frame.to_image(width=max(1, round(frame.width * scale)), height=max(1, round(frame.height * scale)))
    except av.FFmpegError as exc:
        raise DecodeError(f"cannot decode the video ({_reason(exc)})") from None
    finally:
        container.close()
    return image.rotate(rotation, expand=True) if rotation else image  # counter-clockwise, as in video_reader


def _decode_to(container, stream, seconds: float, max_frames: int):
    """The first frame at or after `seconds` (after seeking back to a keyframe), else the last one decoded."""
    av = _pyav()
    target = (stream.start_time or 0) + int(seconds / stream.time_base) if stream.time_base else 0
    try:
        container.seek(max(0, target), stream=stream, backward=True, any_frame=False)
    except av.FFmpegError as exc:  # not seekable (a damaged index): decode from the start instead
        log.debug("seek to %.3f s failed (%s); decoding from the start", seconds, exc)
        container.seek(0)
    chosen = None
    decoded = 0
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            if chosen is not None and _seconds(frame.pts, stream) > seconds + TIME_SLACK_S:
                break  # past the moment: the frame before it is the one shown then
            chosen = frame
            decoded += 1
            if _seconds(frame.pts, stream) >= seconds - TIME_SLACK_S or decoded >= max_frames:
                break
    except av.FFmpegError as exc:  # a truncated file's last packets: keep what decoded
        log.debug("decoding stopped at a broken packet: %s", exc)
    return chosen
