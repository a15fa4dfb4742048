"""Pixels as the text test's benches take them (bench/text_gate_*.py): a JPEG draft-decoded at the
smallest DCT scale still at least `side` long, its greyscale copy scaled to the test's size, and the
test's candidate chains of marks one by one (indexer.media.text_gate's own steps, for benches that
look inside the test)."""
from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import indexer.media.text_gate as gate


def draft_decode(data: bytes, side: int, mode: str = "RGB") -> Image.Image:
    """The picture in `mode`; a JPEG decoded at the smallest scale at least `side` long (other formats whole)."""
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        scale = min(1.0, side / max(image.size))
        image.draft(mode, (max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    return image.convert(mode)


def gray_at(image: Image.Image, side: int = gate.GATE_SIDE, resample=Image.Resampling.LANCZOS) -> np.ndarray:
    """Greyscale, at most `side` long (what the test was tuned on: LANCZOS)."""
    gray = image if image.mode == "L" else image.convert("L")
    size = gate.gate_size(*gray.size, side)
    return np.asarray(gray.resize(size, resample) if size != gray.size else gray)


def chains(gray: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(the chain's marks, its polarity's mask, the float picture) for each candidate line of
    `gray`, dark marks first, as `screen_gray` finds them before it checks any."""
    height, width = gray.shape
    pixels = gray.astype(np.float32)
    mean = gate._local_mean(pixels, max(6, max(height, width) // 48))
    for mask in (pixels < mean - gate.CONTRAST, pixels > mean + gate.CONTRAST):
        marks = gate._marks(mask, max(8, height // 3))
        for members in gate._chains(marks):
            yield marks[members], mask, pixels


def is_line(group: np.ndarray, mask: np.ndarray, pixels: np.ndarray) -> bool:
    return gate._looks_like_a_line(pixels, mask, group)
