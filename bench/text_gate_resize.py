"""The text test's resize to 640 px: Pillow's LANCZOS (what the test was tuned on) against its BICUBIC and
HAMMING, OpenCV's INTER_AREA and `gate_gray` (what ships: Pillow's kernel on OpenCV up to a 5x
reduction), ms a picture (greyscale conversion included) and how many pictures the test then passes,
per folder (docs/BENCHMARKS.md "The text test's resize on OpenCV"). With `--reductions`, the OpenCV
path against Pillow's LANCZOS on random greyscale pictures 1.1-8x the test's size (best of 15): where
`gate_gray` hands over to Pillow (CV_MAX_REDUCTION).

    python bench/text_gate_resize.py /tmp/ocrset/photos /tmp/ocrset/text /tmp/ocrset2/text
    python bench/text_gate_resize.py --reductions
"""
from __future__ import annotations

import functools
import glob
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gate_pixels import draft_decode, gray_at

import indexer.media.text_gate as gate


def decoded(data: bytes) -> Image.Image:
    return draft_decode(data, gate.GATE_SIDE)


def pillow(resample):
    return functools.partial(gray_at, resample=resample)


def area(image: Image.Image) -> np.ndarray:
    gray = np.asarray(image.convert("L"))
    size = gate.gate_size(gray.shape[1], gray.shape[0])
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA) if size != (gray.shape[1], gray.shape[0]) else gray


def main(folders: list[str]) -> None:
    for folder in folders:
        paths = sorted(glob.glob(f"{folder}/*.jpg") + glob.glob(f"{folder}/*.png"))
        images = [decoded(Path(path).read_bytes()) for path in paths]
        for name, resize in (("Pillow LANCZOS", pillow(Image.Resampling.LANCZOS)),
                             ("Pillow BICUBIC", pillow(Image.Resampling.BICUBIC)),
                             ("Pillow HAMMING", pillow(Image.Resampling.HAMMING)), ("OpenCV INTER_AREA", area),
                             ("gate_gray (ships)", gate.gate_gray)):
            started = time.perf_counter()
            grays = [resize(image) for image in images]
            spent = (time.perf_counter() - started) / len(images) * 1000
            passed = sum(gate.screen_gray(gray).has_text() for gray in grays)
            print(f"{folder} {name:18s} {spent:5.2f} ms  passed {passed} of {len(images)}")


def _best_ms(resize, image: Image.Image, rounds: int = 15) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        resize(image)
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def reductions() -> None:
    rng = np.random.default_rng(0)
    for factor in (1.1, 1.2, 1.5, 2, 3, 4, 5, 6, 8):
        width = int(gate.GATE_SIDE * factor)
        image = Image.fromarray(rng.integers(0, 255, (int(width * 0.66), width), dtype=np.uint8))
        best = functools.partial(_best_ms, image=image)
        limit, gate.CV_MAX_REDUCTION = gate.CV_MAX_REDUCTION, float("inf")
        try:
            on_cv = best(gate.gate_gray)
        finally:
            gate.CV_MAX_REDUCTION = limit
        on_pillow = best(gray_at)  # Pillow's LANCZOS
        print(f"{factor:4}x {image.width}x{image.height}: OpenCV {on_cv:7.2f} ms  Pillow LANCZOS {on_pillow:7.2f} ms  "
              f"ratio {on_cv / on_pillow:.2f}{'  (gate_gray: Pillow)' if factor > limit else ''}")


if __name__ == "__main__":
    reductions() if sys.argv[1:] == ["--reductions"] else main(sys.argv[1:])
