"""A sound's thumbnail: its waveform (peak and loudness envelopes) drawn with numpy, saved by Pillow.

The sound is decoded from the server's checked, open file (indexer.media.audio, mono at a low
rate), its first MAX_SECONDS at most so a ten-hour recording costs a bounded decode; each pixel
column shows the peak (dark) and the RMS (light) of its stretch of samples, mirrored about the middle.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

RATE = 4_000  # Hz: plenty for an envelope a few hundred pixels wide
MAX_SECONDS = 600.0  # the picture covers the first ten minutes of a longer sound
BACKGROUND = (24, 28, 36)
PEAK = (94, 160, 255)
RMS = (190, 220, 255)


def envelopes(samples: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(peak, rms) per column, each in 0..1, scaled so the loudest peak fills the height."""
    samples = np.asarray(samples, np.float32)
    if samples.size == 0:
        return np.zeros(columns, np.float32), np.zeros(columns, np.float32)
    edges = np.linspace(0, samples.size, columns + 1).astype(np.int64)
    peak = np.zeros(columns, np.float32)
    rms = np.zeros(columns, np.float32)
    for column, (start, end) in enumerate(zip(edges[:-1], edges[1:])):
        part = samples[start:max(end, start + 1)]
        peak[column] = float(np.abs(part).max())
        rms[column] = float(np.sqrt(np.mean(part * part)))
    top = max(float(peak.max()), 1e-6)
    return np.clip(peak / top, 0, 1), np.clip(rms / top, 0, 1)


def draw_waveform(samples: np.ndarray, width: int, height: int) -> Image.Image:
    """The waveform picture of `samples` (mono), `width` x `height` RGB."""
    peak, rms = envelopes(samples, width)
    half = (height - 1) / 2.0
    distance = np.abs(np.arange(height, dtype=np.float32)[:, None] - half)  # rows from the middle
    picture = np.empty((height, width, 3), np.uint8)
    picture[:] = BACKGROUND
    picture[distance <= np.maximum(peak, 1.0 / half)[None, :] * half] = PEAK  # at least the middle line
    picture[distance <= rms[None, :] * half] = RMS
    return Image.fromarray(picture, "RGB")


def waveform_of(handle, size: int) -> Image.Image:
    """A `size` x `size` waveform of the sound read from the binary file object `handle`.
    Raises indexer.errors.DecodeError when it is no sound."""
    from indexer.media.audio import decode_samples

    samples, _ = decode_samples(handle, RATE, max_seconds=MAX_SECONDS)
    return draw_waveform(samples, size, size)
