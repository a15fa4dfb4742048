"""rclip vs mmsearch indexing the same folder with the same architecture, side by side.

Both tools run ViT-B-32-256 with the SAME random weights, written by /work/shared/bench/fake_hub.py
for open_clip's HF cache (mmsearch) and as rclip's ONNX files: speed only, the vectors mean nothing.
Each round indexes the folder from scratch with every tool in turn (interleaved, so a busy neighbour
slows all alike); the figure is wall time of the whole process (start-up, model load, decode,
embed, write), as images/s, median over rounds, and the ratio to rclip. One-time exports
(mmsearch's ONNX towers, kept in the index folder) are made before the first round and timed apart.

rclip lives in its own venv (`python -m venv /tmp/rclip-venv && /tmp/rclip-venv/bin/pip install rclip`).

    HF_HUB_OFFLINE=1 .venv/bin/python /work/shared/bench/fake_hub.py --hf-cache /tmp/perf-hf --rclip-datadir /tmp/perf-rclip
    .venv/bin/python bench/make_jpegs.py /tmp/perf-jpegs --n 200 --megapixels 0.786432      # 1024 x 768
    .venv/bin/python bench/bench_vs_rclip.py --folder /tmp/perf-jpegs --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "ViT-B-32-256:datacomp_s34b_b86k"


def mmsearch() -> str:
    return str(Path(sys.executable).with_name("mmsearch"))


def run(command: list[str], env: dict, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return elapsed


def reset_mmsearch(db: Path) -> None:
    """Drop the database and vectors, keep the one-time ONNX exports (text_encoder/, image_encoder/)."""
    for path in db.glob("*"):
        if path.is_file():
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/perf-jpegs"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hf-cache", type=Path, default=Path("/tmp/perf-hf"))
    parser.add_argument("--rclip-datadir", type=Path, default=Path("/tmp/perf-rclip"))
    parser.add_argument("--rclip", default="/tmp/rclip-venv/bin/rclip")
    parser.add_argument("--precisions", default="onnx-int8,fp32", help="mmsearch --precision values to run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mms-vs-rclip"))
    args = parser.parse_args()

    images = sum(1 for path in args.folder.iterdir() if path.suffix.lower() in (".jpg", ".jpeg"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(args.hf_cache),
           "RCLIP_DATADIR": str(args.rclip_datadir)}
    tools: dict[str, tuple[list[str], Path | None, callable]] = {}
    rclip_db = args.rclip_datadir / "db.sqlite3"
    tools["rclip"] = ([args.rclip, "a cat", "--top", "1"], args.folder,
                      lambda: rclip_db.unlink(missing_ok=True))
    one_time = {}
    for precision in args.precisions.split(","):
        db = args.work / precision
        shutil.rmtree(db, ignore_errors=True)
        command = [mmsearch(), "index", str(args.folder), "--db", str(db), "--model", MODEL, "--precision", precision]
        one_time[f"mmsearch {precision}: first run (with ONNX exports)"] = run(command, env)
        tools[f"mmsearch {precision}"] = (command, None, lambda db=db: reset_mmsearch(db))
    times: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(args.rounds):
        for name, (command, cwd, reset) in tools.items():
            reset()
            times[name].append(run(command, env, cwd))
    rclip_median = statistics.median(times["rclip"])
    results = {name: {"median_s": round(statistics.median(values), 2),
                      "images_per_s": round(images / statistics.median(values), 2),
                      "speedup_vs_rclip": round(rclip_median / statistics.median(values), 2),
                      "runs_s": [round(value, 2) for value in values]} for name, values in times.items()}
    print(json.dumps({"images": images, "folder": str(args.folder), "model": MODEL, "rounds": args.rounds,
                      "one_time_s": {k: round(v, 1) for k, v in one_time.items()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
