"""Log-mel spectrograms in numpy: the input of the bundled audio tower (and of its training recipe).

A `MelConfig` is part of an audio model's card (like an image model's PreprocessConfig): the same
numbers make the features at training time (tools/audio) and at indexing time (the reader's worker
threads), so a sound gets the same vector whichever way it is embedded. No torch here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16_000
    n_fft: int = 512
    hop: int = 320  # 20 ms frames at 16 kHz
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 8_000.0
    mean: float = 0.0  # of the log-mel values in the training data: features are (log-mel - mean) / std
    std: float = 1.0

    @classmethod
    def from_dict(cls, data: dict) -> "MelConfig":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    def to_dict(self) -> dict:
        return asdict(self)

    def frames(self, samples: int) -> int:
        """How many frames `samples` samples make (at least one)."""
        return max(1, 1 + (samples - 1) // self.hop) if samples > 0 else 1


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filters(config: MelConfig) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters (HTK mel scale, area-normalised like Slaney)."""
    bins = config.n_fft // 2 + 1
    freqs = np.linspace(0, config.sample_rate / 2, bins)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(config.fmin), _hz_to_mel(config.fmax), config.n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))
    return np.ascontiguousarray(weights.T.astype(np.float32))


@lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    return np.hanning(n_fft + 1)[:-1].astype(np.float32)


def log_mel(samples: np.ndarray, config: MelConfig) -> np.ndarray:
    """Mono float samples at config.sample_rate -> normalised log-mel, float32 (n_mels, frames).

    Frames are centred (the signal is zero-padded by n_fft/2 on both sides), one every `hop`."""
    samples = np.asarray(samples, dtype=np.float32)
    pad = config.n_fft // 2
    padded = np.pad(samples, (pad, pad + config.hop))
    frames = config.frames(len(samples))
    strided = np.lib.stride_tricks.as_strided(
        padded, shape=(frames, config.n_fft), strides=(padded.strides[0] * config.hop, padded.strides[0]))
    spectrum = np.fft.rfft(strided * _window(config.n_fft), axis=1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
    mel = power @ mel_filters(config)
    logged = np.log(np.maximum(mel, 1e-10, dtype=np.float32))
    return ((logged - config.mean) / config.std).T.astype(np.float32, copy=False)
