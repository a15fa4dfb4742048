"""Sounds as the pipeline sees them: a streaming reader that cuts a file into windows, and an encoder.

`AudioReader` decodes a file from its path (indexer.media.audio) into mono samples at the audio
tower's rate and cuts them into windows (10 s every 5 s by default, as Marqo does); each window
becomes one segment whose payload is the tower's input (`features(samples)`, e.g. a log-mel), so
only features are kept, never the whole signal. A file longer than `max_windows` windows keeps
its memory bounded by thinning: when the count passes the cap, every other window is dropped and
the hop doubles, so a ten-hour recording ends with windows spread evenly over all of it. A sound
shorter than a window is one window. `AudioEncoder` embeds payloads through a tower's function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from indexer.errors import DecodeError
from indexer.media.audio import AUDIO_EXTENSIONS, MIN_SECONDS, AudioStream, stream_samples
from indexer.media.kinds import DecodedItem, Segment
from indexer.store.records import ModelInfo

AUDIO = "audio"  # the modality of a sound, and the name of the audio tower's encoder
TAIL_S = 0.5  # a last, partial window is kept when it adds at least this much sound beyond the one before


@dataclass(frozen=True)
class AudioWindowing:
    sample_rate: int = 16_000
    window_s: float = 10.0
    hop_s: float = 5.0
    max_windows: int = 720  # per file: an hour at the default hop; longer files are thinned evenly


@dataclass(slots=True)
class Window:
    start_s: float
    samples: np.ndarray


def cut_windows(chunks: Iterable[np.ndarray], windowing: AudioWindowing,
                on_window: Callable[[Window], object]) -> tuple[list[tuple[float, object]], float]:
    """Windows of a stream of sample chunks: ([(start seconds, on_window(window))], duration seconds).

    Memory holds one window of samples plus the results; the results are thinned as described in
    the module docstring once there are more than `max_windows`."""
    rate = windowing.sample_rate
    size = max(1, int(round(windowing.window_s * rate)))
    hop = max(1, int(round(windowing.hop_s * rate)))
    kept: list[tuple[int, object]] = []  # (start sample, result)
    buffer = np.zeros(0, np.float32)
    buffer_start = 0  # the sample number of buffer[0]
    next_start = 0
    total = 0
    for chunk in chunks:
        total += chunk.size
        buffer = np.concatenate([buffer, chunk]) if buffer.size else chunk
        while next_start + size <= buffer_start + buffer.size:
            offset = next_start - buffer_start
            kept.append((next_start, on_window(Window(next_start / rate, buffer[offset:offset + size]))))
            if len(kept) > windowing.max_windows:
                kept = kept[::2]
                hop *= 2
            next_start += hop
        drop = min(buffer.size, next_start - buffer_start)
        if drop > 0:
            buffer, buffer_start = buffer[drop:], buffer_start + drop
    if total < MIN_SECONDS * rate:
        raise DecodeError("no audio in this file (nothing decodable, or shorter than 50 ms)")
    last_end = kept[-1][0] + size if kept else 0
    if not kept or total - last_end >= TAIL_S * rate:
        start = next_start if kept else 0
        offset = start - buffer_start
        if 0 <= offset < buffer.size:
            kept.append((start, on_window(Window(start / rate, buffer[offset:]))))
    return [(start / rate, result) for start, result in kept], total / rate


class AudioReader:
    """Sound files -> one segment per window, the payload `features(window samples)`."""

    modality = AUDIO
    streams = True
    defers = False

    def __init__(self, windowing: AudioWindowing, features: Callable[[np.ndarray], object],
                 extensions: frozenset[str] = AUDIO_EXTENSIONS, encoder: str = AUDIO):
        self.windowing = windowing
        self.features = features
        self.extensions = extensions
        self.encoder = encoder

    @property
    def encoders(self) -> tuple[str, ...]:
        return (self.encoder,)

    def read_path(self, path: str, busy: Callable[[], bool]) -> DecodedItem:
        return self._read(path)

    def read(self, data: bytes, busy: Callable[[], bool]) -> DecodedItem:
        return self._read(data)

    def _read(self, source: str | bytes) -> DecodedItem:
        info = AudioStream()
        windows, duration = cut_windows(stream_samples(source, self.windowing.sample_rate, info), self.windowing,
                                        lambda window: self.features(window.samples))
        segments = [Segment(self.encoder, start, payload) for start, payload in windows]
        return DecodedItem(segments, format=(info.format or "audio").upper(), duration_s=round(duration, 3))


class AudioEncoder:
    """Audio payloads -> unit vectors through `embed_windows` (one call per batch of windows)."""

    def __init__(self, info: ModelInfo, embed_windows: Callable[[Sequence[object]], np.ndarray],
                 warm: Callable[[], object] | None = None):
        self.info = info
        self.embed_windows = embed_windows
        self._warm = warm

    def warm(self) -> None:
        if self._warm is not None:
            self._warm()

    def embed(self, payloads: Sequence[object]) -> list[np.ndarray | str]:
        return list(self.embed_windows(payloads))
