"""The on-disk index (indexer/store/ondisk.py) at 10M x 512: build time, bytes on disk, resident memory
while searching, single-query p50/p99, recall@10 against exact search.

Data: `cliplike` vectors (bench_search.ClipLikeMixture, a synthetic stand-in for CLIP image
embeddings; docs/BENCHMARKS.md "### 2. Search"), made block by block from seeded generators, so
10M vectors never sit in memory and are never stored apart from the index itself. The exact top 10
of the queries (fresh draws, not vectors of the index) is found by numpy brute force over the same
blocks as they stream into the build.

Two steps, so the CPU-heavy build can run niced in the background and the timed part under the
benchmark lock, in a fresh process (resident memory then counts only what a search process holds):

    nice -n 19 python bench/bench_ondisk.py build --n 10000000 --work /tmp/mms-ondisk
    flock /tmp/mms-bench.lock python bench/bench_ondisk.py search --work /tmp/mms-ondisk \
        --nprobe 16 32 64 --rerank 50 100 200

`search` reports, per (nprobe, rerank): recall@10 over every query (one batch), then p50/p95/p99 of
single queries one at a time (1 OpenMP thread, as `mmsearch serve` runs) with the files in the page
cache ("warm") and, with --cold, with the index's files dropped from the page cache before each
query (posix_fadvise DONTNEED: every list and exact row read comes from the disk). Resident memory
is the process's VmRSS split into anonymous and file-backed pages, and VmHWM (the peak), from
/proc/self/status, after opening and after the timed queries.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from bench_search import CLIPLIKE_NOISE_VAR, ClipLikeMixture

BLOCK = 100_000


def memory_status() -> dict:
    """VmRSS (anonymous / file-backed / shared memory) and VmHWM of this process, in MiB."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def blocks(mixture: ClipLikeMixture, n: int, seed: int):
    """(ids, vectors) blocks of the collection, each from its own seeded generator (reproducible)."""
    for number, start in enumerate(range(0, n, BLOCK)):
        stop = min(n, start + BLOCK)
        rng = np.random.default_rng([seed, 7, number])
        yield np.arange(start, stop, dtype=np.int64), mixture.sample(stop - start, rng)


class ExactTopK:
    """The exact top-k of fixed queries over streamed blocks (ids ascending)."""

    def __init__(self, queries: np.ndarray, k: int):
        self.queries, self.k = queries, k
        self.scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(queries), k), -1, dtype=np.int64)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        scores = self.queries @ vectors.T
        part = np.argpartition(-scores, self.k - 1, axis=1)[:, :self.k]
        merged_scores = np.concatenate([self.scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        merged_ids = np.concatenate([self.ids, ids[part]], axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :self.k]
        self.scores = np.take_along_axis(merged_scores, order, axis=1)
        self.ids = np.take_along_axis(merged_ids, order, axis=1)


def folder_bytes(folder: Path) -> dict:
    sizes = {}
    for entry in sorted(folder.iterdir()):
        suffix = entry.name.split(".", 1)[1] if "." in entry.name else entry.name
        sizes[suffix] = sizes.get(suffix, 0) + entry.stat().st_size
    sizes["total"] = sum(sizes.values())
    return sizes


def build(args) -> None:
    from indexer.store.ondisk import OnDiskIndex, ondisk_spec, training_sample_size

    args.work.mkdir(parents=True, exist_ok=True)
    mixture = ClipLikeMixture.make(args.dim, args.seed, noise_var=CLIPLIKE_NOISE_VAR * args.spread)
    queries = mixture.sample(args.queries, np.random.default_rng([args.seed, 99]))
    truth = ExactTopK(queries, 10)
    spec = args.spec or ondisk_spec(args.n, args.dim)
    train = training_sample_size(spec, args.n)
    log = open(args.work / "build.log", "a")
    started = time.perf_counter()
    cpu_started = time.process_time()
    timings: dict[str, float] = {}
    truth_s = [0.0]
    data_s = [0.0]

    def stream():
        made = time.perf_counter()
        for ids, vectors in blocks(mixture, args.n, args.seed):
            now = time.perf_counter()
            data_s[0] += now - made
            truth.update(ids, vectors)
            truth_s[0] += time.perf_counter() - now
            yield ids, vectors
            made = time.perf_counter()

    def progress(stage: str, done: int) -> None:
        timings.setdefault(stage, time.perf_counter() - started)
        if stage != "add" or done % 1_000_000 == 0:
            print(f"[{time.perf_counter() - started:8.1f} s, CPU {time.process_time() - cpu_started:8.1f} s] {stage} {done} "
                  f"{memory_status()} load {open('/proc/loadavg').read().split()[0]}", file=log, flush=True)

    print(f"build {spec} n={args.n} train={train} at {benchlib.code_version(('indexer/store/ondisk.py',))}",
          file=log, flush=True)
    with benchlib.ContentionMeter() as meter:
        index = OnDiskIndex.build(args.dim, spec, stream(), generation=1, folder=args.work / "index",
                                  train_size=train, on_progress=progress)
        index.save()
    wall = time.perf_counter() - started
    result = {
        "spec": spec, "n": args.n, "dim": args.dim, "train_points": train, "queries": args.queries,
        "spread": args.spread, "build_wall_s": round(wall, 1), "build_cpu_s": round(time.process_time() - cpu_started, 1),
        "of_which_data_generation_s": round(data_s[0], 1), "of_which_exact_truth_s": round(truth_s[0], 1),
        "stage_started_s": {key: round(value, 1) for key, value in timings.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "bytes_on_disk": folder_bytes(args.work / "index"), "other_cores": meter.result.other_cores,
        "code": benchlib.code_version(("indexer/store/ondisk.py",)), "machine": benchlib.machine_line(),
        "date": benchlib.today(),
    }
    np.savez(args.work / "truth.npz", queries=queries, ids=truth.ids, scores=truth.scores)
    (args.work / "build.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def reopen_cold(index, folder: Path):
    """The index closed (its lists unmapped: mapped pages cannot be dropped), its files dropped from
    the page cache, and opened again: the next query reads its lists and exact rows from the disk,
    as on a machine whose page cache does not hold them. Opening (the small .faiss file: OPQ,
    centroids, codebooks) is not timed: a server holds that in memory."""
    from indexer.store.ondisk import OnDiskIndex

    index.close()
    del index
    drop_cache(folder)
    return OnDiskIndex.load(folder)


def drop_cache(folder: Path) -> None:
    """Evict the index's files from the page cache (only these files: others' caches stay)."""
    for entry in folder.iterdir():
        fd = os.open(entry, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def breakdown(index, queries: np.ndarray, args) -> dict:
    """Median ms per single query in each step of OnDiskIndex.search (coarse lists, PQ scan of the
    lists, exact re-rank), warm and (with --cold) cold, at the first --nprobe / --rerank; the steps
    are timed by wrapping the index's own methods, so the code timed is the product's."""
    from indexer.store.vectors import SearchTuning

    tuning = SearchTuning(nprobe=args.nprobe[0], rerank=args.rerank[0])
    spent: dict[str, list[float]] = {}

    def timed(name, function):
        def wrapper(*a, **k):
            begin = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                spent.setdefault(name, []).append(time.perf_counter() - begin)
        return wrapper

    originals = {name: getattr(index, name) for name in ("_coarse", "_scan", "_rerank")}
    out = {"nprobe": tuning.nprobe, "rerank": tuning.rerank}
    try:
        for name, function in originals.items():
            setattr(index, name, timed(name, function))
        for mode in (("warm", "cold") if args.cold else ("warm",)):
            if mode == "warm":
                for query in queries[:100]:
                    index.search(query[None], 10, tuning=tuning)
            spent.clear()
            for query in queries[:100] if mode == "warm" else queries[:args.cold_queries]:
                if mode == "cold":
                    for name in originals:
                        delattr(index, name)
                    index = reopen_cold(index, args.work / "index")
                    originals = {name: getattr(index, name) for name in ("_coarse", "_scan", "_rerank")}
                    for name, function in originals.items():
                        setattr(index, name, timed(name, function))
                index.search(query[None], 10, tuning=tuning)
            out[mode] = {name.strip("_"): round(statistics.median(values) * 1000, 3) for name, values in spent.items()}
    finally:
        for name in originals:
            delattr(index, name)
    return out


def search(args) -> None:
    import faiss

    from indexer.store.ondisk import OnDiskIndex
    from indexer.store.vectors import SearchTuning

    faiss.omp_set_num_threads(args.threads)
    before_open = memory_status()
    started = time.perf_counter()
    index = OnDiskIndex.load(args.work / "index")
    if index is None:
        raise SystemExit(f"no index in {args.work / 'index'}")
    open_s = time.perf_counter() - started
    saved = np.load(args.work / "truth.npz")
    queries, truth = saved["queries"], saved["ids"]
    report = {"open_s": round(open_s, 3), "memory_before_open": before_open, "memory_after_open": memory_status(),
              "spec": index.spec, "ntotal": index.ntotal, "threads": args.threads, "rows": [],
              "load_before": open("/proc/loadavg").read().split()[:3],
              "code": benchlib.code_version(("indexer/store/ondisk.py",))}
    print(json.dumps({key: value for key, value in report.items() if key != "rows"}), flush=True)
    timed = queries[:args.latency_queries]
    for nprobe in args.nprobe:
        for rerank in args.rerank:
            tuning = SearchTuning(nprobe=nprobe, rerank=rerank)
            _, found = index.search(queries, 10, tuning=tuning)
            recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
            row = {"nprobe": nprobe, "rerank": rerank, "recall@10": round(recall, 4)}
            modes = ("warm", "cold") if args.cold else ("warm",)
            for mode in modes:
                for query in timed[:args.warmup]:
                    index.search(query[None], 10, tuning=tuning)
                times = []
                for query in timed[:args.cold_queries] if mode == "cold" else timed:
                    if mode == "cold":
                        index = reopen_cold(index, args.work / "index")
                    begin = time.perf_counter()
                    index.search(query[None], 10, tuning=tuning)
                    times.append(time.perf_counter() - begin)
                times = np.asarray(times)
                row[mode] = {q: round(benchlib.percentile_ms(times, p), 2) for q, p in
                             (("p50", 50), ("p95", 95), ("p99", 99))}
            row["memory"] = memory_status()
            row["load"] = open("/proc/loadavg").read().split()[0]
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
    report["breakdown"] = breakdown(index, timed, args)
    print(json.dumps({"breakdown": report["breakdown"]}), flush=True)
    report["memory_end"] = memory_status()
    out = args.work / f"search-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


def tune(args) -> None:
    """The product's autotuner (indexer.store.autotune.tune_index, as a library build runs it) on the
    built index: its sample queries are the index's own vectors, their truth brute force over the
    index's stored rows (float16, read from its exact segment: what a library reads from its database,
    rounded); then the chosen setting on the bench's fresh queries against their float32 truth."""
    import faiss

    from indexer.store.autotune import TuneConfig, recall_at_k, tune_index
    from indexer.store.ondisk import OnDiskIndex

    folder = args.work / "index"
    manifest = json.loads((folder / "manifest.json").read_text())
    ids_name, rows_name = manifest["segments"][0]
    ids = np.load(folder / ids_name, mmap_mode="r")
    rows = np.memmap(folder / rows_name, dtype=np.float16, mode="r", shape=(len(ids), manifest["dim"]))

    def chunks():
        for start in range(0, len(ids), BLOCK):
            yield np.asarray(ids[start:start + BLOCK]), np.asarray(rows[start:start + BLOCK], dtype=np.float32)

    index = OnDiskIndex.load(folder)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = tune_index(index, chunks, TuneConfig())
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    saved = np.load(args.work / "truth.npz")
    faiss.omp_set_num_threads(1)
    _, found = index.search(saved["queries"], 10)  # the tuned setting, as a search uses it
    out = {"tune_wall_s": round(seconds, 1), "tune_cpu_s": round(cpu, 1), "chosen": result.as_dict(),
           "fresh_queries_recall@10": round(recall_at_k(found, saved["ids"]), 4),
           "code": benchlib.code_version(("indexer/store/autotune.py", "indexer/store/ondisk.py")),
           "load": open("/proc/loadavg").read().split()[:3]}
    (args.work / f"tune-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    make = sub.add_parser("build")
    make.add_argument("--n", type=int, default=10_000_000)
    make.add_argument("--dim", type=int, default=512)
    make.add_argument("--queries", type=int, default=500)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--spread", type=float, default=1.0)
    make.add_argument("--spec", default=None, help="index_factory string (default: ondisk_spec(n, dim))")
    make.add_argument("--work", type=Path, default=Path("/tmp/mms-ondisk"))
    find = sub.add_parser("search")
    find.add_argument("--work", type=Path, default=Path("/tmp/mms-ondisk"))
    tuned = sub.add_parser("tune", help="run the product's autotuner on the built index")
    tuned.add_argument("--work", type=Path, default=Path("/tmp/mms-ondisk"))
    find.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64])
    find.add_argument("--rerank", type=int, nargs="+", default=[100])
    find.add_argument("--latency-queries", type=int, default=300)
    find.add_argument("--warmup", type=int, default=20)
    find.add_argument("--threads", type=int, default=1)
    find.add_argument("--cold", action="store_true", help="also time with the index's files out of the page cache")
    find.add_argument("--cold-queries", type=int, default=50, help="queries timed cold (each reopens the index)")
    args = parser.parse_args()
    {"build": build, "search": search, "tune": tune}[args.step](args)


if __name__ == "__main__":
    main()
