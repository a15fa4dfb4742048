"""Image tower speed and drift per CPU precision (retrieval.models.fast_image), side by side.

Decodes --batch JPEGs from --folder as `mmsearch index` does, embeds them with the plain fp32 torch
tower and with each precision (interleaved rounds, median), and prints images/s, the speed-up over
fp32 and the least / mean cosine to the fp32 vectors. ONNX exports go to a temporary folder (the
one-time export is timed apart: `export_s`). Each row names the precision that ran (`ran`: an
`onnx-int8` whose int8 graph failed its check runs `onnx`) and, for onnx-int8, the int8 recipe
chosen. Random-weight models (`fake_hub.py`, `*.json` configs) may quantise differently from trained ones; `bundled` is trained.

    HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/perf-hf .venv/bin/python bench/bench_image_encoder.py ViT-B-32-256:datacomp_s34b_b86k
    .venv/bin/python bench/bench_image_encoder.py bundled --precisions int8,onnx,onnx-int8
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/perf-jpegs"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precisions", default="bf16,int8,onnx,onnx-int8")
    args = parser.parse_args()

    import torch

    from indexer.media.files import read_file
    from indexer.media.image import DecodeOptions, decode_image
    from retrieval.models.encoders import load_model
    from retrieval.models.fast_image import exported_meta

    torch.set_num_threads(2)
    reference = load_model(args.model, device="cpu")
    files = sorted(path for path in args.folder.iterdir() if path.suffix.lower() in (".jpg", ".jpeg"))[:args.batch]
    pixels = np.stack([decode_image(read_file(str(path)), reference.preprocess, DecodeOptions()).pixels for path in files])

    encoders = {"fp32": reference.image}
    export_s, recipe = {}, None
    with tempfile.TemporaryDirectory() as cache:
        for precision in args.precisions.split(","):
            model = load_model(args.model, device="cpu", image_precision=precision,
                               image_export_dir=Path(cache) / "image_encoder")
            started = time.perf_counter()
            encoders[precision] = model.image
            export_s[precision] = round(time.perf_counter() - started, 2)
            if precision == "onnx-int8":
                recipe = exported_meta(Path(cache) / "image_encoder").get("int8", {}).get("recipe")
        plain = reference.image.embed_pixels(pixels)
        drift = {}
        for name, encoder in encoders.items():
            cosines = (encoder.embed_pixels(pixels) * plain).sum(axis=1)  # also the warm-up
            drift[name] = (float(cosines.min()), float(cosines.mean()))
        times = {name: [] for name in encoders}
        for _ in range(args.rounds):
            for name, encoder in encoders.items():
                started = time.perf_counter()
                encoder.embed_pixels(pixels)
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["fp32"])
    print(json.dumps({"model": args.model, "images": len(files), "rounds": args.rounds, "threads": 2,
                      "loadavg": open("/proc/loadavg").read().split()[:3], "int8_recipe": recipe,
                      "build_s (export included)": export_s, "results": {
        name: {"ran": getattr(encoders[name], "precision", name),
               "images_per_s": round(len(files) / statistics.median(values), 2),
               "vs_fp32": round(base / statistics.median(values), 2),
               "cosine_min": round(drift[name][0], 5), "cosine_mean": round(drift[name][1], 5)}
        for name, values in times.items()}}, indent=2))


if __name__ == "__main__":
    main()
