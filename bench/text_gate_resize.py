"""The text test's resize to 640 px: Pillow's LANCZOS (what ships) against its BICUBIC and HAMMING and OpenCV's INTER_AREA, ms a
picture (greyscale conversion included) and how many pictures the test then passes, per folder
(docs/BENCHMARKS.md "The text test on OpenCV").

    python bench/text_gate_resize.py /tmp/ocrset/photos /tmp/ocrset/text /tmp/ocrset2/text
"""
from __future__ import annotations

import glob
import io
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import indexer.media.text_gate as gate


def decoded(data: bytes, side: int = gate.GATE_SIDE) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        scale = min(1.0, side / max(image.size))
        image.draft("RGB", (max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    return image.convert("RGB")


def lanczos(image: Image.Image) -> np.ndarray:
    gray = image.convert("L")
    size = gate.gate_size(*gray.size)
    return np.asarray(gray.resize(size, Image.Resampling.LANCZOS) if size != gray.size else gray)


def pillow(resample):
    def resize(image: Image.Image) -> np.ndarray:
        gray = image.convert("L")
        size = gate.gate_size(*gray.size)
        return np.asarray(gray.resize(size, resample) if size != gray.size else gray)
    return resize


def area(image: Image.Image) -> np.ndarray:
    gray = np.asarray(image.convert("L"))
    size = gate.gate_size(gray.shape[1], gray.shape[0])
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA) if size != (gray.shape[1], gray.shape[0]) else gray


def main(folders: list[str]) -> None:
    for folder in folders:
        paths = sorted(glob.glob(f"{folder}/*.jpg") + glob.glob(f"{folder}/*.png"))
        images = [decoded(Path(path).read_bytes()) for path in paths]
        for name, resize in (("Pillow LANCZOS", lanczos), ("Pillow BICUBIC", pillow(Image.Resampling.BICUBIC)),
                             ("Pillow HAMMING", pillow(Image.Resampling.HAMMING)), ("OpenCV INTER_AREA", area)):
            started = time.perf_counter()
            grays = [resize(image) for image in images]
            spent = (time.perf_counter() - started) / len(images) * 1000
            passed = sum(gate.screen_gray(gray).has_text() for gray in grays)
            print(f"{folder} {name:18s} {spent:5.2f} ms  passed {passed} of {len(images)}")


if __name__ == "__main__":
    main(sys.argv[1:])
