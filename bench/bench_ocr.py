"""Words in pictures (issue 19): how often a unique phrase is found, what OCR costs, what the text test skips.

On a generated set (bench/ocr_set.py: receipts, screenshots, slides, signs on crops of real photos,
each holding one unique phrase such as "harbor 4821") and on crops of real photos without text:

1. R@1 and R@5 of each phrase with `search --ocr PHRASE` after `mmsearch index --ocr auto` (the
   text test decides what is read; a picture it skips counts as a miss), per kind and overall;
   OCR seconds per picture read (Tesseract's own time, one thread, stored per picture);
2. scene text (the signs): the share of phrases read (exactly, as a substring) by each Tesseract
   page mode on the whole picture (3 automatic, 11 sparse, 6 one block), by reading the text
   test's line boxes one by one (psm 7; indexer.media.ocr.line_crops), and by what ships
   (read_words: lines for a picture of few lines, else sparse or automatic mode);
3. the text test on the photos: the share it skips, and its ms per picture;
4. the confirmation under auto (part "confirm"): of the pictures the test passes that would be
   read whole, the lines' coverage and the surest word the confirmation's line reads return;
5. index speed on the photos (no text): `--ocr auto` against `--ocr off`, fresh index each, runs
   interleaved (off, auto, off, auto ...) after an uncounted warm-up run, medians of the pipeline's
   plus the words pass's seconds (the model's set-up and the text tower's export, the same for
   both, are left out). `--test-only` adds a third run to each round: auto with every picture
   answered "no text" after the test ran (the test's own cost, without Tesseract).

The model is the bundled offline one (`--model bundled`): the words do not depend on it, and a small
model makes the words pass's share of the index time look larger, not smaller.

    python bench/bench_ocr.py --per-kind 25 --photos 200 --rounds 2
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from ocr_set import make_photo_set, make_text_set

os.environ.setdefault("HF_HUB_OFFLINE", "1")


MODEL = {"name": "bundled", "precision": None}  # --arch: an open_clip architecture with random weights
CONFIRM: dict[str, int] = {}  # --confirm-lines: OcrOptions.confirm_lines of every index run (default: the shipped one)


def index(db: Path, folder: Path, mode: str, workers: int | None):
    from indexer.media.ocr import OcrOptions
    from indexer.pipeline.embed import PipelineConfig
    from retrieval.indexing import IndexRequest, index_library

    request = IndexRequest(db=db, roots=(str(folder),), model=MODEL["name"], device="cpu", precision=MODEL["precision"],
                           pipeline=PipelineConfig(workers=workers), ocr=OcrOptions(mode=mode, **CONFIRM))
    return index_library(request)


def recall(db: Path, folder: Path, rows) -> dict:
    from indexer.store.library import Library
    from retrieval.query.search import Filters
    from retrieval.query.words import rank_by_words

    ranks: dict[str, list[int | None]] = {}
    with Library(db, create=False, read_only=True) as library:
        for name, kind, phrase in rows:
            hits, _ = rank_by_words(library, phrase, 5, Filters())
            names = [os.path.basename(hit.path) for hit in hits]
            ranks.setdefault(kind, []).append(names.index(name) + 1 if name in names else None)
        seconds = {}
        for _, path, status, spent in library.words._rows(
                "SELECT w.item_id, i.path, w.status, w.seconds FROM item_words w JOIN items i ON i.id = w.item_id", ()):
            seconds.setdefault(os.path.basename(path).split("-")[0], []).append((status, spent))
    return {"ranks": ranks, "seconds": seconds}


def scene_modes(folder: Path, rows, sample: int) -> dict[str, float]:

    from indexer.media.ocr import OcrOptions, _small, line_crops, read_words
    from indexer.media.tesseract import read_lines, read_page
    from indexer.media.text_gate import screen_image
    from indexer.store.words import tokens

    found = {"psm 3": 0, "psm 11": 0, "psm 6": 0, "lines psm 7": 0, "shipped (auto)": 0}
    seconds = {key: 0.0 for key in found}
    signs = [row for row in rows if row[1] == "sign"][:sample]
    for name, _, phrase in signs:
        image = _small((folder / name).read_bytes(), 2000)
        want = " ".join(tokens(phrase))
        for key, psm in (("psm 3", 3), ("psm 11", 11), ("psm 6", 6)):
            started = time.perf_counter()
            text = read_page(image, "eng", psm, 60)
            seconds[key] += time.perf_counter() - started
            found[key] += want in " ".join(tokens(text))
        started = time.perf_counter()
        text = read_lines(line_crops(image, screen_image(image).lines), "eng", 60)
        seconds["lines psm 7"] += time.perf_counter() - started
        found["lines psm 7"] += want in " ".join(tokens(text))
        started = time.perf_counter()
        text = read_words((folder / name).read_bytes(), OcrOptions(mode="on")).text
        seconds["shipped (auto)"] += time.perf_counter() - started
        found["shipped (auto)"] += want in " ".join(tokens(text))
    return {key: (found[key] / max(1, len(signs)), seconds[key] / max(1, len(signs))) for key in found}


def confirm_part(folders: dict[str, Path]) -> None:
    """Of the pictures the text test passes and read_words would read whole: the lines' coverage and
    the surest word of three letters or more from the lines the confirmation reads (what
    OcrOptions.confirm_above and confirm_conf are set between), and from the largest line boxes
    instead (the choice the confirmation does not make)."""
    from indexer.media import tesseract
    from indexer.media.ocr import OcrOptions, _small, line_crops, reads_by_lines
    from indexer.media.text_gate import GATE_SIDE, screen_image

    options = OcrOptions()

    def surest(words) -> float:
        return max((conf for word, conf in words if sum(char.isalnum() for char in word) >= 3), default=-1.0)

    print(f"\n## Confirmation (engine {tesseract.engine()}): pictures read whole under auto, their lines' "
          f"coverage and surest word ({options.confirm_lines} lines of most marks, psm 7)")
    for label, folder in folders.items():
        rows = []
        for path in sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png")):
            data = path.read_bytes()
            screen = screen_image(_small(data, GATE_SIDE))
            if not screen.has_text() or reads_by_lines(screen, options):
                continue
            image = _small(data, options.side)
            crops = line_crops(image, screen.longest_lines(options.confirm_lines))
            started = time.perf_counter()
            words = tesseract.read_line_words(crops, options.lang, 60)
            spent = time.perf_counter() - started
            largest = tesseract.read_line_words(line_crops(image, screen.lines[:options.confirm_lines]), options.lang, 60)
            rows.append((path.name, screen.coverage, surest(words), spent, surest(largest)))
        if not rows:
            print(f"{label:<7} none")
            continue
        coverages, sures = sorted(row[1] for row in rows), sorted(row[2] for row in rows)
        print(f"{label:<7} {len(rows)} pictures; coverage {coverages[0]:.3f}-{coverages[-1]:.3f}; surest word's "
              f"confidence, lowest five {[round(value) for value in sures[:5]]}, highest {round(sures[-1])}; "
              f"confirmation median {statistics.median(row[3] for row in rows) * 1000:.0f} ms; from the largest "
              f"boxes instead, lowest five {sorted(round(row[4]) for row in rows)[:5]}")
        for name, coverage, sure, _, by_area in rows:
            if label == "photos" or min(sure, by_area) < options.confirm_conf:
                print(f"    {name}: coverage {coverage:.3f}, surest word {sure:.0f} (largest boxes: {by_area:.0f})")


def gate_on(folder: Path) -> tuple[float, float]:
    from indexer.media.ocr import _small
    from indexer.media.text_gate import GATE_SIDE, screen_image

    passed, spent, count = 0, [], 0
    for path in sorted(folder.glob("*.jpg")):
        image = _small(path.read_bytes(), GATE_SIDE)  # the decode threads test the pixels they decoded anyway
        started = time.perf_counter()
        passed += screen_image(image).has_text()
        spent.append(time.perf_counter() - started)
        count += 1
    return 1 - passed / max(1, count), statistics.median(spent) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0, help="of the text set (another seed: other phrases, "
                        "photos, fonts and angles)")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--speed-photos", type=int, default=100, help="photos in the --ocr auto/off timing")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sign-sample", type=int, default=15)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--arch", default=None, help="time speed with this open_clip architecture (random "
                        "weights, fp32 torch: no per-index export) instead of the bundled model, e.g. ViT-B-32")
    parser.add_argument("--precision", default=None, help="with --arch: the image tower's precision (default "
                        "fp32 torch; 'auto' is what a user gets: the int8 ONNX tower where it passes its check)")
    parser.add_argument("--confirm-lines", type=int, default=None, help="line boxes read to confirm a "
                        "picture before reading it whole under auto (0: none; default: the shipped setting)")
    parser.add_argument("--keep", type=Path, default=None, help="build the sets here (and keep them)")
    parser.add_argument("--test-only", action="store_true", help="speed: add auto with nothing read after the "
                        "text test (its own cost)")
    parser.add_argument("--parts", default="recall,scene,gate,confirm,speed",
                        help="which of the five to run (comma-separated); hold the bench lock around speed")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="mms-ocr-"))
    if args.confirm_lines is not None:
        CONFIRM["confirm_lines"] = args.confirm_lines
    if args.arch:
        from bench_index import write_arch_config

        root.mkdir(parents=True, exist_ok=True)
        MODEL.update(name=str(write_arch_config(root, args.arch, seed=0)),
                     precision=None if args.precision == "auto" else (args.precision or "fp32"))
    try:
        rows = make_text_set(root / "text", args.per_kind, seed=args.seed)
        make_photo_set(root / "photos", args.photos)
        speed = root / "speed"
        speed.mkdir(exist_ok=True)
        for path in sorted((root / "photos").glob("*.jpg"))[:args.speed_photos]:
            shutil.copy(path, speed / path.name)
        print(f"# {benchlib.machine_line()}")
        measured = ("indexer/media/ocr.py", "indexer/media/tesseract.py", "indexer/media/text_gate.py", "indexer/store/words.py",
                    "indexer/pipeline/words.py", "indexer/media/image.py", "indexer/pipeline/sync.py")
        print(f"# code {benchlib.code_version(measured)}, {benchlib.today()}")
        print(f"# load before: {open('/proc/loadavg').read().split()[:3]}")

        parts = set(args.parts.split(","))
        if "recall" in parts:
            recall_part(root, rows)
        if "scene" in parts:
            print(f"\n## Scene text (first {args.sign_sample} signs): phrase read, seconds per picture")
            for key, (share, seconds) in scene_modes(root / "text", rows, args.sign_sample).items():
                print(f"{key:<15} {share:.2f}  {seconds:.2f} s")
        if "gate" in parts:
            skipped, ms = gate_on(root / "photos")
            print(f"\n## Text test on {args.photos} photo crops without text: skips {skipped:.2f}, "
                  f"median {ms:.1f} ms/picture (the test alone, on pixels decoded at its size)")
        if "confirm" in parts:
            confirm_part({"text": root / "text", "photos": root / "photos"})
        if "speed" in parts:
            speed_part(root, speed, args)
        print(f"# load after: {open('/proc/loadavg').read().split()[:3]}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def recall_part(root: Path, rows, workers: int | None = None) -> None:
    shutil.rmtree(root / "db-text", ignore_errors=True)  # a kept set's index of an earlier run: read again
    outcome = index(root / "db-text", root / "text", "auto", workers)
    result = recall(root / "db-text", root / "text", rows)
    print(f"\n## R@1 / R@5 of a unique phrase, `--ocr auto` ({len(rows)} pictures; words pass "
          f"{outcome.words.seconds:.1f} s wall)")
    every = []
    for kind, ranks in result["ranks"].items():
        every += ranks
        r1 = sum(rank == 1 for rank in ranks) / len(ranks)
        r5 = sum(rank is not None and rank <= 5 for rank in ranks) / len(ranks)
        read = [spent for status, spent in result["seconds"].get(kind, []) if status == "read"]
        skipped = sum(status == "skipped" and not spent for status, spent in result["seconds"].get(kind, []))
        unconfirmed = sum(status == "skipped" and bool(spent) for status, spent in result["seconds"].get(kind, []))
        print(f"{kind:<11} R@1 {r1:.2f}  R@5 {r5:.2f}  OCR s/picture median {statistics.median(read) if read else 0:.2f} "
              f"mean {statistics.mean(read) if read else 0:.2f}  skipped by the text test {skipped}/{len(ranks)}, "
              f"after its lines gave no sure word {unconfirmed}/{len(ranks)}")
    r1 = sum(rank == 1 for rank in every) / len(every)
    r5 = sum(rank is not None and rank <= 5 for rank in every) / len(every)
    print(f"{'all':<11} R@1 {r1:.2f}  R@5 {r5:.2f}")


def speed_part(root: Path, speed: Path, args) -> None:
    from indexer.media import text_gate

    modes = ("off", "auto", "test-only") if args.test_only else ("off", "auto")
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    has_text = text_gate.TextScreen.has_text
    words: list[tuple[float, float, int]] = []
    index(root / "db-warm", speed, "off", args.workers)  # warm-up (model files, page cache), not counted
    shutil.rmtree(root / "db-warm")
    with benchlib.ContentionMeter() as meter:
        for round_index in range(args.rounds):
            for mode in modes:
                db = root / f"db-speed-{mode}-{round_index}"
                text_gate.TextScreen.has_text = (lambda screen, *_, **__: False) if mode == "test-only" else has_text
                try:
                    run = index(db, speed, "auto" if mode == "test-only" else mode, args.workers)
                finally:
                    text_gate.TextScreen.has_text = has_text
                # the pipeline (less the model's one-time set-up) plus the words pass
                seconds = run.report.seconds - run.report.prepare_seconds + (run.words.seconds if run.words else 0.0)
                times[mode].append(seconds)
                if run.words is not None and mode == "auto":
                    words.append((run.words.seconds, run.words.ocr_seconds, run.words.read))
                shutil.rmtree(db)
    off, auto = statistics.median(times["off"]), statistics.median(times["auto"])
    print(f"\n## Index speed on {args.speed_photos} photos without text ({args.rounds} rounds, interleaved; "
          f"model {os.path.basename(MODEL['name'])})")
    print(f"--ocr off  {args.speed_photos / off:.2f} images/s ({off:.1f} s)  runs {[round(t, 1) for t in times['off']]}")
    print(f"--ocr auto {args.speed_photos / auto:.2f} images/s ({auto:.1f} s)  runs {[round(t, 1) for t in times['auto']]}")
    print(f"auto/off speed {off / auto:.2f}x  ({meter.result})")
    if args.test_only:
        alone = statistics.median(times["test-only"])
        print(f"test only  {args.speed_photos / alone:.2f} images/s ({alone:.1f} s)  runs "
              f"{[round(t, 1) for t in times['test-only']]}: {off / alone:.2f}x of off")
    print("words pass per run (wall s, Tesseract s summed over threads, pictures read): "
          + ", ".join(f"{wall:.1f}/{ocr:.1f}/{read}" for wall, ocr, read in words))


if __name__ == "__main__":
    main()
