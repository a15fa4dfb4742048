"""rclip vs mmsearch indexing the same folder with the same architecture, side by side.

Both tools run ViT-B-32-256 with the SAME random weights, written by /work/shared/bench/fake_hub.py
for open_clip's HF cache (mmsearch) and as rclip's ONNX files: speed only, the vectors mean nothing.
Each round runs every row once, interleaved (a busy neighbour slows all alike); a figure is the wall
time of the whole process (start-up, model load, decode, embed, write), as images/s, median over
rounds, and the ratio to rclip's median. Rows, per --precisions value P:
- `mmsearch P`: a steady re-index from scratch: the database and vectors are dropped, the one-time
  ONNX exports (image_encoder/, text_encoder/ in the index folder) kept;
- `mmsearch P, first run`: a new index folder, so both exports are made in the run (--first-run).
rclip's row drops its database each round; its ONNX files are made once per machine (fake_hub.py).

Every mmsearch row is labelled with the image precision that ran: the run summary's
`image_precision` where the summary has one, else what the index's export records
(`retrieval.models.fast_image.effective_precision`). A run where another precision ran than the row
names (the int8 graph failing its check and fp32 running instead) fails the benchmark. Each run's
stderr is kept in --work/logs/. The timed part holds /tmp/mms-bench.lock.

rclip lives in its own venv (`python -m venv /tmp/rclip-venv && /tmp/rclip-venv/bin/pip install rclip`).

    HF_HUB_OFFLINE=1 .venv/bin/python /work/shared/bench/fake_hub.py --hf-cache /tmp/perf-hf --rclip-datadir /tmp/perf-rclip
    .venv/bin/python bench/make_jpegs.py /tmp/perf-jpegs --n 200 --megapixels 0.786432      # 1024 x 768
    .venv/bin/python bench/bench_vs_rclip.py --folder /tmp/perf-jpegs --rounds 5 --first-run
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import ContentionMeter, code_version, machine_line  # noqa: E402

MODEL = "ViT-B-32-256:datacomp_s34b_b86k"
LOCK = Path("/tmp/mms-bench.lock")


def mmsearch() -> str:
    return str(Path(sys.executable).with_name("mmsearch"))


def cpu_kinds() -> str:
    """The CPU's int8-relevant flags, e.g. "avx2 avx512f avx512_vnni"."""
    try:
        flags = set(open("/proc/cpuinfo").read().split("flags", 2)[1].split("\n", 1)[0].split())
    except (OSError, IndexError):
        return "unknown"
    return " ".join(flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if flag in flags)


@contextlib.contextmanager
def bench_lock():
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(command: list[str], env: dict, log: Path, cwd: Path | None = None) -> tuple[float, str, float]:
    """(wall seconds, stdout, cores other processes kept busy meanwhile); stderr goes to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with ContentionMeter() as meter, open(log, "w") as err:
        started = time.perf_counter()
        result = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True)
        elapsed = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}); stderr in {log}:\n{log.read_text()[-2000:]}")
    return elapsed, result.stdout, meter.result.other_cores


def precision_ran(summary_line: str, db: Path, asked: str) -> str:
    """The image precision the run used: its summary's, else what the index's export records."""
    from retrieval.models.fast_image import effective_precision

    try:
        summary = json.loads(summary_line.strip().splitlines()[-1])
    except (ValueError, IndexError):
        summary = {}
    if summary.get("image_precision"):
        return summary["image_precision"]
    return effective_precision(db / "image_encoder", asked) or "unknown"


def reset_steady(db: Path) -> None:
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
    parser.add_argument("--precisions", default="onnx-int8", help="mmsearch --precision values to run")
    parser.add_argument("--first-run", action="store_true", help="also a row per precision with the exports made in the run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mms-vs-rclip"))
    parser.add_argument("--no-lock", action="store_true", help=f"do not hold {LOCK} while timing")
    args = parser.parse_args()

    images = sum(1 for path in args.folder.iterdir() if path.suffix.lower() in (".jpg", ".jpeg"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(args.hf_cache),
           "RCLIP_DATADIR": str(args.rclip_datadir)}
    logs = args.work / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    rclip_db = args.rclip_datadir / "db.sqlite3"
    rows: dict[str, dict] = {"rclip": {"command": [args.rclip, "a cat", "--top", "1"], "cwd": args.folder,
                                       "reset": lambda: rclip_db.unlink(missing_ok=True)}}
    one_time = {}
    for precision in args.precisions.split(","):
        db = args.work / precision
        shutil.rmtree(db, ignore_errors=True)
        # --ocr off: rclip reads no words in pictures (mmsearch's default, auto, runs a text test on each)
        command = [mmsearch(), "index", str(args.folder), "--db", str(db), "--model", MODEL, "--precision", precision,
                   "--ocr", "off", "--json"]
        # the exports the steady row keeps: made here, untimed apart from this figure
        seconds = run(command, env, logs / f"setup-{precision}.log")[0]
        one_time[f"mmsearch {precision}: first run before the rounds"] = round(seconds, 1)
        rows[f"mmsearch {precision}"] = {"command": command, "db": db, "asked": precision,
                                         "reset": lambda db=db: reset_steady(db)}
        if args.first_run:
            fresh = args.work / f"{precision}-first"
            command = [*command[:4], str(fresh), *command[5:]]
            rows[f"mmsearch {precision}, first run"] = {"command": command, "db": fresh, "asked": precision,
                                                        "reset": lambda db=fresh: shutil.rmtree(db, ignore_errors=True)}
    for row in rows.values():
        row.update(times=[], others=[], ran=[])
    load = [open("/proc/loadavg").read().split()[:3]]
    with contextlib.nullcontext() if args.no_lock else bench_lock():
        for round_number in range(args.rounds):
            for name, row in rows.items():
                row["reset"]()
                log = logs / f"{name.replace(' ', '_').replace(',', '')}-{round_number}.log"
                seconds, stdout, others = run(row["command"], env, log, row.get("cwd"))
                row["times"].append(seconds)
                row["others"].append(others)
                if "asked" in row:
                    row["ran"].append(precision_ran(stdout, row["db"], row["asked"]))
    load.append(open("/proc/loadavg").read().split()[:3])
    rclip_median = statistics.median(rows["rclip"]["times"])
    results, wrong = {}, []
    for name, row in rows.items():
        median = statistics.median(row["times"])
        results[name] = {"median_s": round(median, 2), "images_per_s": round(images / median, 2),
                         "speedup_vs_rclip": round(rclip_median / median, 2),
                         "runs_s": [round(value, 2) for value in row["times"]],
                         "other_cores": [round(value, 2) for value in row["others"]]}
        if "asked" in row:
            results[name]["image_precision_ran"] = sorted(set(row["ran"]))
            if set(row["ran"]) != {row["asked"]}:
                wrong.append(f"{name}: {row['asked']} asked, {sorted(set(row['ran']))} ran (stderr in {logs})")
    print(json.dumps({"images": images, "folder": str(args.folder), "model": MODEL, "rounds": args.rounds,
                      "machine": machine_line(), "cpu_flags": cpu_kinds(), "code": code_version(),
                      "loadavg_start_end": load, "one_time_s": one_time, "results": results,
                      "errors": wrong}, indent=2))
    if wrong:
        raise SystemExit("refusing these rows: another image precision ran than they name:\n" + "\n".join(wrong))


if __name__ == "__main__":
    main()
