"""The image tower's one-time ONNX export, timed: now (ViT writer or the tracer) beside an older version.

Each round times, per variant, loading the tower's weights and `export_image_tower` up to the chosen
int8 graph on disk, variants interleaved, in one process; prints the seconds, medians and each step's
seconds (from the export's metadata). --before names a commit whose `retrieval/models/fast_image.py`
is run as the "before" row (read with `git show`, imported from a temporary folder; its export
includes its own int8 check). Hold the bench lock around it:

    HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/perf-hf flock /tmp/mms-bench.lock .venv/bin/python bench/bench_image_export.py \\
        ViT-B-32-256:datacomp_s34b_b86k --before 19fa804 --rounds 2
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_before(commit: str, folder: Path):
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:retrieval/models/fast_image.py"],
                            check=True, capture_output=True, text=True).stdout
    path = folder / "fast_image_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("fast_image_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", help="a commit whose fast_image.py is the 'before' row")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from retrieval.models import fast_image, vit_onnx
    from retrieval.models.encoders import load_model
    from retrieval.models.towers import IMAGE, load_tower

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    size = int(model.card.preprocess.image_size)
    real_unsupported = vit_onnx.unsupported
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        before = load_before(args.before, work) if args.before else None
        variants = ([f"before ({args.before})"] if before else []) + ["vit_onnx", "torch.onnx.export"]
        times, steps = {name: [] for name in variants}, {}
        load = [open("/proc/loadavg").read().split()[:3]]
        for _ in range(args.rounds):
            for name in variants:
                vit_onnx.unsupported = real_unsupported if name == "vit_onnx" else (lambda tower: "forced: the tracer")
                folder = work / "export"
                shutil.rmtree(folder, ignore_errors=True)
                started = time.perf_counter()
                tower = load_tower(model.card, IMAGE)
                (before if name.startswith("before") else fast_image).export_image_tower(tower, size, folder, "x")
                times[name].append(round(time.perf_counter() - started, 2))
                if not name.startswith("before"):
                    steps.setdefault(name, []).append(fast_image.exported_meta(folder)["int8"]["seconds"])
        vit_onnx.unsupported = real_unsupported
        load.append(open("/proc/loadavg").read().split()[:3])
    print(json.dumps({"model": args.model, "rounds": args.rounds, "loadavg_start_end": load, "seconds": times,
                      "median_s": {name: statistics.median(values) for name, values in times.items()},
                      "steps_s": steps}, indent=1))


if __name__ == "__main__":
    main()
