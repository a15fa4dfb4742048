"""Videos as the pipeline sees them: the moments worth a vector, each frame embedded by the image tower.

One pass over the file's packets, decoding only what is needed (PyAV, FFmpeg inside its wheel).
What is decoded is `VideoReadOptions.frames`:
- "keyframes" (the default): keyframe packets only are decoded (cheap: no reference frames
  needed), the others are never handed to the decoder. Encoders place keyframes at scene cuts
  (x264) or every second or two (phones, cameras): a shot that starts without one is found only
  from its next keyframe, or not at all when it ends first. (Handing the decoder every packet with
  `skip_frame="NONINTRA"` would also catch x264's non-IDR I-frames at cuts less than keyint_min
  after a keyframe, but halved the decode speed of 1080p H.264 here: docs/BENCHMARKS.md.)
- "dense": as keyframes while they come at least every `max_gap_s`; where the gap grows longer, the
  packets since the last keyframe, kept compressed, are decoded after all (B-frames skipped), and a
  frame is taken where the picture changes (a scene cut, measured on 32x18 grey thumbnails) or
  `max_gap_s` passed. Every shot is found, at the cost of decoding most of a long-GOP video
  (1080p H.264 with x264's 250-frame GOPs: ~10x slower; docs/BENCHMARKS.md).
In both, a frame hardly different from the last one taken is dropped unless `still_gap_s` passed,
so a static shot costs a vector every 10 s, not every second.
A moment is a frame's time (the stream's own timestamps: variable frame rates are fine), its
pixels scaled in FFmpeg straight to the image tower's input size and cropped, as uint8 (a quarter
of float32's memory; normalised by the encoder). A video never holds more than `max_moments` of
them, spread over its length: moments (scene cuts too) are at least duration / max_moments apart,
so a 4K hour costs the same bounded memory as a clip. Rotation metadata is applied. The soundtrack,
where the run has an audio tower (`soundtrack`: the run's audio reader), is cut into that reader's
windows and embedded beside the frames, each window a moment of the video in the audio tower's
space; a soundtrack that cannot be decoded costs its windows, never the frames.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable

import numpy as np

from indexer.errors import DecodeError, MmsearchError
from indexer.media.kinds import DecodedItem, Segment
from indexer.media.preprocess import PreprocessConfig, resize_for_model
from indexer.store.records import IMAGE

log = logging.getLogger(__name__)

VIDEO = "video"
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})
THUMB = (32, 18)
FRAME_MODES = ("keyframes", "dense")


@dataclass(frozen=True)
class VideoReadOptions:
    max_gap_s: float = 1.0  # a moment at least this often while the picture changes
    still_gap_s: float = 10.0  # ... and at least this often while it does not
    scene_change: float = 10.0  # mean absolute difference of grey thumbnails (0-255) that is a new shot
    same_picture: float = 2.0  # below this a frame repeats the last moment
    max_moments: int = 600  # per video; longer videos get wider spacing
    max_megapixels: float = 40.0  # frames larger than this (8K is 33 MP) are refused
    frames: str = "keyframes"  # keyframes | dense: which frames are decoded (the module docstring)

    def __post_init__(self):
        check_frames(self.frames)


class VideoFramesError(MmsearchError, ValueError):
    """--video-frames names no mode."""


def check_frames(mode: str) -> str:
    if mode not in FRAME_MODES:
        raise VideoFramesError(f"video frames {mode!r}: choose one of {', '.join(FRAME_MODES)}")
    return mode


def open_container(source):
    """PyAV's container for a path or a binary file object; DecodeError when FFmpeg cannot read it."""
    av = _pyav()
    try:
        return av.open(source, metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(f"not a video FFmpeg can read ({_reason(exc)})") from None


def _pyav():
    try:
        import av
    except ImportError as exc:  # the reader is only made where av imports (retrieval.media)
        raise DecodeError("reading videos needs PyAV: pip install 'mmsearch[video]'") from exc
    return av


def available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


class VideoReader:
    modality = VIDEO
    extensions = VIDEO_EXTENSIONS
    defers = False
    streams = True  # read from the path, hashed by samples: a video is never read whole into memory

    def __init__(self, preprocess: PreprocessConfig, options: VideoReadOptions = VideoReadOptions(),
                 frames_by_root: tuple[tuple[str, str], ...] = (), soundtrack=None):
        self.preprocess = preprocess
        self.options = options
        self.soundtrack = soundtrack  # a Reader of sounds (indexer.media.audio_reader.AudioReader) or None
        # the deepest folder first: a video is read as the innermost folder holding it asked
        self.by_root = tuple((root.rstrip(os.sep) + os.sep, replace(options, frames=check_frames(frames)))
                             for root, frames in sorted(frames_by_root, key=lambda item: -len(item[0])))

    @property
    def encoders(self) -> tuple[str, ...]:
        """The encoders its segments go to: the image tower, and the audio tower with a soundtrack reader."""
        return (IMAGE,) + (tuple(self.soundtrack.encoders) if self.soundtrack is not None else ())

    def options_for(self, path: str) -> VideoReadOptions:
        """The options a video at `path` is read with: its folder's --video-frames, else the reader's."""
        for folder, options in self.by_root:
            if path.startswith(folder) or path + os.sep == folder:
                return options
        return self.options

    def read(self, data: bytes, busy: Callable[[], bool]) -> DecodedItem:
        raise DecodeError("videos are read from their path")

    def read_path(self, path: str, busy: Callable[[], bool]) -> DecodedItem:
        av = _pyav()
        container = open_container(path)
        try:
            if not container.streams.video:
                raise DecodeError("no video stream (a sound file named like a video?)")
            item = self._read(container, container.streams.video[0], path, self.options_for(path))
            has_sound = bool(container.streams.audio)
        except av.FFmpegError as exc:
            raise DecodeError(f"cannot decode the video ({_reason(exc)})") from None
        finally:
            container.close()
        if self.soundtrack is not None and has_sound:
            item.segments.extend(self._soundtrack(path, busy))
        return item

    def _soundtrack(self, path: str, busy: Callable[[], bool]) -> list[Segment]:
        try:
            return self.soundtrack.read_path(path, busy).segments
        except DecodeError as exc:
            log.info("%s: its soundtrack is left out (%s)", path, exc)
            return []

    def _read(self, container, stream, path: str, options: VideoReadOptions) -> DecodedItem:
        context = stream.codec_context
        width, height = int(context.width or 0), int(context.height or 0)
        if width <= 0 or height <= 0:
            raise DecodeError(f"the video stream has no picture size ({width}x{height})")
        if width * height / 1e6 > options.max_megapixels:
            raise DecodeError(f"video frames are {width * height / 1e6:.0f} megapixels, over the "
                              f"{options.max_megapixels:g} MP limit")
        duration = _duration(container, stream)
        spacing = max(options.max_gap_s, (duration or 0.0) / max(1, options.max_moments))
        still = max(options.still_gap_s, spacing)
        stream.thread_type = "AUTO"
        picker = _MomentPicker(spacing, still, options.scene_change, options.same_picture, options.max_moments,
                               shortest=(duration or 0.0) / max(1, options.max_moments))
        if options.frames == "keyframes":
            self._intra_frames(container, stream, picker)
        else:
            self._dense_frames(container, stream, picker)
        if not picker.moments:
            raise DecodeError("no frame of the video could be decoded")
        rotation = picker.rotation
        shown = (height, width) if rotation in (90, 270) else (width, height)
        segments = [Segment(IMAGE, start, pixels) for start, pixels in picker.moments]
        return DecodedItem(segments, shown[0], shown[1], _format(path, stream), _created(container),
                           duration_s=duration)

    def _intra_frames(self, container, stream, picker: "_MomentPicker") -> None:
        """Keyframes only: their packets alone go to the decoder (one that still meets another frame
        skips it: skip_frame="NONKEY")."""
        stream.codec_context.skip_frame = "NONKEY"
        for packet in container.demux(stream):
            if packet.is_keyframe or packet.pts is None and packet.dts is None:
                for frame in _decode(stream, packet):
                    self._consider(picker, frame, stream)
            if picker.full:
                break

    def _dense_frames(self, container, stream, picker: "_MomentPicker") -> None:
        """Keyframes, and in a GOP longer than the spacing its frames (B-frames skipped)."""
        context = stream.codec_context
        gop: list = []  # compressed packets since the last keyframe, decoded only when the gap grows long
        dense = False
        for packet in container.demux(stream):
            if packet.pts is None and packet.dts is None:
                for frame in _decode(stream, packet):  # the flush packet at the end
                    self._consider(picker, frame, stream)
                continue
            seconds = _seconds(packet.pts if packet.pts is not None else packet.dts, stream)
            if packet.is_keyframe:
                gop, dense = [packet], False
                picker.claimed = seconds  # its frame may come out of the decoder only with later packets
                context.skip_frame = "DEFAULT"
                for frame in _decode(stream, packet):
                    self._consider(picker, frame, stream)
                continue
            gop.append(packet)
            if not dense and picker.due(seconds):  # a long gap: decode this GOP after all
                dense = True
                context.skip_frame = "NONREF"
                for held in gop[1:]:
                    for frame in _decode(stream, held):
                        self._consider(picker, frame, stream)
            elif dense:
                for frame in _decode(stream, packet):
                    self._consider(picker, frame, stream)
            if picker.full:
                break

    def _consider(self, picker: "_MomentPicker", frame, stream) -> None:
        """One decoded frame: scaled once in FFmpeg to the image tower's input size (the whole frame,
        uncropped), its grey thumbnail taken from that; a moment when the picker wants it."""
        if frame.pts is None and frame.dts is None:
            return
        seconds = _seconds(frame.pts if frame.pts is not None else frame.dts, stream)
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        image = frame.to_image(**self._scaled_size(frame.width, frame.height, rotation in (90, 270)))
        thumb = np.asarray(image.convert("L").resize(THUMB, _BILINEAR), np.float32)
        if not picker.wants(seconds, thumb):
            return
        picker.rotation = rotation
        if rotation:
            image = image.rotate(rotation, expand=True)  # rotation: degrees counter-clockwise, as FFmpeg means it
        pixels = resize_for_model(image, self.preprocess)  # a crop (or the padding of "longest"): no resampling
        picker.take(seconds, thumb, np.ascontiguousarray(np.asarray(pixels, np.uint8).transpose(2, 0, 1)))

    def _scaled_size(self, width: int, height: int, turned: bool) -> dict:
        """The size FFmpeg scales a frame to: what resize_for_model would resize the shown picture
        to (its short side the tower's input size, for the default "shortest"), as stored (a frame
        shown turned is stored with its sides swapped)."""
        size, mode = self.preprocess.image_size, self.preprocess.resize_mode
        shown_w, shown_h = (height, width) if turned else (width, height)
        if mode == "squash":
            out_w, out_h = size, size
        elif mode == "longest":
            scale = size / max(shown_w, shown_h)
            out_w, out_h = max(1, round(shown_w * scale)), max(1, round(shown_h * scale))
        elif shown_w <= shown_h:
            out_w, out_h = size, int(size * shown_h / shown_w)
        else:
            out_w, out_h = int(size * shown_w / shown_h), size
        if turned:
            out_w, out_h = out_h, out_w
        return {"width": max(THUMB[0], out_w), "height": max(THUMB[1], out_h), "interpolation": "AREA"}


class _MomentPicker:
    """Which decoded frames become moments: scene cuts, a frame every `spacing` while the picture
    changes, every `still` while it does not, at most `limit` of them."""

    def __init__(self, spacing: float, still: float, scene_change: float, same_picture: float, limit: int,
                 shortest: float = 0.0):
        self.spacing, self.still, self.scene_change, self.same_picture, self.limit = (
            spacing, still, scene_change, same_picture, limit)
        self.shortest = shortest  # no two moments closer (a video with more cuts than moments to spare)
        self.moments: list[tuple[float, np.ndarray]] = []
        self.last_time: float | None = None
        self.claimed: float | None = None  # the last keyframe fed to the decoder
        self.last_thumb: np.ndarray | None = None
        self.rotation = 0

    @property
    def full(self) -> bool:
        return len(self.moments) >= self.limit

    def due(self, seconds: float) -> bool:
        """True when a moment is owed by `seconds` (the caller then decodes frames it skipped)."""
        known = [time for time in (self.last_time, self.claimed) if time is not None]
        return not known or seconds - max(known) >= self.spacing

    def wants(self, seconds: float, thumb: np.ndarray) -> bool:
        if self.full:
            return False
        if self.last_time is None:
            return True
        if seconds < self.last_time:  # a frame shown before the last moment (reordered frames)
            return False
        change = float(np.abs(thumb - self.last_thumb).mean())
        elapsed = seconds - self.last_time
        if elapsed < self.shortest:
            return False
        if change >= self.scene_change:
            return True  # a new shot
        if change < self.same_picture:
            return elapsed >= self.still
        return elapsed >= self.spacing

    def take(self, seconds: float, thumb: np.ndarray, pixels: np.ndarray) -> None:
        self.moments.append((round(seconds, 3), pixels))
        self.last_time, self.last_thumb = seconds, thumb


_BILINEAR = 2  # PIL.Image.Resampling.BILINEAR (PIL is imported by PyAV's to_image)


def _decode(stream, packet):
    try:
        return stream.decode(packet)
    except Exception as exc:  # noqa: BLE001 - one broken packet (a truncated file's last) costs its frames
        log.debug("skipping an undecodable packet: %s", exc)
        return []


def _seconds(timestamp: int, stream) -> float:
    start = stream.start_time or 0
    return max(0.0, float((timestamp - start) * stream.time_base))


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _format(path: str, stream) -> str:
    """"MP4/h264": the container as the file names it, and the video codec."""
    return f"{os.path.splitext(path)[1].lstrip('.').upper()}/{stream.codec_context.name}"


def _created(container) -> float | None:
    """The recording time a camera or phone wrote (`creation_time`), as unix seconds."""
    value = (container.metadata or {}).get("creation_time")
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.year > 1970 else None


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc).strip().splitlines()[0][:200]
