"""`mmsearch index --ray local` against the plain path on one machine (issue 18: goal >= 0.8x).

    python bench/bench_ray.py [--n 300] [--megapixels 2] [--rounds 3] [--model bundled]

Photo-like JPEGs (bench/make_jpegs.py) are indexed into a fresh index by whole `mmsearch index
FOLDER --db NEW --json --ocr off` commands, as a person runs them: one process each, so each pays
its own imports and the index's one-time image export (a new index), once on this machine's
threads and once with `--ray local` (a Ray node started by the command: by default one actor with
all of this machine's CPUs, loading the model once), rounds interleaved (plain, ray, plain, ray,
...). Words are off: the figure is the embedding's (the words pass runs on the driver after either
path). The figures: images/s of the whole command (wall time of the process), the run's own
`images_per_s` (its seconds, Ray's start included) and the same without the set-up step
(`prepare_seconds`: for Ray, joining or starting the cluster); medians and their ratio.

`--library` runs the rounds as library calls in this one process instead (the earlier form of this
benchmark): the plain rounds then reuse this process's imports and loaded towers, which a Ray
actor, a fresh process each round, cannot.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import benchlib  # noqa: E402
from make_jpegs import make_jpegs  # noqa: E402


def index_once(folder: Path, db: Path, model: str, ray: str | None) -> dict:
    from indexer.media.ocr import OcrOptions
    from retrieval.indexing import IndexRequest, index_library
    from retrieval.ray_embed import RayOptions

    started = time.perf_counter()
    # words off: the figure is the embedding's (the words pass runs on the driver after either path)
    outcome = index_library(IndexRequest(db=db, roots=(str(folder),), model=model, device="cpu",
                                         ray=RayOptions(ray) if ray else None, ocr=OcrOptions(mode="off")))
    wall = time.perf_counter() - started
    if ray:  # each Ray round starts its own node, as each `mmsearch index --ray local` does
        import ray as ray_module

        ray_module.shutdown()
    report = outcome.report
    embedding_s = max(1e-9, report.seconds - report.prepare_seconds)
    return {"wall_s": round(wall, 3), "embedded": report.embedded, "images_per_s": round(report.images_per_s, 2),
            "images_per_s_after_setup": round(report.embedded / embedding_s, 2),
            "prepare_s": round(report.prepare_seconds, 2), "embedding": report.embedding}


def command_once(folder: Path, db: Path, model: str, ray: str | None, log: Path) -> dict:
    """One whole `mmsearch index` process; its wall time and its own summary."""
    import os
    import subprocess

    command = [str(Path(sys.executable).with_name("mmsearch")), "index", str(folder), "--db", str(db),
               "--model", model, "--ocr", "off", "--json"] + (["--ray", ray] if ray else [])
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        started = time.perf_counter()
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        wall = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}); stderr in {log}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    embedding_s = max(1e-9, summary["seconds"] - summary.get("prepare_seconds", 0.0))
    return {"wall_s": round(wall, 3), "embedded": summary["embedded"],
            "images_per_s_wall": round(summary["embedded"] / wall, 2),
            "images_per_s": round(summary.get("images_per_s", 0.0), 2),
            "images_per_s_after_setup": round(summary["embedded"] / embedding_s, 2),
            "prepare_s": round(summary.get("prepare_seconds", 0.0), 2), "embedding": summary.get("embedding", {})}


def in_process(jpegs: Path, work: Path, model: str, files_per_task: int = 64, tasks: int = 2, threads: int = 2) -> dict:
    """Ray's actor class called here, without Ray: its set-up, then `tasks` tasks of `files_per_task`
    files (what a Ray task does, without Ray's scheduling and processes)."""
    import numpy as np

    from indexer.pipeline.embed import PipelineConfig
    from retrieval.ray_embed import ModelRecipe, _EmbedActor

    db = Path(tempfile.mkdtemp(dir=work, prefix="inproc-"))
    index_once(jpegs, db, model, None)  # the index's model export, as a Ray run finds it
    files = sorted(jpegs.iterdir())[:files_per_task * tasks]
    started = time.perf_counter()
    actor = _EmbedActor(ModelRecipe(model, "onnx-int8", str(db / "image_encoder"),
                                    pipeline=PipelineConfig(workers=threads)), {}, "cpu", threads)
    out = {"setup_s": round(time.perf_counter() - started, 3), "task_s": []}
    for number in range(tasks):
        chunk = files[number * files_per_task:(number + 1) * files_per_task]
        stats = [path.stat() for path in chunk]
        batch = {"index": np.arange(len(chunk)), "path": np.array([str(path) for path in chunk]),
                 "size": np.array([st.st_size for st in stats]), "mtime": np.array([st.st_mtime for st in stats])}
        started = time.perf_counter()
        for _ in actor(batch):  # the task's batches, as Ray would stream them back
            pass
        out["task_s"].append(round(time.perf_counter() - started, 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--megapixels", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mms-bench-ray")
    parser.add_argument("--library", action="store_true", help="library calls in this process, not whole commands")
    parser.add_argument("--in-process", action="store_true",
                        help="time the actor class called here (no Ray): set-up and two tasks of --files-per-task files")
    parser.add_argument("--files-per-task", type=int, default=64, help="with --in-process")
    parser.add_argument("--threads", type=int, default=2, help="with --in-process: the actor's CPUs")
    args = parser.parse_args()

    jpegs = args.work / f"jpegs-{args.n}-{args.megapixels}"
    make_jpegs(jpegs, args.n, megapixels=args.megapixels)
    if args.in_process:
        print(json.dumps(in_process(jpegs, args.work, args.model, args.files_per_task, threads=args.threads)))
        return
    rows: dict[str, list[dict]] = {"plain": [], "ray": []}
    index_once(jpegs, Path(tempfile.mkdtemp(dir=args.work)), args.model, None)  # warm the page cache
    load = [open("/proc/loadavg").read().split()[:3]]
    for round_ in range(args.rounds):
        for kind in ("plain", "ray"):
            db = Path(tempfile.mkdtemp(dir=args.work, prefix=f"{kind}-{round_}-")) / "index"
            ray = "local" if kind == "ray" else None
            rows[kind].append(index_once(jpegs, db, args.model, ray) if args.library else
                              command_once(jpegs, db, args.model, ray, args.work / "logs" / f"{kind}-{round_}.log"))
            print(json.dumps({"round": round_, "kind": kind, **rows[kind][-1]}), flush=True)
    load.append(open("/proc/loadavg").read().split()[:3])

    def median(kind: str, key: str) -> float:
        return statistics.median(row[key] for row in rows[kind])

    summary = {
        "machine": benchlib.machine_line(), "code": benchlib.code_version(("retrieval/ray_embed.py",
                                                                            "indexer/pipeline/sync.py")),
        "images": args.n, "megapixels": args.megapixels, "rounds": args.rounds, "model": args.model,
        "timed": "library calls in one process" if args.library else "whole mmsearch index commands",
        "loadavg_start_end": load,
        "plain_images_per_s": median("plain", "images_per_s"), "ray_images_per_s": median("ray", "images_per_s"),
        "plain_after_setup": median("plain", "images_per_s_after_setup"),
        "ray_after_setup": median("ray", "images_per_s_after_setup"),
        "ray_actors": rows["ray"][-1]["embedding"].get("actors"),
        "ray_cpus_per_actor": rows["ray"][-1]["embedding"].get("cpus_per_actor"),
        "ray_files_per_task": rows["ray"][-1]["embedding"].get("files_per_task"),
    }
    if not args.library:
        summary["plain_images_per_s_wall"] = median("plain", "images_per_s_wall")
        summary["ray_images_per_s_wall"] = median("ray", "images_per_s_wall")
        summary["ratio_wall"] = round(summary["ray_images_per_s_wall"] / summary["plain_images_per_s_wall"], 3)
    summary["ratio"] = round(summary["ray_images_per_s"] / summary["plain_images_per_s"], 3)
    summary["ratio_after_setup"] = round(summary["ray_after_setup"] / summary["plain_after_setup"], 3)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
