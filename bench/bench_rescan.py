"""How long a second `mmsearch index` takes on an unchanged folder (nothing to embed).

Writes N small generated PNGs (once), indexes them with a tiny random-weight model, then times
repeated runs over the unchanged folder as whole commands (process start and imports included).

    .venv/bin/python bench/bench_rescan.py --n 10000 --work /tmp/mms-rescan
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
    "seed": 0,
}


def make_images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / f"{i // 1000:03d}" / f"img{i:06d}.png"
        if path.exists():
            continue
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def run(args: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mms-rescan"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    images = args.work / "images"
    make_images(images, args.n)
    model = args.work / "tiny.json"
    model.write_text(json.dumps(TINY))
    db = args.work / f"db-{args.n}"
    command = [str(Path(sys.executable).parent / "mmsearch"), "index", str(images), "--db", str(db),
               "--model", str(model), "--json"]
    first_s, first = run(command)
    print(f"first run: {first['embedded']} embedded in {first_s:.1f} s wall")
    times = []
    for _ in range(args.repeats):
        seconds, summary = run(command)
        assert summary["embedded"] == 0 and summary["unchanged"] == args.n, summary
        times.append(seconds)
    print(f"unchanged re-run of {args.n} files: median {statistics.median(times):.2f} s wall "
          f"(min {min(times):.2f}, max {max(times):.2f}, {args.repeats} runs; in-run time {summary['seconds']:.2f} s)")


if __name__ == "__main__":
    main()
