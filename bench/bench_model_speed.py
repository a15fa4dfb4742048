"""Image tower speed of two or more models side by side, on the same decoded images.

Decodes the JPEGs of --folder (default data/sample: 160 px emoji, what the README's demo indexes)
as `mmsearch index` does, then embeds them with each model at each --precisions, interleaved
rounds, and prints the median images/s per model and precision. Used to check that a retrained
bundled model did not slow indexing: pass the old and the new model folder.

    .venv/bin/python bench/bench_model_speed.py /tmp/old_bundled bundled --precisions fp32,onnx-int8
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
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model names or folders")
    parser.add_argument("--folder", type=Path, default=REPO / "data" / "sample")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,onnx-int8")
    args = parser.parse_args()

    import torch

    from indexer.media.image import DecodeOptions, decode_image, read_file
    from retrieval.models.encoders import load_model

    torch.set_num_threads(args.threads)
    files = sorted(path for path in args.folder.iterdir() if path.suffix.lower() in (".jpg", ".jpeg"))[:args.batch]
    encoders, pixels = {}, {}
    with tempfile.TemporaryDirectory() as cache:
        for index, name in enumerate(args.models):
            for precision in args.precisions.split(","):
                model = load_model(name, device="cpu")
                if precision != "fp32":
                    model.image_precision = precision
                    model.image_cache_dir = Path(cache) / f"{index}-{precision}"
                key = f"{name} [{precision}]"
                encoders[key] = model.image
                pixels[key] = np.stack([decode_image(read_file(str(path)), model.preprocess, DecodeOptions()).pixels
                                        for path in files])
                model.image.embed_pixels(pixels[key])  # warm-up (and the one-time ONNX export)
        times = {key: [] for key in encoders}
        for _ in range(args.rounds):
            for key, encoder in encoders.items():
                started = time.perf_counter()
                encoder.embed_pixels(pixels[key])
                times[key].append(time.perf_counter() - started)
    print(json.dumps({"images": len(files), "rounds": args.rounds, "threads": args.threads, "results": {
        key: {"images_per_s": round(len(files) / statistics.median(values), 1),
              "min_s": round(min(values), 4), "max_s": round(max(values), 4)}
        for key, values in times.items()}}, indent=2))


if __name__ == "__main__":
    main()
