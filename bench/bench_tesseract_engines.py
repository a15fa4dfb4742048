"""tesserocr (Tesseract in this process, loaded once per thread) against pytesseract (one `tesseract`
process per call): seconds per read, the two interleaved picture by picture, medians.

On the generated set's receipts (a page read whole, psm 3) and signs (the text test's line boxes,
each read as one line: what a sign, or a photo the test passed by mistake, costs), then the same
line reads beside a thread spinning in Python (what the index run's other threads are to an OCR
thread: the GIL, taken back at each of tesserocr's calls).

    python bench/bench_ocr.py --per-kind 25 --photos 0 --parts gate --keep /tmp/ocrset   # the set
    python bench/bench_tesseract_engines.py /tmp/ocrset/text --pictures 6 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

ENGINES = ("tesserocr", "pytesseract")


def main() -> None:
    from indexer.media import tesseract
    from indexer.media.ocr import _small, line_crops
    from indexer.media.text_gate import GATE_SIDE, screen_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="bench/ocr_set.py's text folder")
    parser.add_argument("--pictures", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pages = [_small(path.read_bytes(), 2000) for path in sorted(args.folder.glob("receipt-*.jpg"))[:args.pictures]]
    signs = []
    for path in sorted(args.folder.glob("sign-*.jpg"))[:args.pictures]:
        data = path.read_bytes()
        signs.append(line_crops(_small(data, 2000), screen_image(_small(data, GATE_SIDE)).lines))
    count = min(len(pages), len(signs))
    if count == 0:
        raise SystemExit(f"no receipt-*.jpg and sign-*.jpg in {args.folder}")
    pages, signs = pages[:count], signs[:count]
    print(f"# {benchlib.machine_line()}")
    print(f"# code {benchlib.code_version(('indexer/media/tesseract.py', 'indexer/media/ocr.py'))}, {benchlib.today()}")
    for engine in ENGINES:  # each loaded once before timing
        os.environ[tesseract.ENGINE_ENV] = engine
        tesseract.read_lines(signs[0], "eng", 60)

    def timed(engine: str, work) -> float:
        os.environ[tesseract.ENGINE_ENV] = engine
        started = time.perf_counter()
        work()
        return time.perf_counter() - started

    seconds: dict[tuple[str, str], list[float]] = {}
    for round_index in range(args.rounds):
        for index in range(len(pages)):
            order = ENGINES if (round_index + index) % 2 == 0 else ENGINES[::-1]
            for engine in order:
                seconds.setdefault((engine, "page"), []).append(
                    timed(engine, lambda page=pages[index]: tesseract.read_page(page, "eng", 3, 60)))
                seconds.setdefault((engine, "lines"), []).append(
                    timed(engine, lambda crops=signs[index]: tesseract.read_lines(crops, "eng", 60)))
    stop = threading.Event()

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        for index in range(len(signs)):
            for engine in ENGINES if index % 2 == 0 else ENGINES[::-1]:
                seconds.setdefault((engine, "lines beside a busy thread"), []).append(
                    timed(engine, lambda crops=signs[index]: tesseract.read_lines(crops, "eng", 60)))
    finally:
        stop.set()
        spinner.join()
    print(f"\n## Seconds per read, medians ({len(pages)} receipts, {len(signs)} signs; {args.rounds} rounds interleaved)")
    for what in ("page", "lines", "lines beside a busy thread"):
        fast, slow = (statistics.median(seconds[(engine, what)]) for engine in ENGINES)
        print(f"{what:<27} tesserocr {fast:.3f} s  pytesseract {slow:.3f} s  ratio {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
