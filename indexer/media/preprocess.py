"""Image preprocessing a model expects, as plain data plus one pure function.

Matches open_clip's eval transform (resize shortest side, centre crop, normalise) without
importing torchvision, so decode workers stay light. `tests/test_preprocess.py` checks it
against `open_clip.image_transform`. PIL is imported by the functions that take an image, not by the
module: a text search reads `PreprocessConfig` without paying for Pillow (tested in test_fast_paths.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    resize_mode: str = "shortest"  # shortest | longest | squash (open_clip's names)
    interpolation: str = "bicubic"
    fill_color: int = 0

    def to_dict(self) -> dict:
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize_mode": self.resize_mode,
            "interpolation": self.interpolation,
            "fill_color": self.fill_color,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        size = data.get("image_size", 224)
        if isinstance(size, (list, tuple)):
            size = int(size[0])
        return cls(
            image_size=int(size),
            mean=tuple(float(v) for v in data.get("mean", OPENAI_MEAN)),
            std=tuple(float(v) for v in data.get("std", OPENAI_STD)),
            resize_mode=data.get("resize_mode", "shortest"),
            interpolation=data.get("interpolation", "bicubic"),
            fill_color=int(data.get("fill_color", 0)),
        )


def flatten_alpha(image: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """RGB version of any PIL image; transparent areas become `background`."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def resize_for_model(image: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """Resize and crop an RGB image to cfg.image_size x cfg.image_size."""
    from PIL import Image

    size = cfg.image_size
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                "nearest": Image.Resampling.NEAREST}[cfg.interpolation]
    width, height = image.size
    if cfg.resize_mode == "squash":
        return image.resize((size, size), resample)
    if cfg.resize_mode == "longest":
        scale = size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = image.resize((new_w, new_h), resample)
        canvas = Image.new("RGB", (size, size), (cfg.fill_color,) * 3)
        canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
        return canvas
    # "shortest", the torchvision Resize(int) + CenterCrop rule
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), resample)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def normalise_uint8(pixels: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """uint8 (B, 3, S, S) pixels already resized and cropped -> the model's normalised float32 input."""
    mean = np.asarray(cfg.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(cfg.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((pixels.astype(np.float32) / 255.0 - mean) / std)


def to_model_input(image: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """PIL image -> normalised float32 array of shape (3, size, size)."""
    rgb = resize_for_model(flatten_alpha(image), cfg)
    pixels = np.asarray(rgb, dtype=np.float32) / 255.0
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))
