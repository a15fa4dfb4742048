"""The bundled audio tower: a small CNN over log-mel windows, into the bundled text tower's space.

Log-mel (indexer.media.audio_features) -> a strided stem and four conv blocks -> mean over
frequency -> mean and max over the window's valid frames -> two linear layers into the text
tower's 384-d pooled space (all-MiniLM-L6-v2, frozen) -> the text tower's own projection (frozen,
copied from its weights) -> a unit vector. Trained to land where the text tower puts a caption of
the sound (tools/audio/recipe.py), so a text query ranks sounds and pictures with one vector.
Matching the frozen 384-d space, not only the projected one, keeps the tower usable when the
projection is retrained: it is read from the text tower's weights each time the tower is built.
"""
from __future__ import annotations

import torch
from torch import nn

from retrieval.models.audio_config import AudioTowerConfig  # its config lives without torch
from retrieval.models.seeded import seeded


def _block(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(outputs), nn.ReLU(inplace=True))


class AudioTower(nn.Module):
    """(B, n_mels, T) normalised log-mel + (B,) valid frames -> (B, embed_dim) unit vectors."""

    def __init__(self, config: AudioTowerConfig):
        super().__init__()
        self.config = config
        channels = config.channels
        layers: list[nn.Module] = [_block(1, channels[0], stride=2)]
        for index, (inputs, outputs) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(_block(inputs, outputs))
            if index < len(channels) - 2:
                layers.append(nn.MaxPool2d(2))
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * channels[-1], config.hidden), nn.ReLU(inplace=True),
                                  nn.Linear(config.hidden, config.text_width))
        self.proj = nn.Linear(config.text_width, config.embed_dim, bias=False)  # the text tower's, frozen
        self.proj.weight.requires_grad_(False)

    def pooled(self, mels: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The text-width features (before the projection), for training against the frozen space."""
        features = self.trunk(mels.unsqueeze(1)).mean(dim=2)  # (B, C, T')
        steps = features.shape[-1]
        valid = torch.clamp((frames + self.config.time_stride - 1) // self.config.time_stride, 1, steps)
        mask = torch.arange(steps, device=features.device)[None, :] < valid[:, None]
        mean = (features * mask[:, None, :]).sum(-1) / valid[:, None].to(features.dtype)
        peak = features.masked_fill(~mask[:, None, :], float("-inf")).amax(-1)
        return self.head(torch.cat([mean, peak], dim=1))

    def forward(self, mels: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(self.pooled(mels, frames)), dim=-1)


def build_audio_tower(config: AudioTowerConfig, projection: torch.Tensor | None = None, seed: int = 0) -> AudioTower:
    """A seeded tower; `projection` (embed_dim, text_width) is the text tower's, copied in."""
    with seeded(seed):  # not beside another thread's build
        tower = AudioTower(config)
    if projection is not None:
        with torch.no_grad():
            tower.proj.weight.copy_(projection.to(tower.proj.weight.dtype))
    return tower


def window_frames(mel, window_s: float) -> int:
    """The log-mel frames of one full window of `window_s` seconds."""
    return mel.frames(int(round(window_s * mel.sample_rate)))


MIN_FRAMES = 32  # a batch is at least this long: the trunk's pools need 16 frames (shorter sounds are padded)


def batch_windows(windows: list, n_mels: int, min_frames: int = MIN_FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel windows of different lengths -> a zero-padded (B, n_mels, T) batch and their lengths.

    The padding reaches into the convolutions at a short window's end, so to embed a window the same
    way whatever else is in its batch, pass `min_frames` = a full window's frames (`window_frames`)."""
    frames = [int(window.shape[1]) for window in windows]
    batch = torch.zeros((len(windows), n_mels, max(MIN_FRAMES, min_frames, *frames)), dtype=torch.float32)
    for row, window in enumerate(windows):
        batch[row, :, :frames[row]] = torch.from_numpy(window.astype("float32", copy=False))
    return batch, torch.tensor(frames)
