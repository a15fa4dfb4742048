"""The text test on OpenCV against scipy.ndimage, same pixels, rounds interleaved: ms a picture for the
test alone (on greyscale pixels already at its size) and for the decode threads' whole share
(`screen_image` on the picture as the words pass decodes it, at most 640 px: greyscale, test), medians
(docs/BENCHMARKS.md "The text test on OpenCV").

    python bench/ocr_set.py /tmp/ocrset --per-kind 25 --photos 300
    python bench/text_gate_backends.py /tmp/ocrset/photos --count 100 --rounds 5
"""
from __future__ import annotations

import argparse
import glob
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import indexer.media.text_gate as gate
from indexer.media.ocr import _small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if gate._cv2() is None:
        raise SystemExit("OpenCV is not installed: pip install opencv-python-headless")
    decoded = [_small(Path(path).read_bytes(), gate.GATE_SIDE)
               for path in sorted(glob.glob(f"{args.folder}/*.jpg"))[:args.count]]
    grays = []
    for image in decoded:
        small = image.convert("L")
        if gate.gate_size(*small.size) != small.size:
            small = small.resize(gate.gate_size(*small.size), 1)  # LANCZOS
        grays.append(np.asarray(small))
    backends = {"opencv": gate._cv2, "scipy": lambda: None}
    answers: dict[str, list] = {}
    spent: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, backend in backends.items():
            gate._cv2 = backend
            for part, run in (("test", lambda: [gate.screen_gray(gray) for gray in grays]),
                              ("greyscale + test", lambda: [gate.screen_image(image) for image in decoded])):
                started = time.perf_counter()
                answers[name] = run()
                spent.setdefault((name, part), []).append((time.perf_counter() - started) / len(grays) * 1000)
    gate._cv2 = backends["opencv"]
    print(f"# {len(grays)} pictures from {args.folder}, {args.rounds} rounds interleaved; same answers: "
          f"{answers['opencv'] == answers['scipy']}; passed: {sum(s.has_text() for s in answers['opencv'])}")
    for part in ("test", "greyscale + test"):
        cv, sp = (statistics.median(spent[(name, part)]) for name in ("opencv", "scipy"))
        print(f"{part:16s} opencv {cv:6.2f} ms  scipy {sp:6.2f} ms  scipy/opencv {sp / cv:.2f}x")


if __name__ == "__main__":
    main()
