"""The words pass's decode (`indexer.media.ocr._small`) against the sequence it replaced (an EXIF-turned
copy, then an RGB copy, whatever the picture): ms a picture, medians of interleaved rounds, and on how
many pictures the two give the same size, mode and pixels (docs/BENCHMARKS.md "The text test's resize
on OpenCV").

    python bench/ocr_set.py /tmp/ocrset --per-kind 25 --photos 300
    python bench/ocr_decode.py /tmp/ocrset/photos /tmp/ocrset/text --count 60 --side 2000 --rounds 5
"""
from __future__ import annotations

import argparse
import glob
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.media.ocr import _small


def copying(data: bytes, side: int) -> Image.Image:
    """The decode before: two copies of an upright RGB picture."""
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        scale = min(1.0, side / max(image.size))
        image.draft("RGB", (max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    image = ImageOps.exif_transpose(image).convert("RGB")
    if max(image.size) > side:
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--count", type=int, default=60, help="pictures a folder")
    parser.add_argument("--side", type=int, default=2000, help="the words pass's long side (OcrOptions.side)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for folder in args.folders:
        paths = sorted(glob.glob(f"{folder}/*.jpg") + glob.glob(f"{folder}/*.png"))[:args.count]
        blobs = [Path(path).read_bytes() for path in paths]
        same = sum(before.size == after.size and before.mode == after.mode
                   and np.array_equal(np.asarray(before), np.asarray(after))
                   for before, after in ((copying(blob, args.side), _small(blob, args.side)) for blob in blobs))
        spent: dict[str, list[float]] = {"before (two copies)": [], "_small (ships)": []}
        for _ in range(args.rounds):
            for name, decode in (("before (two copies)", copying), ("_small (ships)", _small)):
                started = time.perf_counter()
                for blob in blobs:
                    decode(blob, args.side)
                spent[name].append((time.perf_counter() - started) / len(blobs) * 1000)
        times = "  ".join(f"{name} {statistics.median(values):6.2f} ms" for name, values in spent.items())
        print(f"{folder}: {len(blobs)} pictures, same pixels {same} of {len(blobs)};  {times} a picture "
              f"(median of {args.rounds})")


if __name__ == "__main__":
    main()
