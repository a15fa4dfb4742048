"""Near-duplicates: precision and recall of pairs on a generated set, and the time for 1M vectors.

Quality (`--quality`): the 154 pictures of data/sample plus --photos photo-like scenes drawn with
PIL (sky, sun, hills, houses, noise; 640x480) are the originals. Each gets two copies, each made by
one of: resized to half, recompressed at JPEG quality 30, cropped 6-10% off the edges, brightened
by 30%, stamped with a caption, re-encoded as PNG or WebP. Hard negatives come free: data/sample
draws each concept twice (OpenMoji and Noto), which are *not* duplicates. Everything is indexed
with `mmsearch index`'s code and the bundled model; `retrieval.duplicates` then finds candidate
pairs once at the lowest threshold, and each setting (threshold, with or without the perceptual
hash) is scored on the pairs inside the groups it would show: precision = true pairs / shown
pairs, recall = true pairs shown / all true pairs.

Speed (`--speed`): --vectors clip-like vectors (bench_search.ClipLikeMixture, 512-d) of which 1%
get a planted near-copy (cosine ~0.97), indexed as `mmsearch index` would (IVF4096,SQfp16 at 1M),
then every vector range-searched (retrieval.duplicates.range_pairs) at each --nprobe: seconds,
pairs found, recall of the planted pairs.

    python bench/bench_duplicates.py --quality --work /tmp/dups
    nice -n 19 python bench/bench_duplicates.py --speed --vectors 1000000 --cache /tmp/dups-1m --build-only
    flock /tmp/mms-bench.lock python bench/bench_duplicates.py --speed --vectors 1000000 --cache /tmp/dups-1m
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import combinations
from pathlib import Path

import benchlib
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("resize", "recompress", "crop", "brighten", "caption", "reencode")


# --- the generated set ---------------------------------------------------------------------
def photo_like(rng: np.random.Generator, size=(640, 480)) -> Image.Image:
    """A landscape-ish scene: graded sky, a sun, hills, a few houses, sensor noise, a little blur."""
    width, height = size
    horizon = int(height * rng.uniform(0.45, 0.7))
    sky_top, sky_low = rng.integers(60, 255, 3), rng.integers(120, 255, 3)
    ground_top, ground_low = rng.integers(20, 160, 3), rng.integers(10, 120, 3)
    rows = np.linspace(0, 1, height)[:, None]
    pixels = np.where(rows < horizon / height,
                      sky_top + (sky_low - sky_top) * (rows / (horizon / height)),
                      ground_top + (ground_low - ground_top) * ((rows - horizon / height) / (1 - horizon / height)))
    image = Image.fromarray(np.repeat(pixels[:, None, :], width, axis=1).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    radius = int(rng.uniform(20, 60))
    cx, cy = int(rng.uniform(radius, width - radius)), int(rng.uniform(radius, horizon - radius / 2))
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=tuple(int(v) for v in rng.integers(200, 256, 3)))
    for _ in range(int(rng.integers(2, 5))):
        left, peak = rng.uniform(-200, width), rng.uniform(horizon - 160, horizon - 20)
        span = rng.uniform(150, 400)
        draw.polygon([(left, horizon + 5), (left + span / 2, peak), (left + span, horizon + 5)],
                     fill=tuple(int(v) for v in rng.integers(20, 140, 3)))
    for _ in range(int(rng.integers(0, 6))):
        x, w, h = rng.uniform(0, width - 60), rng.uniform(30, 90), rng.uniform(30, 110)
        base = horizon + rng.uniform(10, height - horizon - 10)
        colour = tuple(int(v) for v in rng.integers(60, 230, 3))
        draw.rectangle((x, base - h, x + w, base), fill=colour)
        draw.polygon([(x - 5, base - h), (x + w / 2, base - h - w / 2), (x + w + 5, base - h)],
                     fill=tuple(int(v) for v in rng.integers(80, 200, 3)))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def make_variant(image: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, str, dict]:
    """(picture, file extension, save options) for one kind of copy."""
    width, height = image.size
    if kind == "resize":
        return image.resize((max(8, width // 2), max(8, height // 2)), Image.Resampling.LANCZOS), "jpg", {"quality": 88}
    if kind == "recompress":
        return image, "jpg", {"quality": 30}
    if kind == "crop":
        cut = rng.uniform(0.06, 0.10)
        box = (int(width * cut * rng.uniform(0, 1)), int(height * cut * rng.uniform(0, 1)))
        return image.crop((box[0], box[1], box[0] + int(width * (1 - cut)), box[1] + int(height * (1 - cut)))), "jpg", \
            {"quality": 90}
    if kind == "brighten":
        return ImageEnhance.Brightness(image).enhance(1.3), "jpg", {"quality": 90}
    if kind == "caption":
        stamped = image.copy()
        draw = ImageDraw.Draw(stamped)
        band = max(12, height // 8)
        draw.rectangle((0, height - band, width, height), fill=(0, 0, 0))
        draw.text((6, height - band + 2), "holiday 2024  #memories", fill=(255, 255, 255))
        return stamped, "jpg", {"quality": 90}
    if kind == "reencode":
        return (image, "png", {}) if rng.random() < 0.5 else (image, "webp", {"quality": 80})
    raise ValueError(kind)


def make_set(folder: Path, photos: int, seed: int) -> dict[str, str]:
    """Write originals and copies under `folder`; returns path -> group name (each original's stem)."""
    rng = np.random.default_rng(seed)
    groups: dict[str, str] = {}
    sources = [(path.stem, Image.open(path).convert("RGB")) for path in sorted((REPO / "data" / "sample").glob("*.jpg"))]
    sources += [(f"scene{index:03d}", photo_like(rng)) for index in range(photos)]
    for name, image in sources:
        original = folder / "originals" / f"{name}.jpg"
        original.parent.mkdir(parents=True, exist_ok=True)
        image.save(original, quality=92)
        groups[str(original)] = name
        for kind in rng.choice(VARIANTS, size=2, replace=False):
            copy, extension, options = make_variant(image, str(kind), rng)
            path = folder / "copies" / f"{name}_{kind}.{extension}"
            path.parent.mkdir(parents=True, exist_ok=True)
            copy.save(path, **options)
            groups[str(path)] = name
    return groups


def pair_scores(shown: set[tuple[str, str]], truth: set[tuple[str, str]]) -> dict:
    hits = len(shown & truth)
    return {"precision": round(hits / len(shown), 3) if shown else None, "recall": round(hits / len(truth), 3),
            "shown_pairs": len(shown)}


def quality(args) -> dict:
    from indexer.store.library import Library
    from retrieval.duplicates import DuplicateItem, DuplicateOptions, confirm_by_hash, find_duplicates, group_pairs
    from retrieval.indexing import IndexRequest, index_library

    work = args.work
    truth_path = work / "groups.json"
    if not truth_path.exists():
        truth_path.parent.mkdir(parents=True, exist_ok=True)
        truth_path.write_text(json.dumps(make_set(work / "set", args.photos, args.seed)))
    groups = json.loads(truth_path.read_text())
    db = work / "index"
    if not (db / "mmsearch.db").exists():
        index_library(IndexRequest(db=db, roots=(str(work / "set"),), model=args.model, device="cpu"))
    members: dict[str, list[str]] = {}
    for path, name in groups.items():
        members.setdefault(name, []).append(path)
    truth = {tuple(sorted(pair)) for paths in members.values() for pair in combinations(paths, 2)}
    lowest = min(args.thresholds)
    with Library(db, create=False, read_only=True) as library:
        started = time.perf_counter()
        report = find_duplicates(library, DuplicateOptions(threshold=lowest, hash_distance=None))
        seconds = time.perf_counter() - started
        items = {item.id: item for group in report.groups for item in group.items}
        # every candidate pair again, with its score (the report keeps groups, not pairs)
        index = library.vectors_for_search()
        from retrieval.duplicates import range_pairs

        raw = []
        for a, b, scores in range_pairs(index, library.reads.iter_vectors(index.dim), lowest):
            raw.extend(zip(a.tolist(), b.tolist(), scores.tolist()))
        hits = library.reads.hits(sorted({v for pair in raw for v in pair[:2]}))
        item_of = {vector: DuplicateItem(h.item.id, h.item.path, h.item.width, h.item.height, h.item.size, h.item.mtime)
                   for vector, h in hits.items()}
        pairs = [(item_of[a].id, item_of[b].id, s) for a, b, s in raw]
        items = {item.id: item for item in item_of.values()}
    rows = []
    for threshold in args.thresholds:
        for hashed in (False, True):
            chosen = [pair for pair in pairs if pair[2] >= threshold]
            if hashed:
                chosen = confirm_by_hash(chosen, items, DuplicateOptions(threshold=threshold, hash_distance=args.hash_distance))
            shown = set()
            for group, _ in group_pairs(chosen):
                paths = sorted(items[member].path for member in group)
                shown |= set(combinations(paths, 2))
            rows.append({"threshold": threshold, "hash": args.hash_distance if hashed else None,
                         **pair_scores(shown, truth)})
    by_kind = {}
    chosen = confirm_by_hash([p for p in pairs if p[2] >= args.default_threshold], items,
                             DuplicateOptions(threshold=args.default_threshold, hash_distance=args.hash_distance))
    found = {tuple(sorted((items[a].path, items[b].path))) for group, _ in group_pairs(chosen)
             for a, b in combinations(group, 2)}
    for kind in VARIANTS:
        kind_pairs = {pair for pair in truth if any(f"_{kind}." in path for path in pair)}
        if kind_pairs:
            by_kind[kind] = round(len(kind_pairs & found) / len(kind_pairs), 3)
    return {"pictures": len(groups), "true_pairs": len(truth), "find_seconds_lowest_threshold": round(seconds, 2),
            "model": args.model, "rows": rows, "recall_by_copy_kind_at_default": by_kind,
            "default": {"threshold": args.default_threshold, "hash_distance": args.hash_distance}}


# --- 1M vectors ---------------------------------------------------------------------------
def speed(args) -> dict:
    from bench_search import ClipLikeMixture

    from indexer.store.vectors import VectorIndex, choose_index_spec, training_sample_size
    from retrieval.duplicates import range_pairs

    n, dim = args.vectors, 512
    cache = args.cache
    cache.mkdir(parents=True, exist_ok=True)
    base_path, index_path = cache / f"base-{n}.npy", cache / f"index-{n}.faiss"
    planted = max(1, n // 100)
    if not base_path.exists():
        rng = np.random.default_rng([args.seed, n])
        base = ClipLikeMixture.make(dim, args.seed).sample(n, rng)
        noise = rng.standard_normal((planted, dim), dtype=np.float32)
        noise *= 0.25 / np.sqrt(dim)  # |noise| ~0.25: cosine to the original ~0.97
        copies = base[:planted] + noise
        base[n - planted:] = copies / np.linalg.norm(copies, axis=1, keepdims=True)
        np.save(base_path, base)
    base = np.load(base_path, mmap_mode="r")
    spec = choose_index_spec(n)
    if not index_path.exists():
        started = time.perf_counter()
        sample = np.asarray(base[np.sort(np.random.default_rng(0).choice(n, training_sample_size(spec, n) or n, replace=False))])
        index = VectorIndex.build(dim, spec, ((np.arange(s, min(n, s + 20000)), np.asarray(base[s:s + 20000]))
                                              for s in range(0, n, 20000)), 1, train_vectors=sample)
        index.save(index_path)
        print(f"built {spec} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.build_only:
        return {"built": str(index_path)}
    index = VectorIndex.load(index_path)
    truth = {(i, n - planted + i) for i in range(planted)}
    rows = []
    for nprobe in args.nprobe:
        load = benchlib.loadavg() if hasattr(benchlib, "loadavg") else open("/proc/loadavg").read().split()[:3]
        started = time.perf_counter()
        found = 0
        planted_found = 0
        for a, b, _ in range_pairs(index, ((np.arange(s, min(n, s + 8192)), np.asarray(base[s:s + 8192]))
                                           for s in range(0, n, 8192)), args.threshold, nprobe):
            found += len(a)
            mask = (b >= n - planted) & (a < planted)
            planted_found += sum((x, y) in truth for x, y in zip(a[mask].tolist(), b[mask].tolist()))
        rows.append({"nprobe": nprobe, "seconds": round(time.perf_counter() - started, 1), "pairs": found,
                     "planted_recall": round(planted_found / planted, 4), "loadavg_before": load})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return {"vectors": n, "spec": spec, "threshold": args.threshold, "planted_pairs": planted, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mms-dups"))
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98])
    parser.add_argument("--default-threshold", type=float, default=0.90)
    parser.add_argument("--hash-distance", type=int, default=22)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mms-dups-1m"))
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threshold", type=float, default=0.90)
    args = parser.parse_args(argv)
    out = {"machine": benchlib.machine_line(), "date": benchlib.today(), "commit": benchlib.code_version(
        ("retrieval/duplicates.py", "indexer/media/perceptual_hash.py"))}
    if args.quality:
        out["quality"] = quality(args)
    if args.speed:
        out["speed"] = speed(args)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
