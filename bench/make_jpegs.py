"""Write N generated, photo-like JPEGs for indexing benchmarks.

Each image is smooth colour gradients + soft-edged shapes + texture (composed at quarter size),
then hard-edged shapes, thin lines and fine stripes drawn at full size, then sensor-like noise, so JPEG sizes
come out like real photos (about 2-4 MB at 12 MP, quality 90) rather than the
tiny files flat synthetic images give. Deterministic: image i depends only on (seed, i). Files that
already exist are skipped, so a second call is free.

    python bench/make_jpegs.py /tmp/mms-core-bench/jpegs --n 500 --megapixels 12
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ASPECT = 4 / 3  # width / height, like most camera sensors (4000 x 3000 at 12 MP)


def size_for(megapixels: float) -> tuple[int, int]:
    height = int(round(math.sqrt(megapixels * 1e6 / ASPECT)))
    width = int(round(height * ASPECT))
    return width, height


def photo_like(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """One generated photo-like RGB image: soft background and shapes, sharp detail, noise."""
    # The scene (gradient, shapes, texture) is composed at quarter size, then upscaled once:
    # soft edges like a lens, and cheap. Only the noise is drawn at full size.
    small_w, small_h = max(1, width // 4), max(1, height // 4)
    # 1. smooth background: two-axis colour gradient plus a low-frequency wave
    ys = np.linspace(0.0, 1.0, small_h, dtype=np.float32)[:, None, None]
    xs = np.linspace(0.0, 1.0, small_w, dtype=np.float32)[None, :, None]
    top_left, top_right, bottom = (rng.uniform(20, 235, 3).astype(np.float32) for _ in range(3))
    base = top_left * (1 - xs) * (1 - ys) + top_right * xs * (1 - ys) + bottom * ys
    phase = rng.uniform(0, 2 * np.pi, 2)
    freq = rng.uniform(1.0, 4.0, 2)
    wave = 18.0 * np.sin(2 * np.pi * freq[0] * xs + phase[0]) * np.cos(2 * np.pi * freq[1] * ys + phase[1])
    scene = Image.fromarray(np.clip(base + wave, 0, 255).astype(np.uint8), "RGB")

    # 2. shapes (ellipses, rectangles, polygons), semi-opaque, with blurred (out-of-focus) edges
    for _ in range(int(rng.integers(12, 30))):
        mask = Image.new("L", (small_w, small_h), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy = rng.uniform(0, small_w), rng.uniform(0, small_h)
        rx, ry = rng.uniform(0.03, 0.3) * small_w, rng.uniform(0.03, 0.3) * small_h
        kind = rng.integers(0, 3)
        opacity = int(rng.integers(120, 256))
        if kind == 0:
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=opacity)
        elif kind == 1:
            draw.rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=opacity)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 8))))
            draw.polygon([(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles], fill=opacity)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        scene.paste(colour, (0, 0, small_w, small_h), mask=mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 3.0))))

    # 3. mid-frequency texture (like foliage or fabric), then upscale to full size
    pixels = np.asarray(scene, dtype=np.float32)
    texture = rng.standard_normal((small_h, small_w), dtype=np.float32)
    texture = np.asarray(Image.fromarray(np.clip(texture * 40 + 128, 0, 255).astype(np.uint8), "L")
                         .filter(ImageFilter.GaussianBlur(0.7)), dtype=np.float32) - 128.0
    pixels += texture[:, :, None] * rng.uniform(0.4, 0.9)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").resize((width, height), Image.Resampling.BICUBIC)

    # 4. in-focus detail drawn at full size: hard-edged shapes, thin lines and a patch of fine
    #    stripes (fabric, railings), the high frequencies a draft (DCT-scaled) decode drops
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 10))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.02, 0.12) * width
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
        draw.polygon([(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles],
                     fill=tuple(int(c) for c in rng.integers(0, 256, 3)),
                     outline=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 6)))
    for _ in range(int(rng.integers(10, 40))):
        x0, y0, x1, y1 = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0, height)
        draw.line((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))
    pixels = np.array(image, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        patch_w, patch_h = int(rng.uniform(0.08, 0.25) * width), int(rng.uniform(0.08, 0.25) * height)
        left, top = int(rng.integers(0, width - patch_w)), int(rng.integers(0, height - patch_h))
        period, angle = rng.uniform(3.0, 12.0), rng.uniform(0, np.pi)
        py, px = np.mgrid[0:patch_h, 0:patch_w].astype(np.float32)
        stripes = np.sin(2 * np.pi * (px * np.cos(angle) + py * np.sin(angle)) / period)
        pixels[top:top + patch_h, left:left + patch_w] += (stripes * rng.uniform(25, 60))[:, :, None]

    # 5. per-pixel noise, like a sensor at moderate ISO
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(rng.uniform(3.5, 6.0))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_one(folder: str, index: int, seed: int, megapixels: float, quality: int) -> tuple[str, int, bool]:
    path = Path(folder) / f"img_{index:05d}.jpg"
    if path.exists():
        return str(path), path.stat().st_size, False
    rng = np.random.default_rng([seed, index])
    image = photo_like(*size_for(megapixels), rng)
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, "JPEG", quality=quality)
    os.replace(tmp, path)
    return str(path), path.stat().st_size, True


def make_jpegs(folder: Path, n: int, *, megapixels: float = 12.0, quality: int = 90, seed: int = 0,
               workers: int | None = None) -> list[tuple[str, int, bool]]:
    """Make sure folder holds img_00000.jpg .. img_{n-1}.jpg; returns (path, bytes, written) each."""
    folder.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(write_one, str(folder), i, seed, megapixels, quality) for i in range(n)]
        return [future.result() for future in futures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    results = make_jpegs(args.folder, args.n, megapixels=args.megapixels, quality=args.quality,
                         seed=args.seed, workers=args.workers)
    seconds = time.perf_counter() - started
    sizes = np.array([size for _, size, _ in results]) / 1e6
    written = sum(1 for *_, new in results if new)
    width, height = size_for(args.megapixels)
    print(f"{args.folder}: {len(results)} JPEGs {width}x{height} q{args.quality} "
          f"({written} written, {len(results) - written} already there) in {seconds:.1f} s")
    if len(sizes):
        print(f"file size MB: mean {sizes.mean():.2f}  min {sizes.min():.2f}  max {sizes.max():.2f}  "
              f"total {sizes.sum():.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
