"""Vector search: latency p50/p99 and recall@10 vs exact, per index type, through VectorIndex.

For each data set (uniform random unit vectors: the hardest case for IVF and HNSW; and a
clustered set: unit vectors around --centres centres, queries from the same distribution, closer
to real embeddings) and each size, builds Flat, IVF as `choose_index_spec` picks it, and HNSW32
with `indexer.store_vectors.VectorIndex.build` (the code path `mmsearch index` uses, fed in
20,000-vector chunks as `MetaStore.iter_vectors` does), then:
- recall@10: share of the exact top 10 (faiss.knn brute force) found, over --queries queries;
- latency: single queries, one at a time, after a warm-up; p50 and p99 in ms;
- build time, and index size (the file `VectorIndex.save` writes).
An HNSW build that passes --max-build-s is stopped between chunks and reported as not run, with
how far it got.

    python bench/bench_search.py --sizes 20000 --queries 200          # dry run
    python bench/bench_search.py --sizes 100000 1000000 --dists uniform clustered
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import benchlib

CHUNK = 20_000  # MetaStore.iter_vectors' chunk size


class BuildBudgetExceeded(Exception):
    pass


OVER_BUDGET: dict[tuple[str, int], str] = {}  # (spec, n) -> why a build ran out of time


# --- data --------------------------------------------------------------------------------------
def _normalise_rows(block: np.ndarray) -> np.ndarray:
    block /= np.linalg.norm(block, axis=1, keepdims=True)
    return block


def make_vectors(kind: str, n: int, dim: int, rng: np.random.Generator, centres: np.ndarray | None,
                 spread: float) -> np.ndarray:
    """n unit vectors (float32), generated in blocks to keep peak memory near the result's size."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        if kind == "uniform":
            out[start:stop] = _normalise_rows(noise)
        else:
            # centre + isotropic noise of norm ~spread: cos to its centre ~ 1/sqrt(1+spread^2)
            noise *= np.float32(spread / np.sqrt(dim))
            noise += centres[rng.integers(0, len(centres), stop - start)]
            out[start:stop] = _normalise_rows(noise)
    return out


def make_dataset(kind: str, n: int, dim: int, n_queries: int, seed: int, n_centres: int, spread: float):
    rng = np.random.default_rng([seed, n, 0 if kind == "uniform" else 1])
    centres = None
    if kind == "clustered":
        centres = _normalise_rows(rng.standard_normal((n_centres, dim), dtype=np.float32))
    base = make_vectors(kind, n, dim, rng, centres, spread)
    queries = make_vectors(kind, n_queries, dim, rng, centres, spread)
    return base, queries


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force ground truth (faiss.knn, inner product), positions into base."""
    import faiss

    _, positions = faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
    return positions


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


# --- one index ---------------------------------------------------------------------------------
def chunks_with_budget(base: np.ndarray, max_seconds: float | None, progress: dict):
    started = time.perf_counter()
    for start in range(0, len(base), CHUNK):
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            raise BuildBudgetExceeded()
        ids = np.arange(start, min(len(base), start + CHUNK), dtype=np.int64)
        yield ids, base[start:start + CHUNK]
        progress["added"] = int(ids[-1]) + 1
        progress["seconds"] = time.perf_counter() - started


def single_query_latencies(index, queries: np.ndarray, k: int, tuning, warmup: int, max_queries: int,
                           max_seconds: float) -> np.ndarray:
    for query in queries[:warmup]:
        index.search(query[None, :], k, tuning=tuning)
    times = []
    budget_start = time.perf_counter()
    for query in queries[:max_queries]:
        started = time.perf_counter()
        index.search(query[None, :], k, tuning=tuning)
        times.append(time.perf_counter() - started)
        if time.perf_counter() - budget_start > max_seconds and len(times) >= 30:
            break
    return np.asarray(times)


def measure_spec(spec: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, settings: list,
                 args, work: Path) -> list[dict]:
    import faiss

    from indexer.store_vectors import VectorIndex

    default_threads = faiss.omp_get_max_threads()
    dim = base.shape[1]
    max_build = args.max_build_s if spec.startswith("HNSW") else None
    over_budget = OVER_BUDGET.get((spec, len(base)))
    if over_budget:  # the same build already ran out of time on another data set of this size
        note = f"not run: {over_budget}"
        print(f"  {spec}: {note}", flush=True)
        return [{"spec": spec, "setting": "-", "not_run": note}]
    progress = {"added": 0, "seconds": 0.0}
    started = time.perf_counter()
    try:
        with benchlib.ContentionMeter() as meter:
            index = VectorIndex.build(dim, spec, chunks_with_budget(base, max_build, progress), generation=0)
    except BuildBudgetExceeded:
        elapsed = time.perf_counter() - started
        reason = (f"build stopped after {elapsed:.0f} s (over --max-build-s {args.max_build_s:g}) with "
                  f"{progress['added']:,} of {len(base):,} vectors added")
        OVER_BUDGET[(spec, len(base))] = f"the same build on the other data set ran out of time ({reason})"
        note = f"not run: {reason}"
        print(f"  {spec}: {note}", flush=True)
        return [{"spec": spec, "setting": "-", "not_run": note, "build_s": elapsed, "added": progress["added"]}]
    build_s = time.perf_counter() - started
    path = work / "vectors.faiss"
    started = time.perf_counter()
    index.save(path)
    save_s = time.perf_counter() - started
    size_mb = path.stat().st_size / 1e6
    path.unlink()
    print(f"  {spec}: built in {build_s:.1f} s ({meter.result}), saved {size_mb:.0f} MB in {save_s:.1f} s",
          flush=True)

    rows = []
    for name, tuning in settings:
        _, found = index.search(queries, truth.shape[1], tuning=tuning)
        recall = recall_at_k(found, truth)
        row = {"spec": spec, "setting": name, "recall_at_10": recall, "build_s": build_s, "save_s": save_s,
               "size_mb": size_mb, "other_cores_build": meter.result.other_cores, "latency": {}}
        line = f"    {name:14s} recall@10 {recall:.3f}"
        for threads in args.latency_threads:  # 0: faiss's default (the CLI); 1: as `mmsearch serve` sets it
            faiss.omp_set_num_threads(threads or default_threads)
            with benchlib.ContentionMeter() as latency_meter:
                latencies = single_query_latencies(index, queries, truth.shape[1], tuning, args.warmup,
                                                   args.latency_queries, args.latency_max_s)
            label = f"{threads or default_threads}t"
            row["latency"][label] = {
                "p50_ms": benchlib.percentile_ms(latencies, 50), "p99_ms": benchlib.percentile_ms(latencies, 99),
                "queries": len(latencies), "other_cores": latency_meter.result.other_cores}
            line += (f"  [{label}] p50 {row['latency'][label]['p50_ms']:7.2f} ms p99 {row['latency'][label]['p99_ms']:7.2f}"
                     f" ms ({len(latencies)} q, others {latency_meter.result.other_cores:.2f} cores)")
        faiss.omp_set_num_threads(default_threads)
        rows.append(row)
        print(line, flush=True)
    del index
    return rows


def settings_for(spec: str, args) -> list:
    from indexer.store_vectors import DEFAULT_EF_SEARCH, DEFAULT_NPROBE, SearchTuning

    if spec.startswith("IVF"):
        nlist = int(spec[3:].split(",")[0])
        values = sorted({v for v in args.nprobe + [DEFAULT_NPROBE] if v <= nlist})
        return [(f"nprobe={v}{'*' if v == DEFAULT_NPROBE else ''}", SearchTuning(nprobe=v)) for v in values]
    if spec.startswith("HNSW"):
        values = sorted(set(args.ef_search + [DEFAULT_EF_SEARCH]))
        return [(f"efSearch={v}{'*' if v == DEFAULT_EF_SEARCH else ''}", SearchTuning(ef_search=v)) for v in values]
    return [("exact", SearchTuning())]


def first_reaching(rows: list[dict], spec_prefix: str, target: float) -> str:
    for row in rows:
        if row["spec"].startswith(spec_prefix) and row.get("recall_at_10", 0) >= target:
            return row["setting"].rstrip("*")
    tried = [row for row in rows if row["spec"].startswith(spec_prefix) and "recall_at_10" in row]
    return f"none of the values tried (best {max(r['recall_at_10'] for r in tried):.3f})" if tried else "not run"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dists", nargs="+", default=["uniform", "clustered"], choices=["uniform", "clustered"])
    parser.add_argument("--types", nargs="+", default=["flat", "ivf", "hnsw"], choices=["flat", "ivf", "hnsw"])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall (batch search)")
    parser.add_argument("--latency-queries", type=int, default=200, help="single queries timed per setting")
    parser.add_argument("--latency-max-s", type=float, default=15.0, help="stop timing a setting after this (>=30 queries)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256, 512, 1024])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--centres", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.0,
                        help="clustered: noise norm relative to the centre (1.0: cos to centre ~0.71)")
    parser.add_argument("--max-build-s", type=float, default=600.0, help="give up an HNSW build after this")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--omp-threads", type=int, default=0, help="faiss OpenMP threads (0: faiss's default)")
    parser.add_argument("--latency-threads", type=int, nargs="+", default=[0, 1],
                        help="time single queries with these OpenMP thread counts (0: the default)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    import faiss

    if args.omp_threads:
        faiss.omp_set_num_threads(args.omp_threads)

    from indexer.store_vectors import DEFAULT_EF_SEARCH, DEFAULT_NPROBE, choose_index_spec

    print(f"machine: {benchlib.machine_line()}; date {benchlib.today()}; faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} OpenMP threads")
    busy = benchlib.busy_processes()
    print(f"code: {benchlib.code_version()}", flush=True)
    print(f"other busy processes at start: {busy or 'none'}")
    print(f"defaults: nprobe {DEFAULT_NPROBE}, efSearch {DEFAULT_EF_SEARCH} (marked * below)", flush=True)
    figures: dict = {"machine": benchlib.machine_line(), "date": benchlib.today(), "faiss": faiss.__version__,
                     "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "busy_at_start": busy, "code": benchlib.code_version(), "results": []}
    with tempfile.TemporaryDirectory(prefix="mms-bench-search-") as tmp:
        for kind in args.dists:
            for n in args.sizes:
                started = time.perf_counter()
                base, queries = make_dataset(kind, n, args.dim, args.queries, args.seed, args.centres, args.spread)
                made_s = time.perf_counter() - started
                started = time.perf_counter()
                truth = exact_top_k(base, queries, args.k)
                print(f"{kind} n={n:,} dim={args.dim}: data {made_s:.1f} s, exact top-{args.k} for "
                      f"{len(queries)} queries {time.perf_counter() - started:.1f} s", flush=True)
                specs = {"flat": "Flat", "ivf": choose_index_spec(n, "ivf" if n < 100_000 else "auto"),
                         "hnsw": choose_index_spec(n, "hnsw")}
                rows = []
                for index_type in args.types:
                    spec = specs[index_type]
                    rows.extend(measure_spec(spec, base, queries, truth, settings_for(spec, args), args, Path(tmp)))
                summary = {
                    "dist": kind, "n": n, "rows": rows,
                    "ivf_reaching_target": first_reaching(rows, "IVF", args.target_recall),
                    "hnsw_reaching_target": first_reaching(rows, "HNSW", args.target_recall),
                }
                print(f"  -> recall@{args.k} >= {args.target_recall}: IVF at {summary['ivf_reaching_target']}, "
                      f"HNSW at {summary['hnsw_reaching_target']}", flush=True)
                figures["results"].append(summary)
                if args.json_out:  # after every set, so a long run leaves what it has
                    args.json_out.write_text(json.dumps(figures, indent=1))
                del base, queries, truth
    figures["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    figures["busy_at_end"] = benchlib.busy_processes()
    print(f"peak RSS {figures['peak_rss_gib']:.1f} GiB; other busy processes at end: {figures['busy_at_end'] or 'none'}")
    print()
    print_table(figures)
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=1))
    return 0


def print_table(figures: dict) -> None:
    labels = sorted({label for result in figures["results"] for row in result["rows"]
                     for label in row.get("latency", {})}, reverse=True)
    head = " | ".join(f"p50 / p99 ms ({label.replace('t', ' OpenMP thr')})" for label in labels)
    print(f"| data | N | index | setting | recall@10 | {head} | build s | size MB |")
    print("|---" * (7 + len(labels)) + "|")
    for result in figures["results"]:
        for row in result["rows"]:
            if "not_run" in row:
                print(f"| {result['dist']} | {result['n']:,} | {row['spec']} | - | {row['not_run']} |"
                      + " |" * (len(labels) + 2))
                continue
            cells = " | ".join(f"{row['latency'][label]['p50_ms']:.2f} / {row['latency'][label]['p99_ms']:.2f}"
                               if label in row["latency"] else "-" for label in labels)
            print(f"| {result['dist']} | {result['n']:,} | {row['spec']} | {row['setting']} | {row['recall_at_10']:.3f} | "
                  f"{cells} | {row['build_s']:.1f} | {row['size_mb']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
