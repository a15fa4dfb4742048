"""Cold start of `mmsearch search "a cat"`: a new process per query on a synthetic 100k-item index.

Builds (once, reused when present) a 100k-item index the way bench_serve.py does (rows + random
unit vectors through `ItemStore.write_batch`, FAISS file as `mmsearch index` builds it) plus the ONNX
export of the model's text tower that `mmsearch index` writes, then times the CLI with hyperfine
(or, without hyperfine, its own loop of subprocesses) and prints the medians as JSON.

The model is an architecture config with RANDOM weights (default open_clip's ViT-B-32: 512-d,
a real-sized text tower), or `--model bundled`: speed only.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_cold_start.py --items 100000 --runs 10
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_cold_start.py --items 2000 --runs 3   # quick
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def build(db: Path, arch: str, items: int) -> dict:
    """The index and its text export; skipped when db already holds them."""
    from indexer.store.library import Library
    from retrieval.models.encoders import load_model
    from retrieval.models.fast_text import optimise_text_export
    from retrieval.models.onnx_text import ensure_exported

    marker = db / "bench_cold_start.json"
    if marker.exists():
        return json.loads(marker.read_text())
    from bench_serve import build_synthetic_index, write_model_config

    db.mkdir(parents=True, exist_ok=True)
    model_name = arch if arch == "bundled" else str(write_model_config(db, arch))  # load_model resolves both
    started = time.perf_counter()
    info = build_synthetic_index(db / "index", Path(model_name), items)
    with Library(db / "index") as library:
        ok = ensure_exported(load_model(model_name, device="cpu"), library.text_export_path)
    info.update({"export": ok and optimise_text_export(db / "index" / "text_encoder"),
                 "build_s": time.perf_counter() - started, "items": items, "model": model_name})
    marker.write_text(json.dumps(info))
    return info


def refresh_export(index_dir: Path, model_name: str) -> str | None:
    """Bring the text export to what the current code writes, when it is older (e.g. fixed-length, no
    tokenizer tables); its "sequence"."""
    from indexer.store.library import Library
    from retrieval.models.encoders import load_model
    from retrieval.models.fast_text import add_bpe_tables, optimise_text_export
    from retrieval.models.onnx_text import ensure_exported, export_sequence

    with Library(index_dir) as library:
        folder = library.text_export_path
    if export_sequence(folder) is None:
        ensure_exported(load_model(model_name, device="cpu"), folder)
        optimise_text_export(folder)
    add_bpe_tables(folder)  # what an index run adds to an export made before the tables
    return export_sequence(folder)


def mmsearch() -> str:
    return str(Path(sys.executable).with_name("mmsearch"))


def time_with_hyperfine(commands: dict[str, str], runs: int, warmup: int) -> dict:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"cold-start-{os.getpid()}.json"
    args = ["hyperfine", "-N", "--warmup", str(warmup), "--runs", str(runs), "--export-json", str(out)]
    for name, command in commands.items():
        args += ["-n", name, command]
    subprocess.run(args, check=True, stdout=sys.stderr)
    results = json.loads(out.read_text())["results"]
    out.unlink()
    return {r["command"]: {"median_s": r["median"], "mean_s": r["mean"], "min_s": r["min"], "max_s": r["max"],
                           "runs": len(r["times"])} for r in results}


def time_with_loop(commands: dict[str, str], runs: int, warmup: int) -> dict:
    """Interleaved A, B, A, B ... so a busy neighbour slows both alike."""
    import shlex

    times = {name: [] for name in commands}
    for round_ in range(warmup + runs):
        for name, command in commands.items():
            started = time.perf_counter()
            subprocess.run(shlex.split(command), check=True, stdout=subprocess.DEVNULL)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "runs": len(values)}
            for name, values in times.items()}


THREADS_PROBE = """
import sys, time
import numpy as np
from indexer.store.vectors import VectorIndex, _faiss
faiss = _faiss()
threads = int(sys.argv[2])
if threads:
    faiss.omp_set_num_threads(threads)
index = VectorIndex.load(sys.argv[1], mmap=True)
query = np.random.default_rng(int(sys.argv[3])).standard_normal((1, index.dim)).astype(np.float32)
query /= np.linalg.norm(query)
started = time.perf_counter()
index.search(query, 10)
first = time.perf_counter() - started
again = []
for _ in range(20):
    started = time.perf_counter()
    index.search(query, 10)
    again.append(time.perf_counter() - started)
print(first, sorted(again)[10], faiss.omp_get_max_threads())
"""


def faiss_threads_sweep(vectors_path: Path, rounds: int) -> dict:
    """One query in a fresh process per round, FAISS at 1 thread vs its default (alternating): the first search
    (what a one-shot CLI search pays, OpenMP pool start included) and the median of 20 more in the same process."""
    with open(vectors_path, "rb") as file:  # into the page cache first, as for a repeat search: faults, not disk reads
        while file.read(1 << 24):
            pass
    times = {"1": ([], []), "default": ([], [])}
    threads_used = {}
    for round_ in range(rounds):
        order = (("1", 1), ("default", 0)) if round_ % 2 == 0 else (("default", 0), ("1", 1))
        for name, threads in order:
            out = subprocess.run([sys.executable, "-c", THREADS_PROBE, str(vectors_path), str(threads), str(round_)],
                                 check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()
            times[name][0].append(float(out[0]))
            times[name][1].append(float(out[1]))
            threads_used[name] = int(out[2])
    return {name: {"threads": threads_used[name], "first_search_median_ms": round(statistics.median(first) * 1e3, 2),
                   "first_search_max_ms": round(max(first) * 1e3, 2),
                   "repeat_search_median_ms": round(statistics.median(repeat) * 1e3, 2)}
            for name, (first, repeat) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random weights), or 'bundled'")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mms-cold-start"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--query", default="a cat")
    parser.add_argument("--extra", action="append", default=[],
                        help="another command to time alongside, NAME=COMMAND (e.g. rclip)")
    parser.add_argument("--before-src", type=Path,
                        help="a checkout of older code (e.g. `git archive 89a1ce2 | tar -x -C DIR`) to time side by side, "
                             "on a copy of the index with the plain (unoptimised) text export")
    parser.add_argument("--before-index", type=Path,
                        help="with --before-src: the index the older code searches; made (if missing) as a copy of the "
                             "index as it is before this run refreshes its text export. Default: a copy with the plain export")
    parser.add_argument("--no-hyperfine", action="store_true")
    parser.add_argument("--faiss-threads", type=int, metavar="ROUNDS",
                        help="instead of the CLI: time one FAISS search at 1 thread vs the default, ROUNDS fresh processes each")
    args = parser.parse_args()

    db = args.work / f"{args.arch}-{args.items}"
    info = build(db, args.arch, args.items)
    index_dir = db / "index"
    if args.before_src and args.before_index and not args.before_index.exists():
        shutil.copytree(index_dir, args.before_index)  # the text export as the older code wrote it
    info["export_sequence"] = refresh_export(index_dir, info["model"])
    if args.faiss_threads:
        from indexer.store.library import Library

        with Library(index_dir, create=False, read_only=True) as library:
            vectors_path = library.vectors_path()
        print(json.dumps({"index": info, "faiss_threads": faiss_threads_sweep(vectors_path, args.faiss_threads)}, indent=2))
        return
    commands = {
        "mmsearch search": f"{mmsearch()} search '{args.query}' --db {index_dir} --top 10",
        "python -c pass (floor)": f"{sys.executable} -c pass",
    }
    if args.before_src:
        plain = args.before_index or db / "index-plain"
        if not plain.exists():  # same database and vectors, the text export as `mmsearch index` wrote it before
            shutil.copytree(index_dir, plain, ignore=shutil.ignore_patterns("text_encoder"))
            from indexer.store.library import Library
            from retrieval.models.encoders import load_model
            from retrieval.models.onnx_text import export_text_encoder

            with Library(plain) as library:
                export_text_encoder(load_model(info["model"], device="cpu"), library.text_export_path)
            json_path = plain / "vectors.json"
            sidecar = json.loads(json_path.read_text())
            sidecar.pop("tuning", None)
            json_path.write_text(json.dumps(sidecar))
        commands["before (--before-src code)"] = (
            f"env PYTHONPATH={args.before_src} {sys.executable} -m cli.app search '{args.query}' --db {plain} --top 10")
        commands["mmsearch search"] = (f"env PYTHONPATH={ROOT} {sys.executable} -m cli.app search '{args.query}' "
                                       f"--db {index_dir} --top 10")
    for extra in args.extra:
        name, _, command = extra.partition("=")
        commands[name] = command
    use_hyperfine = shutil.which("hyperfine") and not args.no_hyperfine
    timed = (time_with_hyperfine if use_hyperfine else time_with_loop)(commands, args.runs, args.warmup)
    print(json.dumps({"index": info, "timer": "hyperfine" if use_hyperfine else "loop", "results": timed}, indent=2))


if __name__ == "__main__":
    main()
