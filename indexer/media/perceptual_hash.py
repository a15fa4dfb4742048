"""A perceptual hash of a picture (pHash: the signs of its lowest DCT frequencies), and the distance of two.

64 bits: the picture in grey at 32x32, its 2-D DCT, the 8x8 lowest frequencies but the constant one
compared with their median. Resizing, recompressing, re-encoding and a brighter copy keep nearly
every bit; a crop or a stamped caption flips some; another picture flips about half. Pure apart
from decoding the file.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps

SIDE = 32
LOW = 8


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    k = np.arange(SIDE)[:, None]
    n = np.arange(SIDE)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * SIDE)) * np.sqrt(2.0 / SIDE)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def phash_image(image: Image.Image) -> int:
    grey = ImageOps.exif_transpose(image).convert("L").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    dct = _dct_matrix()
    low = (dct @ pixels @ dct.T)[:LOW, :LOW].ravel()[1:]
    bits = low > np.median(low)
    return int(sum(1 << index for index, bit in enumerate(bits) if bit))


def phash_file(path: str) -> int | None:
    """The hash of an image file, or None when it cannot be read."""
    try:
        with Image.open(path) as image:
            image.draft("L", (SIDE * 4, SIDE * 4))  # a JPEG decodes at a fraction of its size
            return phash_image(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()
