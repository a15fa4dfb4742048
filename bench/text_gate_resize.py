"""The text test's resize to 640 px: Pillow's LANCZOS (what ships) against its BICUBIC and HAMMING and OpenCV's INTER_AREA, ms a
picture (greyscale conversion included) and how many pictures the test then passes, per folder
(docs/BENCHMARKS.md "The text test on OpenCV").

    python bench/text_gate_resize.py /tmp/ocrset/photos /tmp/ocrset/text /tmp/ocrset2/text
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


if __name__ == "__main__":
    main(sys.argv[1:])
