"""The text test's parts on decoded photos: greyscale + LANCZOS resize to its size, and the test on
the resized pixels, ms per picture, then a profile of the test (docs/BENCHMARKS.md "`--ocr auto` by
default for a new index").

    python bench/text_gate_parts.py /tmp/s4/ocr-speed/photos      # bench_ocr.py --keep's photo crops
    python bench/text_gate_parts.py /tmp/s4/ocr-speed/photos --scipy   # the scipy.ndimage path, OpenCV installed or not
"""
from __future__ import annotations

import cProfile
import glob
import pstats
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from indexer.media.text_gate import gate_size, screen_gray, screen_image


def main(folder: str, count: int = 60) -> None:
    images = []
    for path in sorted(glob.glob(f"{folder}/*.jpg"))[:count]:
        image = Image.open(path)
        image.load()
        images.append(image)
    small = [np.asarray(image.convert("L").resize(gate_size(*image.size), Image.Resampling.LANCZOS)) for image in images]
    for label, run in (("the test on resized pixels", lambda: [screen_gray(pixels) for pixels in small]),
                       ("resize + test (screen_image)", lambda: [screen_image(image) for image in images])):
        run()
        started = time.perf_counter()
        run()
        print(f"{label}: {(time.perf_counter() - started) / len(images) * 1000:.2f} ms a picture")
    profile = cProfile.Profile()
    profile.runcall(lambda: [screen_gray(pixels) for pixels in small])
    pstats.Stats(profile).sort_stats("tottime").print_stats(10)


if __name__ == "__main__":
    if "--scipy" in sys.argv[2:]:
        import indexer.media.text_gate as gate

        gate._cv2 = lambda: None
    main(sys.argv[1])
