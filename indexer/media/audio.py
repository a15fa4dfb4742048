"""Decoding sound files with PyAV (FFmpeg in its wheel): any container and codec FFmpeg reads, streamed.

`stream_samples` yields mono float32 chunks at the rate asked for (FFmpeg's resampler mixes the
channels down and converts the rate), a few thousand samples at a time, so a ten-hour recording
never sits in memory whole. What cannot be read costs a DecodeError with a short reason: not a
sound at all (a .mp3 that is a text file), no audio stream, nothing decodable. A file that breaks
off part-way (truncated, a damaged tail) keeps what decoded before the damage.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from indexer.errors import DecodeError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff",
                              ".wma", ".mka"})  # .webm: a video (indexer.media.video_reader)
MIN_SECONDS = 0.05  # less decoded audio than this is no sound to index


@dataclass(slots=True)
class AudioStream:
    """What decoding says about a file besides its samples."""

    format: str | None = None  # the container, as FFmpeg names it ("mp3", "wav", "ogg", ...)
    channels: int | None = None
    source_rate: int | None = None
    truncated: str | None = None  # why decoding stopped early, when it did


def _av():
    try:
        import av
    except ImportError as exc:  # pragma: no cover - a dependency
        raise DecodeError("reading sound files needs PyAV (pip install av)") from exc
    return av


def _reason(exc: Exception) -> str:
    text = str(exc).split(":")[0] if ":" in str(exc) and "Errno" in str(exc) else str(exc)
    text = text.replace("[Errno 1094995529] ", "").strip()
    return text[:120] or type(exc).__name__


def stream_samples(source: str | bytes, rate: int, info: AudioStream | None = None,
                   chunk: int = 1 << 16) -> Iterator[np.ndarray]:
    """Mono float32 samples at `rate` Hz, in chunks of about `chunk` samples; `info` is filled in."""
    av = _av()
    info = info if info is not None else AudioStream()
    try:
        container = av.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source, mode="r",
                            metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise DecodeError(f"not a sound file FFmpeg can read ({_reason(exc)})") from None
    except (OSError, ValueError) as exc:
        raise DecodeError(f"cannot open: {exc}") from None
    try:
        if not container.streams.audio:
            raise DecodeError("no audio stream in this file")
        stream = container.streams.audio[0]
        info.format = container.format.name.split(",")[0] if container.format else None
        info.channels = stream.codec_context.channels or None
        info.source_rate = stream.codec_context.sample_rate or None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        pending: list[np.ndarray] = []
        held = 0
        produced = 0
        try:
            for frame in container.decode(stream):
                frame.pts = None  # the resampler keeps its own clock (broken timestamps in damaged files)
                for out in resampler.resample(frame):
                    array = out.to_ndarray().reshape(-1)
                    pending.append(array)
                    held += array.size
                if held >= chunk:
                    produced += held
                    yield _joined(pending)
                    pending, held = [], 0
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as exc:
            if produced + held < MIN_SECONDS * rate:
                raise DecodeError(f"no audio could be decoded ({_reason(exc)})") from None
            info.truncated = _reason(exc)
            log.debug("decoding stopped early (%s); keeping what decoded", info.truncated)
        if pending:
            yield _joined(pending)
    finally:
        container.close()


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if not np.isfinite(out).all():
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return out.astype(np.float32, copy=False)


def decode_samples(source: str | bytes, rate: int, max_seconds: float | None = None) -> tuple[np.ndarray, AudioStream]:
    """The whole sound (or its first `max_seconds`) as one mono float32 array at `rate` Hz."""
    info = AudioStream()
    parts, total = [], 0
    limit = None if max_seconds is None else int(max_seconds * rate)
    for part in stream_samples(source, rate, info):
        parts.append(part)
        total += part.size
        if limit is not None and total >= limit:
            break
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if limit is not None:
        samples = samples[:limit]
    if samples.size < MIN_SECONDS * rate:
        raise DecodeError("no audio in this file (it decodes to silence of zero length)")
    return samples, info
