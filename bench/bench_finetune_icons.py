"""A default `mmsearch finetune` on a new domain: monochrome UI icons, scored on concepts it never saw.

For each icon set, `tools.icons.make_pairs` renders train concepts (2,000 of Tabler, 1,200 of Lucide)
and 500 held-out ones, split by concept (the npm package installs at a pinned version). Then, as
whole commands, the way a user runs them:

    mmsearch eval heldout.csv --model BASE                   (before)
    mmsearch finetune train.csv --base BASE --out MODEL ARGS   (timed; ARGS empty = the defaults)
    mmsearch eval heldout.csv --model MODEL                  (after)
    mmsearch eval data/sample/captions.csv --model BASE|MODEL (what it knew: the README's emoji)

    .venv/bin/python bench/bench_finetune_icons.py --work /tmp/mms-ft-icons
    .venv/bin/python bench/bench_finetune_icons.py --work /tmp/mms-ft-icons --label old-defaults \\
        --finetune-args "--lr 1e-5 --epochs 5 --train-text --no-augment --no-wise-ft --precision fp32"

The timed part holds /tmp/mms-bench.lock; the machine's other load is printed beside the time.
Figures go to stdout and <work>/report-<label>.json.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import ContentionMeter, code_version, machine_line, today  # noqa: E402

MMSEARCH = [sys.executable, "-m", "cli.app"]
CHILD_ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
SAMPLE = REPO / "data" / "sample" / "captions.csv"
FINETUNE_CODE = ("retrieval/finetune/loop.py", "retrieval/finetune/defaults.py", "retrieval/finetune/interpolate.py",
                 "retrieval/finetune/trainable.py", "retrieval/finetune/images.py", "retrieval/models/bundled")


def run_json(args: list[str]) -> dict:
    done = subprocess.run([*MMSEARCH, *args, "--json"], cwd=REPO, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=CHILD_ENV)
    if done.returncode != 0:
        raise SystemExit(f"mmsearch {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def evaluate(pairs: Path, model: str) -> dict:
    metrics = run_json(["eval", str(pairs), "--model", model, "--device", "cpu"])
    return {direction: {key: round(metrics[direction][key], 3) for key in ("r1", "r5", "r10")}
            for direction in ("text_to_image", "image_to_text")}


def timed_finetune(train: Path, base: str, out: Path, extra: list[str], log_path: Path) -> dict:
    """`mmsearch finetune` as a user runs it, timed under the bench lock; its log kept in log_path."""
    command = [*MMSEARCH, "finetune", str(train), "--base", base, "--out", str(out), "--restart", "--json", *extra]
    with open("/tmp/mms-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        load_before = open("/proc/loadavg").read().split()[0]
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with ContentionMeter() as meter:
            started = time.perf_counter()
            with open(log_path, "w") as log:
                done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                                      stdin=subprocess.DEVNULL, env=CHILD_ENV)
            wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_after = open("/proc/loadavg").read().split()[0]
    if done.returncode != 0:
        raise SystemExit(f"finetune failed; see {log_path}")
    record = json.loads(done.stdout)
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime, 1),
        "loadavg_before_after": [load_before, load_after],
        "contention": str(meter.result),
        "epochs": record["settings"]["epochs"],
        "lr": record["settings"]["lr"],
        "profile": record.get("profile"),
        "best_epoch": record["best_epoch"],
        "kept": record.get("kept"),
        "mix_alpha": record.get("mix_alpha"),
        "steps": record["steps"],
        "pairs_per_second": record["pairs_per_second"],
        "validation_before_after_t2i_r10": [record["before"]["text_to_image"]["r10"],
                                            record["after"]["text_to_image"]["r10"]],
    }


def bench_set(icon_set: str, train: int, args: argparse.Namespace) -> dict:
    from tools.icons.make_pairs import IconsConfig, make_pairs

    data = args.work / f"{icon_set}-{train}-{args.split}"
    summary = make_pairs(IconsConfig(out=data, icon_set=icon_set, train=train, held_out=args.held_out,
                                     seed=args.seed, split=args.split, npm_dir=args.work / "npm"))
    out = args.work / f"model-{data.name}-{args.label}"
    extra = shlex.split(args.finetune_args)
    print(f"{icon_set}: {summary['train_pairs']} train pairs, {summary['held_out_pairs']} held-out concepts "
          f"({summary['set']['package']}@{summary['set']['package_version']}, {summary['set']['license']})",
          flush=True)
    result = {"set": summary["set"], "train_pairs": summary["train_pairs"], "held_out": summary["held_out_pairs"],
              "split": args.split, "before": evaluate(data / "heldout.csv", args.base)}
    print(f"  before: held-out text->image R@10 {result['before']['text_to_image']['r10']:.3f}", flush=True)
    result["finetune"] = timed_finetune(data / "train.csv", args.base, out, extra, args.work / f"{out.name}.log")
    result["after"] = evaluate(data / "heldout.csv", str(out))
    if not args.no_sample:
        result["sample_before"] = evaluate(SAMPLE, args.base)
        result["sample_after"] = evaluate(SAMPLE, str(out))
    before, after = result["before"]["text_to_image"], result["after"]["text_to_image"]
    timing = result["finetune"]
    print(f"  after {timing['wall_s']:.0f} s ({timing['cpu_s']:.0f} CPU s, load {timing['loadavg_before_after']}, "
          f"{timing['epochs']} epochs, best {timing['best_epoch']}, WiSE-FT alpha {timing['mix_alpha']}): "
          f"held-out text->image R@1 {before['r1']:.3f} -> {after['r1']:.3f}, R@10 {before['r10']:.3f} -> "
          f"{after['r10']:.3f}", flush=True)
    if not args.no_sample:
        print(f"  README sample (emoji) text->image R@10 {result['sample_before']['text_to_image']['r10']:.3f} -> "
              f"{result['sample_after']['text_to_image']['r10']:.3f}", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--sets", default="tabler:2000,lucide:1200",
                        help="Iconify set prefixes with their train concepts, SET:TRAIN, comma-separated")
    parser.add_argument("--base", default="bundled")
    parser.add_argument("--finetune-args", default="", help="extra `mmsearch finetune` flags (empty: defaults)")
    parser.add_argument("--label", default="defaults", help="names the model folders and the report")
    parser.add_argument("--held-out", type=int, default=500)
    parser.add_argument("--split", choices=("concept", "family"), default="concept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sample", action="store_true", help="skip the README sample check")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the commands (default: torch's choice, all cores); 1 is faster "
                             "on a CPU busy with other work, and gives the same figures run to run")
    args = parser.parse_args(argv)
    if args.threads:
        CHILD_ENV["OMP_NUM_THREADS"] = str(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["python bench/bench_finetune_icons.py", *map(shlex.quote, sys.argv[1:])]),
              "machine": machine_line(), "date": today(), "code": code_version(FINETUNE_CODE),
              "finetune_args": args.finetune_args, "threads": args.threads, "sets": {}}
    print(f"{report['machine']}; code {report['code']}", flush=True)
    for item in [name.strip() for name in args.sets.split(",") if name.strip()]:
        icon_set, _, train = item.partition(":")
        report["sets"][icon_set] = bench_set(icon_set, int(train or 2000), args)
    path = args.work / f"report-{args.label}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
