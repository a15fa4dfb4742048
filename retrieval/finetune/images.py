"""The images of a pairs list: decoded once, kept small in memory, turned into model input per batch.

Eval mode keeps each image as the model's exact S x S crop (uint8), so a batch is the same array
`indexer.media.preprocess.to_model_input` gives. Augment mode keeps a somewhat larger copy and draws a
random resized crop plus mild brightness/contrast changes per use; no flips and no hue changes,
because captions name directions and colours. An image that cannot be decoded costs its pairs only.
When the decoded set would not fit `cache_limit_bytes`, images are decoded from disk on every use.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from indexer.errors import DecodeError
from indexer.media.preprocess import PreprocessConfig, flatten_alpha, resize_for_model

log = logging.getLogger(__name__)

EVAL = "eval"
AUGMENT = "augment"
AUGMENT_KEEP_SCALE = 1.5  # augment mode keeps the shorter side at up to 1.5 x the model's input size
DEFAULT_CACHE_LIMIT = 3 << 30


@dataclass(frozen=True)
class AugmentConfig:
    """Random resized crop (area share, aspect range; open_clip's training defaults) and brightness/contrast jitter."""

    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.2
    contrast: float = 0.2


Progress = Callable[[int, int], None]


class PairImages:
    """Unique image files -> float32 model input batches (B, 3, S, S), by index."""

    def __init__(
        self,
        paths: Sequence[Path],
        preprocess: PreprocessConfig,
        mode: str = EVAL,
        augment: AugmentConfig = AugmentConfig(),
        cache_limit_bytes: int = DEFAULT_CACHE_LIMIT,
    ):
        if mode not in (EVAL, AUGMENT):
            raise ValueError(f"unknown mode {mode!r}")
        self.paths = list(paths)
        self.preprocess = preprocess
        self.mode = mode
        self.augment = augment
        size = preprocess.image_size
        keep = math.ceil(size * AUGMENT_KEEP_SCALE) if mode == AUGMENT else size
        self.cached = len(self.paths) * keep * keep * 3 * (1.4 if mode == AUGMENT else 1.0) <= cache_limit_bytes
        self._arrays: list[np.ndarray | None] = [None] * len(self.paths)
        self._mean = np.asarray(preprocess.mean, dtype=np.float32)
        self._std = np.asarray(preprocess.std, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, workers: int = 2, on_progress: Progress | None = None) -> dict[int, str]:
        """Decode every image once (kept when the cache allows); returns {index: reason} for failures."""
        failures: dict[int, str] = {}
        total = len(self.paths)

        def work(index: int) -> tuple[int, np.ndarray | None, str | None]:
            try:
                return index, self._decode(index), None
            except DecodeError as exc:
                return index, None, str(exc)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for done, (index, array, problem) in enumerate(pool.map(work, range(total)), start=1):
                if problem is not None:
                    failures[index] = problem
                elif self.cached:
                    self._arrays[index] = array
                if on_progress is not None:
                    on_progress(done, total)
        return failures

    def pixels(self, indices: Sequence[int], rng: np.random.Generator | None = None) -> np.ndarray:
        """Model input for these images; augment mode needs `rng` and draws a fresh view each call."""
        size = self.preprocess.image_size
        batch = np.empty((len(indices), size, size, 3), dtype=np.float32)
        for slot, index in enumerate(indices):
            array = self._arrays[index] if self.cached else None
            if array is None:
                array = self._decode(index)
            if self.mode == AUGMENT:
                if rng is None:
                    raise ValueError("augment mode needs an rng")
                batch[slot] = augment_view(array, size, rng, self.augment, self.preprocess)
            else:
                batch[slot] = array
        batch /= 255.0
        batch -= self._mean
        batch /= self._std
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def _decode(self, index: int) -> np.ndarray:
        from indexer.media.files import read_file
        from indexer.media.image import DecodeOptions, open_image

        image, _, _ = open_image(read_file(str(self.paths[index])), DecodeOptions(), self.preprocess.image_size)
        try:
            rgb = flatten_alpha(image)
            if self.mode == EVAL:
                return np.asarray(resize_for_model(rgb, self.preprocess), dtype=np.uint8)
            keep = math.ceil(self.preprocess.image_size * AUGMENT_KEEP_SCALE)
            shorter = min(rgb.size)
            if shorter > keep:
                scale = keep / shorter
                rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                                 Image.Resampling.BICUBIC)
            return np.asarray(rgb, dtype=np.uint8)
        except (OSError, ValueError) as exc:
            raise DecodeError(f"cannot convert image: {exc}") from None


def augment_view(array: np.ndarray, size: int, rng: np.random.Generator, config: AugmentConfig,
                 preprocess: PreprocessConfig) -> np.ndarray:
    """One random view (size, size, 3) float32 in 0..255 of an RGB uint8 array."""
    height, width = array.shape[:2]
    box = _random_crop_box(width, height, rng, config)
    image = Image.fromarray(array)
    if box is None:
        view = resize_for_model(image, preprocess)
    else:
        view = image.resize((size, size), Image.Resampling.BICUBIC, box=box)
    pixels = np.asarray(view, dtype=np.float32)
    contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
    brightness = rng.uniform(1 - config.brightness, 1 + config.brightness)
    mean = pixels.mean()
    pixels = ((pixels - mean) * contrast + mean) * brightness
    return np.clip(pixels, 0.0, 255.0)


def _random_crop_box(width: int, height: int, rng: np.random.Generator,
                     config: AugmentConfig) -> tuple[int, int, int, int] | None:
    """torchvision's RandomResizedCrop box rule; None falls back to the eval crop."""
    area = width * height
    low, high = math.log(config.ratio[0]), math.log(config.ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*config.scale)
        aspect = math.exp(rng.uniform(low, high))
        crop_w = round(math.sqrt(target * aspect))
        crop_h = round(math.sqrt(target / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left = int(rng.integers(0, width - crop_w + 1))
            top = int(rng.integers(0, height - crop_h + 1))
            return left, top, left + crop_w, top + crop_h
    return None
