"""Every GPU figure of issue 4 in one run (< 5 minutes on one H200), printed as JSON.

1. model only: open_clip ViT-B-32 image tower, plain torch, bf16, batch 512, images/s (goal >= 25,000);
2. end to end: JPEG bytes -> torchvision.io.decode_jpeg(device='cuda') (nvjpeg) -> resize + normalise
   on the GPU -> tower, with pinned host buffers and a side stream so that reading/copying the next
   batch overlaps decode + compute of this one; 12-MP JPEGs (goal >= 600/s) and 640x480 (goal >= 5,000/s);
3. exact search: 10M x 512 fp16 vectors on the GPU, queries in batches of 1024, chunked matmul +
   topk (k=10) merged across chunks; queries/s (goal >= 8,000), checked against a float32 exact
   search on a sample.
Needs only torch, torchvision, open_clip, numpy and PIL. Weights are random (speed only).

    python bench/gpu_check.py               # on the GPU machine
    python bench/gpu_check.py --dry-run     # CPU, tiny sizes: checks the script itself
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import threading
import time

import numpy as np


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_jpegs(count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
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
    return out


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
    """Host: bytes -> pinned uint8 tensors (a reader thread, bounded queue); GPU: nvjpeg decode,
    resize, normalise, tower. The copy of batch i+1 runs on a side stream while batch i computes."""
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

    copy_stream = torch.cuda.Stream(device) if cuda else None
    thread = threading.Thread(target=reader, daemon=True)
    started = time.perf_counter()
    thread.start()
    done = 0

    def upload(tensors):
        if not cuda:
            return tensors
        with torch.cuda.stream(copy_stream):
            return [t.to(device, non_blocking=True) for t in tensors]

    pending = host_batches.get()
    on_device = upload(pending) if pending is not None else None
    with torch.inference_mode():
        while on_device is not None:
            if cuda:
                torch.cuda.current_stream(device).wait_stream(copy_stream)
            following = host_batches.get()
            next_on_device = upload(following) if following is not None else None  # overlaps the work below
            decoded = decode_jpeg(on_device, device=device) if cuda else [decode_jpeg(t) for t in on_device]
            resized = torch.cat([F.interpolate(image[None].float(), size=(size, size), mode="bilinear",
                                               antialias=True, align_corners=False) for image in decoded])
            pixels = ((resized / 255.0 - mean) / std).to(dtype)
            features = tower(pixels)
            features = F.normalize(features.float(), dim=-1)
            done += len(decoded)
            on_device = next_on_device
    sync(device)
    elapsed = time.perf_counter() - started
    return {"images_per_s": round(done / elapsed, 1), "images": done, "batch": batch, "seconds": round(elapsed, 2)}


def exact_search(n: int, dim: int, n_queries: int, query_batch: int, chunk: int, k: int, device) -> dict:
    import torch

    generator = torch.Generator(device=device).manual_seed(0)
    started = time.perf_counter()
    base = torch.empty(n, dim, device=device, dtype=torch.float16)
    for start in range(0, n, chunk):
        block = torch.randn(min(chunk, n - start), dim, device=device, generator=generator)
        base[start:start + len(block)] = torch.nn.functional.normalize(block, dim=-1).half()
    queries = torch.nn.functional.normalize(torch.randn(n_queries, dim, device=device, generator=generator), dim=-1).half()
    sync(device)
    fill_s = time.perf_counter() - started

    def search(batch):
        best_scores = best_ids = None
        for start in range(0, n, chunk):
            scores = batch @ base[start:start + chunk].T
            top_scores, top_ids = scores.topk(k, dim=1)
            top_ids += start
            if best_scores is None:
                best_scores, best_ids = top_scores, top_ids
            else:
                merged = torch.cat([best_scores, top_scores], 1)
                order = merged.topk(k, dim=1).indices
                best_scores = merged.gather(1, order)
                best_ids = torch.cat([best_ids, top_ids], 1).gather(1, order)
        return best_scores, best_ids

    with torch.inference_mode():
        search(queries[:query_batch])
        sync(device)
        started = time.perf_counter()
        results = [search(queries[start:start + query_batch]) for start in range(0, n_queries, query_batch)]
        sync(device)
        elapsed = time.perf_counter() - started
        # check: float32 exact top-k on the first 16 queries
        sample = queries[:16].float()
        truth = torch.cat([(sample @ base[start:start + chunk].float().T) for start in range(0, n, chunk)], 1).topk(k, dim=1).indices
        found = results[0][1][:16]
        recall = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found.cpu(), truth.cpu())]))
    return {"queries_per_s": round(n_queries / elapsed, 1), "vectors": n, "dim": dim, "query_batch": query_batch,
            "chunk": chunk, "queries": n_queries, "seconds": round(elapsed, 3), "fill_s": round(fill_s, 1),
            "recall_vs_fp32": round(recall, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--seconds", type=float, default=20.0, help="model-only timing window")
    args = parser.parse_args()

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
    started = time.perf_counter()
    tower, size = build_tower(args.arch, device, dtype)
    log(f"tower built ({size}px) in {time.perf_counter() - started:.1f} s")
    report["model_only"] = model_only(tower, size, 4 if dry else 512, 0.5 if dry else args.seconds, device, dtype)
    report["model_only"]["goal"] = 25_000
    log(f"model only: {report['model_only']}")
    for name, image_size, total, batch, goal in (("e2e_12mp", (4000, 3000), 6 if dry else 6000, 3 if dry else 64, 600),
                                                  ("e2e_640x480", (640, 480), 8 if dry else 60000, 4 if dry else 256, 5000)):
        jpegs = make_jpegs(2 if dry else 16, (400, 300) if dry and name == "e2e_12mp" else image_size)
        end_to_end(tower, size, jpegs, min(total, batch * 2), batch, device, dtype)  # warm-up
        report[name] = end_to_end(tower, size, jpegs, total, batch, device, dtype)
        report[name].update({"goal": goal, "jpeg_kb": round(np.mean([len(j) for j in jpegs]) / 1024)})
        log(f"{name}: {report[name]}")
    del tower
    if device.type == "cuda":
        torch.cuda.empty_cache()
    report["exact_search"] = exact_search(20_000 if dry else 10_000_000, 512, 64 if dry else 16_384, 32 if dry else 1024,
                                          8_192 if dry else 2_000_000, 10, device)
    report["exact_search"]["goal"] = 8_000
    log(f"exact search: {report['exact_search']}")
    report["met"] = {"model_only": report["model_only"]["images_per_s"] >= 25_000,
                     "e2e_12mp": report["e2e_12mp"]["images_per_s"] >= 600,
                     "e2e_640x480": report["e2e_640x480"]["images_per_s"] >= 5_000,
                     "exact_search": report["exact_search"]["queries_per_s"] >= 8_000}
    report["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
