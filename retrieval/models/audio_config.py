"""The bundled audio tower's shape, without torch: what opening an audio model for an index run reads
(its windows and features), so a run that meets no sound never imports torch (retrieval.models.audio_tower
builds the tower)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from indexer.media.audio_features import MelConfig


@dataclass(frozen=True)
class AudioTowerConfig:
    channels: tuple[int, ...] = (32, 64, 128, 192, 256)
    hidden: int = 512
    text_width: int = 384  # the text tower's pooled width (before its projection)
    embed_dim: int = 256  # after the text tower's projection
    mel: MelConfig = field(default_factory=MelConfig)

    @classmethod
    def from_dict(cls, data: dict) -> "AudioTowerConfig":
        data = dict(data)
        mel = MelConfig.from_dict(data.pop("mel", {}))
        known = {key: data[key] for key in ("hidden", "text_width", "embed_dim") if key in data}
        return cls(channels=tuple(data.get("channels", cls.channels)), mel=mel, **known)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out

    @property
    def time_stride(self) -> int:
        """Frames of input per frame of the last feature map (the stem and three pools halve it)."""
        return 2 ** (1 + max(0, len(self.channels) - 2))
