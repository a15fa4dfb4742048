"""Every GPU figure of issue 4 in one run (< 5 minutes on one H200), printed as JSON.

1. model only: open_clip ViT-B-32 image tower, plain torch, bf16, batch 512, images/s (goal >= 25,000);
2. end to end: JPEG bytes -> torchvision.io.decode_jpeg(device='cuda') (nvjpeg) -> resize + normalise
   on the GPU -> tower, with pinned host buffers and a side stream so that reading/copying the next
   batch overlaps decode + compute of this one; 12-MP JPEGs (goal >= 600/s) and 640x480 (goal >= 5,000/s);
3. `mmsearch index` itself (indexer.pipeline.sync.index_folders on a CUDA model, so JPEGs go through
   indexer.media.gpu_jpeg): folders of distinct 12-MP and 640x480 JPEG files (a few base pictures, each
   copy made unique by a comment segment), read, hashed, header-parsed by the workers, decoded on
   the GPU, embedded and written to SQLite + FAISS; images/s over the whole run and over the embed
   phase, after a warm-up run; 12 MP with the GPU decoding every JPEG (`index_12mp_gpu_only`) and
   shared with the decode threads (`index_12mp`, --assist-megapixels 4), 640x480 with Python's
   GIL switch interval and with 0.5 ms (an experiment, not a product setting);
4. exact search with the product's indexer.store.gpu_search.TorchExactIndex: 10M x 512 fp16 vectors on
   the GPU, queries in batches of 1024 (goal >= 8,000 queries/s), recall@10 against a float32
   exact search on a sample.
Needs torch, torchvision, open_clip, numpy, PIL, and for 3. SQLAlchemy + faiss-cpu. Weights are
random (speed only).

    python bench/gpu_check.py               # on the GPU machine
    python bench/gpu_check.py --dry-run     # CPU, tiny sizes: checks the script itself
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: indexer, retrieval


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.lru_cache(maxsize=4)
def make_jpegs(count: int, size: tuple[int, int], seed: int = 0) -> tuple[bytes, ...]:
    """A few distinct photo-like JPEGs (gradient + shapes + noise), reused round-robin."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    width, height = size
    for _ in range(count):
        small = (max(1, width // 8), max(1, height // 8))
        base = rng.integers(0, 256, (small[1], small[0], 3), dtype=np.uint8)
        image = Image.fromarray(base).resize(size, Image.BILINEAR)
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            draw.ellipse([x0, y0, x0 + width // 6, y0 + height // 6], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 12, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return tuple(out)


def build_tower(arch: str, device, dtype):
    import open_clip

    model = open_clip.create_model(arch, pretrained=None)
    tower = model.visual.to(device=device, dtype=dtype).eval()
    del model
    return tower, int(tower.image_size[0] if isinstance(tower.image_size, (tuple, list)) else tower.image_size)


def model_only(tower, size: int, batch: int, seconds: float, device, dtype) -> dict:
    import torch

    pixels = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    with torch.inference_mode():
        for _ in range(3):
            tower(pixels)
        sync(device)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or done == 0:
            tower(pixels)
            done += batch
            if done % (batch * 8) == 0:
                sync(device)
        sync(device)
        elapsed = time.perf_counter() - started
    return {"images_per_s": round(done / elapsed, 1), "batch": batch, "images": done, "seconds": round(elapsed, 2)}


def end_to_end(tower, size: int, jpegs: list[bytes], total: int, batch: int, device, dtype) -> dict:
    """Host: bytes -> pinned uint8 tensors (a reader thread, bounded queue, so reading batch i+1
    overlaps batch i); GPU: nvJPEG decode (torchvision uploads the bytes), resize, normalise, tower."""
    import queue

    import torch
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg

    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device=device).view(1, 3, 1, 1)
    cuda = device.type == "cuda"
    host_batches: queue.Queue = queue.Queue(maxsize=4)

    def reader() -> None:  # stands in for file reads: bytes into pinned buffers
        for start in range(0, total, batch):
            items = [jpegs[(start + offset) % len(jpegs)] for offset in range(min(batch, total - start))]
            tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in items]
            host_batches.put([t.pin_memory() for t in tensors] if cuda else tensors)
        host_batches.put(None)

    thread = threading.Thread(target=reader, daemon=True)
    started = time.perf_counter()
    thread.start()
    done = 0
    with torch.inference_mode():
        while (pending := host_batches.get()) is not None:
            # torchvision uploads the (pinned) host bytes itself and decodes the batch with nvJPEG
            decoded = decode_jpeg(pending, device=device) if cuda else [decode_jpeg(t) for t in pending]
            resized = torch.cat([F.interpolate(image[None].float(), size=(size, size), mode="bilinear",
                                               antialias=True, align_corners=False) for image in decoded])
            pixels = ((resized / 255.0 - mean) / std).to(dtype)
            features = tower(pixels)
            features = F.normalize(features.float(), dim=-1)
            done += len(decoded)
    sync(device)
    elapsed = time.perf_counter() - started
    return {"images_per_s": round(done / elapsed, 1), "images": done, "batch": batch, "seconds": round(elapsed, 2)}


def unique_copies(jpegs: list[bytes], count: int, folder, tag: str) -> list[str]:
    """`count` distinct JPEG files: the bases round-robin, each with its own COM segment after SOI."""
    import os

    os.makedirs(folder, exist_ok=True)
    paths = []
    for n in range(count):
        base = jpegs[n % len(jpegs)]
        comment = f"mmsearch gpu_check {tag} {n}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        path = os.path.join(folder, f"{tag}_{n:06d}.jpg")
        with open(path, "wb") as handle:
            handle.write(base[:2] + segment + base[2:])
        paths.append(path)
    return paths


@contextlib.contextmanager
def timed_calls():
    """Seconds spent in GpuJpegEmbedder.embed and ItemStore.write_batch while the block runs."""
    from indexer.media.gpu_jpeg import GpuJpegEmbedder
    from indexer.store.items import ItemStore

    spent: dict[str, float] = {}
    originals = {"embed": (GpuJpegEmbedder, "embed"), "write": (ItemStore, "write_batch")}
    saved = {name: getattr(owner, attr) for name, (owner, attr) in originals.items()}

    def timer(name, function):
        def wrapped(*args, **kwargs):
            started = time.perf_counter()
            if name == "embed":  # JPEGs handed to the GPU decoder (the rest were decoded by the threads)
                spent["gpu_decoded"] = spent.get("gpu_decoded", 0) + len(args[1])
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
        return wrapped

    for name, (owner, attr) in originals.items():
        setattr(owner, attr, timer(name, saved[name]))
    try:
        yield spent
    finally:
        for name, (owner, attr) in originals.items():
            setattr(owner, attr, saved[name])


def product_index(model, folder, db, batch: int, workers: int, cpu_assist: float | None = 4.0) -> dict:
    """index_folders on `folder` into a new index at `db`; whole-run and embed-phase images/s."""
    from indexer.pipeline.embed import PipelineConfig
    from indexer.pipeline.sync import IndexConfig, index_folders
    from indexer.store.library import Library
    from retrieval.media import MediaOptions, media_for

    marks = {}

    def progress(event) -> None:
        if event.phase == "embed" and "embed_start" not in marks:
            marks["embed_start"] = time.perf_counter()
        if event.phase == "finish":
            marks["embed_end"] = time.perf_counter()

    config = IndexConfig(roots=(str(folder),), pipeline=PipelineConfig(batch_size=batch, workers=workers))
    media = media_for(model, MediaOptions(assist_megapixels=cpu_assist))
    started = time.perf_counter()
    failures = []
    with Library(db) as library, library.lock(), timed_calls() as spent:
        report = index_folders(library, media, config, on_progress=progress,
                               on_file_error=lambda path, reason: failures.append(f"{path}: {reason}"))
    wall = time.perf_counter() - started
    embed_s = marks.get("embed_end", started) - marks.get("embed_start", started)
    return {"images_per_s": round(report.embedded / wall, 1),
            "embed_phase_images_per_s": round(report.embedded / embed_s, 1) if embed_s > 0 else None,
            "embedded": report.embedded, "failed": report.failed, "wall_s": round(wall, 2),
            "embed_s": round(embed_s, 2), "batch": batch, "workers": workers, "first_failures": failures[:3],
            "cpu_assist_megapixels": cpu_assist,
            "cpu_decoded_share": round(1 - spent.get("gpu_decoded", 0) / report.embedded, 3) if report.embedded else None,
            # where the time went: GPU decode + tower (main thread, synchronous), database writes (writer thread)
            "gpu_embed_s": round(spent.get("embed", 0.0), 2), "db_write_s": round(spent.get("write", 0.0), 2)}


def exact_search(n: int, dim: int, n_queries: int, query_batch: int, k: int, device) -> dict:
    """indexer.store.gpu_search.TorchExactIndex over n random unit vectors made on the device."""
    import torch

    from indexer.store.gpu_search import TorchExactIndex

    generator = torch.Generator(device=device).manual_seed(0)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    started = time.perf_counter()
    base = torch.empty(n, dim, device=device, dtype=dtype)
    step = 1 << 20
    for start in range(0, n, step):
        block = torch.randn(min(step, n - start), dim, device=device, generator=generator)
        base[start:start + len(block)] = torch.nn.functional.normalize(block, dim=-1).to(dtype)
    index = TorchExactIndex(np.arange(n, dtype=np.int64), base, device=str(device), dtype=dtype)
    queries = torch.nn.functional.normalize(torch.randn(n_queries, dim, device=device, generator=generator), dim=-1)
    sync(device)
    fill_s = time.perf_counter() - started

    with torch.inference_mode():
        on_device = queries.to(dtype)
        index.search_tensor(on_device[:query_batch], k)
        sync(device)
        started = time.perf_counter()
        results = [index.search_tensor(on_device[start:start + query_batch], k)
                   for start in range(0, n_queries, query_batch)]
        sync(device)
        elapsed = time.perf_counter() - started
        # the public numpy API (host queries in, host ids out), one batch
        host = queries[:query_batch].float().cpu().numpy()
        started = time.perf_counter()
        index.search(host, k)
        api_s = time.perf_counter() - started
        # check: float32 exact top-k on the first 64 queries
        sample = queries[:64].float()
        truth = torch.cat([sample @ base[start:start + step].float().T for start in range(0, n, step)], 1).topk(k, dim=1).indices
        found = results[0][1][:64]
        recall = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found.cpu(), truth.cpu())]))
    return {"queries_per_s": round(n_queries / elapsed, 1), "vectors": n, "dim": dim, "query_batch": query_batch,
            "queries": n_queries, "seconds": round(elapsed, 3), "fill_s": round(fill_s, 1),
            "api_batch_queries_per_s": round(query_batch / api_s, 1), "recall_vs_fp32": round(recall, 3)}


def stage_times(model, device, dry: bool, skip_12mp: bool = False) -> dict:
    """Median seconds per batch of each stage of indexer.media.gpu_jpeg: decode, preprocess (draft and
    exact), tower; for 256 640x480 and 64 12-MP JPEGs."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from indexer.media.gpu_jpeg import pixels_from_decoded

    def median_s(function, rounds: int = 5) -> float:
        function()
        sync(device)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            function()
            sync(device)
            times.append(time.perf_counter() - started)
        return round(float(np.median(times)), 4)

    out = {}
    for name, size, batch in (("640x480", (640, 480), 256), ("12mp", (4000, 3000), 64)):
        if skip_12mp and name == "12mp":
            continue
        if dry:
            size, batch = (size[0] // 10, size[1] // 10), 4
        blobs = [make_jpegs(16 if not dry else 2, size)[n % (16 if not dry else 2)] for n in range(batch)]
        host = [torch.frombuffer(blob, dtype=torch.uint8) for blob in blobs]
        decoded = decode_jpeg(host, mode=ImageReadMode.RGB, device=device)
        pixels = pixels_from_decoded(decoded, [1] * batch, model.preprocess, draft=True)
        stages = {"decode": median_s(lambda h=host: decode_jpeg(h, mode=ImageReadMode.RGB, device=device)),
                  "preprocess_draft": median_s(lambda d=decoded, b=batch: pixels_from_decoded(d, [1] * b, model.preprocess,
                                                                                              draft=True)),
                  "preprocess_exact": median_s(lambda d=decoded, b=batch: pixels_from_decoded(d, [1] * b, model.preprocess,
                                                                                              draft=False)),
                  "tower": median_s(lambda p=pixels: model.image.embed_tensor(p))}
        out[name] = {"batch": batch, "seconds_per_batch": stages,
                     "images_per_s_if_serial": round(
                         batch / (stages["decode"] + stages["preprocess_draft"] + stages["tower"]), 1)}
    return out


def run_product_index(args, dry: bool, device, report: dict) -> dict:
    """mmsearch index through the library on folders of 12-MP and 640x480 JPEG files."""
    import os
    import shutil

    from retrieval.models.encoders import load_model

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    config_path = work / f"{args.arch}-random.json"
    work.mkdir(parents=True)
    import open_clip

    config_path.write_text(json.dumps({**open_clip.get_model_config(args.arch), "seed": 0}))
    model = load_model(str(config_path), device=str(device))
    model.image  # noqa: B018 - build the tower before timing
    workers = args.workers or os.cpu_count() or 1
    out = {"workers": workers, "cpu_count": os.cpu_count()}
    try:
        out["stages"] = stage_times(model, device, dry, args.skip_12mp)
        log(f"stages: {out['stages']}")
    except Exception as exc:  # noqa: BLE001 - a diagnostic; the runs below still count
        out["stages"] = {"error": repr(exc)}
    warm = unique_copies(make_jpegs(2, (640, 480), seed=7), 8 if dry else 256, work / "warm", "warm")
    product_index(model, Path(warm[0]).parent, work / "db-warm", 4 if dry else 64, workers)
    # 12 MP twice on the same files: the GPU decoding every JPEG, then shared with idle decode threads
    # (--assist-megapixels; in the dry run the files are 0.12 MP, so the limit is scaled down too).
    # 640x480 twice: then with a 0.5 ms GIL switch interval (Python's default is 5 ms), an experiment:
    # the main thread re-takes the GIL after each of the tower's ~200 torch ops, behind 16 decode threads
    default_switch = sys.getswitchinterval()
    for name, size, count, batch, variants in (
            ("index_12mp", (4000, 3000), args.files_12mp, 64, (("_gpu_only", None, None), ("", 4.0, None))),
            ("index_640x480", (640, 480), args.files_small, 256, (("", 4.0, None), ("_switch_0.5ms", 4.0, 0.0005)))):
        if args.skip_12mp and name == "index_12mp":
            continue
        if dry:
            size, count, batch = (size[0] // 10, size[1] // 10), 12, 4
            variants = tuple((suffix, None if assist is None else assist / 100, switch)
                             for suffix, assist, switch in variants)
        started = time.perf_counter()
        folder = work / name
        paths = unique_copies(make_jpegs(16 if not dry else 2, size), count, folder, name)
        made_s = time.perf_counter() - started
        for suffix, assist, switch in variants:
            key = name + suffix
            sys.setswitchinterval(switch or default_switch)
            try:
                out[key] = product_index(model, folder, work / f"db-{key}", batch, workers, assist)
            finally:
                sys.setswitchinterval(default_switch)
            out[key].update({"files": len(paths), "make_files_s": round(made_s, 1), "switch_interval_s": switch,
                             "jpeg_kb": round(sum(os.path.getsize(p) for p in paths[:16]) / min(16, len(paths)) / 1024)})
            log(f"mmsearch {key}: {out[key]}")
        shutil.rmtree(folder, ignore_errors=True)
    out["gpu_decode"] = str(device).startswith("cuda")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--seconds", type=float, default=10.0, help="model-only timing window")
    parser.add_argument("--work", default="/tmp/mms-gpu-check", help="folder for the generated JPEG files and indexes")
    parser.add_argument("--files-12mp", type=int, default=2000)
    parser.add_argument("--files-small", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=None, help="decode workers for mmsearch index (default: CPU count)")
    parser.add_argument("--skip-index", action="store_true", help="leave out the mmsearch index runs")
    parser.add_argument("--only-index", action="store_true", help="only the mmsearch index runs (and their stage times)")
    parser.add_argument("--skip-12mp", action="store_true", help="leave out every 12-megapixel run")
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for name in ("indexer.media.gpu_jpeg", "indexer.pipeline.sync"):  # says whether the GPU decode path ran, and any fallbacks
        logging.getLogger(name).setLevel(logging.INFO)

    import torch

    dry = args.dry_run
    device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    if not dry and device.type != "cuda":
        raise SystemExit("no GPU: run with --dry-run")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "dry_run": dry, "arch": args.arch, "dtype": str(dtype).replace("torch.", "")}
    import PIL

    from indexer.media.gpu_jpeg import marker_reader_matches_pillow

    # JPEG headers are read without Pillow only with Pillow >= 13 (carry its wheel if the machine has an older one)
    report.update({"pillow": PIL.__version__, "jpeg_marker_reader": marker_reader_matches_pillow()})
    started = time.perf_counter()
    tower, size = build_tower(args.arch, device, dtype)
    log(f"tower built ({size}px) in {time.perf_counter() - started:.1f} s")
    if not args.only_index:
        report["model_only"] = model_only(tower, size, 4 if dry else 512, 0.5 if dry else args.seconds, device, dtype)
        report["model_only"]["goal"] = 25_000
        log(f"model only: {report['model_only']}")
    for name, image_size, total, batch, goal in (("e2e_12mp", (4000, 3000), 6 if dry else 6000, 3 if dry else 64, 600),
                                                  ("e2e_640x480", (640, 480), 8 if dry else 60000, 4 if dry else 256, 5000)):
        if args.skip_12mp and name == "e2e_12mp":
            continue
        jpegs = make_jpegs(2 if dry else 16, (400, 300) if dry and name == "e2e_12mp" else image_size)
        end_to_end(tower, size, jpegs, min(total, batch * 2), batch, device, dtype)  # warm-up
        report[name] = end_to_end(tower, size, jpegs, total, batch, device, dtype)
        report[name].update({"goal": goal, "jpeg_kb": round(np.mean([len(j) for j in jpegs]) / 1024)})
        log(f"{name}: {report[name]}")
    del tower
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if not args.skip_index:
        report["product_index"] = run_product_index(args, dry, device, report)
    if not args.only_index:
        report["exact_search"] = exact_search(20_000 if dry else 10_000_000, 512, 64 if dry else 16_384,
                                              32 if dry else 1024, 10, device)
        report["exact_search"]["goal"] = 8_000
        log(f"exact search: {report['exact_search']}")
    goals = {"model_only": ("images_per_s", 25_000), "e2e_12mp": ("images_per_s", 600),
             "e2e_640x480": ("images_per_s", 5_000), "exact_search": ("queries_per_s", 8_000)}
    report["met"] = {name: report[name][key] >= goal for name, (key, goal) in goals.items() if name in report}
    for name, goal in (("index_12mp", 600), ("index_640x480", 5_000)):
        if name in report.get("product_index", {}):
            report["met"][f"mmsearch_{name}"] = report["product_index"][name]["images_per_s"] >= goal
    report["total_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
