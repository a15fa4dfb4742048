"""Vector search: latency p50/p95/p99 and recall@10 vs exact, per index type, through VectorIndex.

Data sets: uniform random unit vectors (the hardest case for IVF and HNSW: no structure to prune
with); `clustered` (unit vectors around --centres random centres); `cliplike` (ClipLikeMixture:
a synthetic stand-in for CLIP image embeddings, a two-level Gaussian mixture in a low effective
dimension; its parameters are in its docstring and docs/BENCHMARKS.md "### 2. Search"). Queries
are fresh draws from the same distribution, never vectors of the index. For each size, builds
Flat, IVF as `choose_index_spec` picks it and HNSW32 (or the index_factory strings in --specs)
with `indexer.store.vectors.VectorIndex.build` (the code path `mmsearch index` uses, fed in
20,000-vector chunks as `ItemReads.iter_vectors` does), then:
- recall@10: share of the exact top 10 (numpy brute force in 100k blocks) found, over --queries queries;
- latency: single queries, one at a time, after a warm-up, per OpenMP thread count; p50/p95/p99 in ms;
- build time, and index size (the file `VectorIndex.save` writes);
- with --autotune-target-ms: what `indexer.store.autotune.tune_index` picks, how long it takes, and the
  recall of its pick on the fresh queries.
An HNSW build that passes --max-build-s is stopped between chunks and reported as not run.
--cache DIR keeps the data, exact neighbours and built indexes, so an untimed build pass (under
`nice`, --no-latency) and a timed pass (under `flock /tmp/mms-bench.lock`) can be separate runs;
--reuse-centroids builds later IVF specs of the same nlist from the first one's k-means centroids.

    python bench/bench_search.py --sizes 20000 --queries 200          # dry run
    python bench/bench_search.py --sizes 100000 1000000 --dists uniform clustered
    # 1M clip-like, build then time (docs/BENCHMARKS.md "### 2. Search"):
    nice -n 19 python bench/bench_search.py --sizes 1000000 --dists cliplike --cache /tmp/mms-s4/c1m \
        --specs IVF4096,SQfp16 IVF4096,Flat IVF4096,SQ8 --reuse-centroids --no-latency
    flock /tmp/mms-bench.lock python bench/bench_search.py --sizes 1000000 --dists cliplike \
        --cache /tmp/mms-s4/c1m --mmap --specs IVF4096,SQfp16 IVF4096,Flat IVF4096,SQ8 Flat \
        --latency-threads 1 --nprobe 8 16 32 64 128 --autotune-target-ms 10
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import benchlib
import numpy as np

CHUNK = 20_000  # ItemReads.iter_vectors' chunk size


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


CLIPLIKE_NOISE_VAR = 0.30  # --spread scales it for cliplike data


@dataclass(frozen=True)
class ClipLikeMixture:
    """A synthetic stand-in for CLIP image embeddings: a two-level Gaussian mixture in a low
    effective dimension, with a shared offset (CLIP embeddings fill a narrow cone, not the sphere).

    A vector is normalise(offset * m + topic_t + cluster_c + scale_c * noise), where m is one
    fixed unit direction, t one of `topics` topics, c one of `clusters` clusters (each in one
    topic; sizes drawn log-normal, so a few are large and many small) and scale_c a per-cluster
    noise scale (log-normal, sigma 0.35). Topic, cluster and noise terms are Gaussians with
    variance falling as 1/(i+1)**decay over the i-th of `dim` axes (participation ratio ~35 at
    decay 1.0), turned by one random rotation so that no axis is special; their total variances
    are topic_var, cluster_var and noise_var. With the defaults, at 1M vectors, a fresh query's
    nearest neighbour has cosine 0.88 (median) and its 10th 0.86, a random pair 0.36; noise_var
    0.6 (`--spread 2`) gives 0.80 / 0.78 / 0.29 (docs/BENCHMARKS.md "### 2. Search", which also
    compares them with real embeddings: `--compare-real`).
    """

    offset: np.ndarray  # (dim,)
    topic_centres: np.ndarray  # (topics, dim)
    cluster_centres: np.ndarray  # (clusters, dim), topic included
    cluster_weights: np.ndarray  # (clusters,), sum 1
    cluster_scales: np.ndarray  # (clusters,)
    axis_scales: np.ndarray  # (dim,)
    rotation: np.ndarray  # (dim, dim), orthogonal
    noise_var: float

    @classmethod
    def make(cls, dim: int, seed: int, topics: int = 64, clusters: int = 3000, decay: float = 1.0,
             offset_norm: float = 0.75, topic_var: float = 0.30, cluster_var: float = 0.25,
             noise_var: float = 0.30) -> "ClipLikeMixture":
        rng = np.random.default_rng([seed, 42])
        axis_scales = (np.arange(1, dim + 1, dtype=np.float64) ** -decay) ** 0.5
        axis_scales = (axis_scales / np.linalg.norm(axis_scales)).astype(np.float32)  # E|g|^2 = 1
        rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        offset = np.zeros(dim, np.float32)
        offset[0] = offset_norm  # rotated below, like everything else
        topic_centres = np.sqrt(topic_var) * rng.standard_normal((topics, dim), dtype=np.float32) * axis_scales
        topic_of = rng.integers(0, topics, clusters)
        cluster_centres = (topic_centres[topic_of]
                           + np.sqrt(cluster_var) * rng.standard_normal((clusters, dim), dtype=np.float32) * axis_scales)
        weights = rng.lognormal(0.0, 1.0, clusters)
        return cls(offset, topic_centres, cluster_centres.astype(np.float32), weights / weights.sum(),
                   rng.lognormal(0.0, 0.35, clusters).astype(np.float32), axis_scales,
                   rotation.astype(np.float32), noise_var)

    def sample(self, n: int, rng: np.random.Generator, block: int = 100_000) -> np.ndarray:
        """n unit vectors (float32), made in blocks so that peak memory stays near the result's size."""
        dim = len(self.offset)
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, block):
            stop = min(n, start + block)
            cluster = rng.choice(len(self.cluster_weights), stop - start, p=self.cluster_weights)
            noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * self.axis_scales
            noise *= (np.sqrt(self.noise_var) * self.cluster_scales[cluster])[:, None]
            noise += self.cluster_centres[cluster]
            noise += self.offset
            out[start:stop] = _normalise_rows(noise @ self.rotation)
        return out


def make_dataset(kind: str, n: int, dim: int, n_queries: int, seed: int, n_centres: int, spread: float):
    if kind == "cliplike":
        mixture = ClipLikeMixture.make(dim, seed, noise_var=CLIPLIKE_NOISE_VAR * spread)
        rng = np.random.default_rng([seed, n, 2])
        return mixture.sample(n, rng), mixture.sample(n_queries, rng)
    rng = np.random.default_rng([seed, n, 0 if kind == "uniform" else 1])
    centres = None
    if kind == "clustered":
        centres = _normalise_rows(rng.standard_normal((n_centres, dim), dtype=np.float32))
    base = make_vectors(kind, n, dim, rng, centres, spread)
    queries = make_vectors(kind, n_queries, dim, rng, centres, spread)
    return base, queries


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force ground truth in numpy blocks of 100k base vectors: (scores, positions into base)."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_positions = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(base), 100_000):
        scores = queries @ base[start:start + 100_000].T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        merged_positions = np.concatenate([best_positions, part + start], axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_positions = np.take_along_axis(merged_positions, order, axis=1)
    return best_scores, best_positions


def cached_dataset(args, kind: str, n: int):
    """(base, queries, truth scores, truth positions, note), from --cache when it holds them."""
    spread = "" if args.spread == 1.0 else f"-spread{args.spread:g}"
    stem = args.cache / f"{kind}-{n}-{args.dim}-q{args.queries}-s{args.seed}{spread}" if args.cache else None
    if stem is not None and stem.with_suffix(".truth.npz").exists():
        base = np.load(stem.with_suffix(".base.npy"), mmap_mode="r")
        saved = np.load(stem.with_suffix(".truth.npz"))
        return base, saved["queries"], saved["scores"], saved["positions"], f"from {stem}.*"
    started = time.perf_counter()
    base, queries = make_dataset(kind, n, args.dim, args.queries, args.seed, args.centres, args.spread)
    made_s = time.perf_counter() - started
    started = time.perf_counter()
    scores, positions = exact_top_k(base, queries, args.k)
    note = f"data {made_s:.1f} s, exact top-{args.k} for {len(queries)} queries {time.perf_counter() - started:.1f} s"
    if stem is not None:
        args.cache.mkdir(parents=True, exist_ok=True)
        np.save(stem.with_suffix(".base.npy"), base)
        np.savez(stem.with_suffix(".truth.npz"), queries=queries, scores=scores, positions=positions)
    return base, queries, scores, positions, note


def neighbour_profile(truth_scores: np.ndarray, queries: np.ndarray, base: np.ndarray) -> dict:
    """Cosine to the 1st and 10th exact neighbour (p10/p50/p90) and to random vectors (mean)."""
    sample = np.asarray(base[:: max(1, len(base) // 2000)][:2000])
    return {"nn1_p10_p50_p90": np.percentile(truth_scores[:, 0], [10, 50, 90]).round(3).tolist(),
            "nn10_p10_p50_p90": np.percentile(truth_scores[:, -1], [10, 50, 90]).round(3).tolist(),
            "random_pair_mean": round(float((queries @ sample.T).mean()), 3)}


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


def neighbour_structure(vectors: np.ndarray) -> dict:
    """Within one small set: cosine to each vector's 1st and 10th neighbour, random pairs, and how
    concentrated the covariance is (participation ratio; share of variance in the top 10 components)."""
    scores = vectors @ vectors.T
    pairs = scores[~np.eye(len(vectors), dtype=bool)]
    np.fill_diagonal(scores, -np.inf)
    ranked = -np.sort(-scores, axis=1)
    eigen = np.sort(np.linalg.eigvalsh(np.cov((vectors - vectors.mean(0)).T)))[::-1]
    return {"nn1_p10_p50_p90": np.percentile(ranked[:, 0], [10, 50, 90]).round(2).tolist(),
            "nn10_p10_p50_p90": np.percentile(ranked[:, 9], [10, 50, 90]).round(2).tolist(),
            "random_pair_mean": round(float(pairs.mean()), 3),
            "participation_ratio": round(float(eigen.sum() ** 2 / (eigen ** 2).sum()), 1),
            "top10_variance": round(float(eigen[:10].sum() / eigen.sum()), 2)}


def compare_with_real(db_folder: Path, spread: float, seed: int) -> None:
    """Real embeddings of an mmsearch index (its SQLite vectors) against as many cliplike draws."""
    import sqlite3

    with sqlite3.connect(f"file:{db_folder / 'mmsearch.db'}?mode=ro", uri=True) as connection:
        real = np.stack([np.frombuffer(blob, np.float32) for (blob,) in connection.execute("SELECT vector FROM vectors")])
    print(f"real, {len(real)} x {real.shape[1]} from {db_folder}: {neighbour_structure(real)}")
    for dim in sorted({real.shape[1], 512}):
        mixture = ClipLikeMixture.make(dim, seed, noise_var=CLIPLIKE_NOISE_VAR * spread)
        drawn = mixture.sample(len(real), np.random.default_rng([seed, 5]))
        print(f"cliplike spread {spread:g}, {len(real)} x {dim}: {neighbour_structure(drawn)}")


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


def build_with_centroids(spec: str, base: np.ndarray, centroids: np.ndarray):
    """`spec` built from another index's trained coarse centroids: no k-means (faiss skips it when
    the quantizer already holds nlist vectors); only scalar-quantizer ranges are trained."""
    import faiss

    from indexer.store.vectors import VectorIndex

    inner = faiss.index_factory(base.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(inner).quantizer.add(np.ascontiguousarray(centroids))
    index = inner  # IVF keeps the item ids in its lists (indexer/store/vectors.py)
    sample = np.ascontiguousarray(base[:: max(1, len(base) // 100_000)])
    index.train(sample)
    for ids, vectors in chunks_with_budget(base, None, {}):
        index.add_with_ids(np.ascontiguousarray(vectors), ids)
    return VectorIndex(index, spec, 0)


def obtain_index(spec: str, base: np.ndarray, args, work: Path, label: str, centroids: dict):
    """(index, build note, facts) built with VectorIndex.build, or loaded from --cache."""
    import faiss

    from indexer.store.vectors import VectorIndex

    trained = f"-train{args.train_size}" if args.train_size else ""
    cached = (args.cache or work) / f"{label}-{spec.replace(',', '_')}{trained}.faiss"
    ivf_prefix = spec.split(",")[0] if spec.startswith("IVF") else None
    if args.cache and cached.exists():
        index = VectorIndex.load(cached, mmap=args.mmap)
        facts = json.loads(cached.with_suffix(".bench.json").read_text())
        return index, f"loaded {cached}{' (mapped)' if args.mmap else ''}", facts
    max_build = args.max_build_s if spec.startswith("HNSW") else None
    progress = {"added": 0, "seconds": 0.0}
    started = time.perf_counter()
    with benchlib.ContentionMeter() as meter:
        if ivf_prefix and ivf_prefix.split("_")[0] in centroids and args.reuse_centroids:
            index = build_with_centroids(spec, base, centroids[ivf_prefix.split("_")[0]])
            how = "centroids reused: SQ training + adding only"
        else:
            index = VectorIndex.build(base.shape[1], spec, chunks_with_budget(base, max_build, progress), generation=0,
                                      train_size=args.train_size)
            how = "VectorIndex.build (k-means included)" if ivf_prefix else "VectorIndex.build"
    build_s = time.perf_counter() - started
    if ivf_prefix:
        ivf = faiss.extract_index_ivf(index.index)
        centroids.setdefault(ivf_prefix.split("_")[0], ivf.quantizer.reconstruct_n(0, ivf.nlist))
    path = cached if args.cache else work / "vectors.faiss"
    started = time.perf_counter()
    index.save(path)
    save_s = time.perf_counter() - started
    facts = {"build_s": build_s, "build_how": how, "save_s": save_s, "size_mb": path.stat().st_size / 1e6,
             "other_cores_build": meter.result.other_cores}
    if args.cache:
        cached.with_suffix(".bench.json").write_text(json.dumps(facts))
    else:
        path.unlink()
    return index, f"built in {build_s:.1f} s ({how}; {meter.result}), saved {facts['size_mb']:.0f} MB in {save_s:.1f} s", facts


def measure_spec(spec: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, settings: list,
                 args, work: Path, label: str = "", centroids: dict | None = None) -> list[dict]:
    import faiss

    default_threads = faiss.omp_get_max_threads()
    over_budget = OVER_BUDGET.get((spec, len(base)))
    if over_budget:  # the same build already ran out of time on another data set of this size
        note = f"not run: {over_budget}"
        print(f"  {spec}: {note}", flush=True)
        return [{"spec": spec, "setting": "-", "not_run": note}]
    started = time.perf_counter()
    try:
        index, note, facts = obtain_index(spec, base, args, work, label or f"n{len(base)}",
                                          centroids if centroids is not None else {})
    except BuildBudgetExceeded:
        elapsed = time.perf_counter() - started
        reason = f"build stopped after {elapsed:.0f} s (over --max-build-s {args.max_build_s:g})"
        OVER_BUDGET[(spec, len(base))] = f"the same build on the other data set ran out of time ({reason})"
        print(f"  {spec}: not run: {reason}", flush=True)
        return [{"spec": spec, "setting": "-", "not_run": f"not run: {reason}", "build_s": elapsed}]
    print(f"  {spec}: {note}", flush=True)

    rows = []
    if args.autotune_target_ms is not None and not spec.startswith("Flat"):
        rows.append(autotune_row(index, spec, base, queries, truth, args, facts))
        index.tuning = index.tuning_report = None  # the fixed settings below are measured as given
    for name, tuning in settings:
        _, found = index.search(queries, truth.shape[1], tuning=tuning)
        recall = recall_at_k(found, truth)
        row = {"spec": spec, "setting": name, "recall_at_10": recall, **facts, "latency": {}}
        line = f"    {name:14s} recall@10 {recall:.3f}"
        for threads in [] if args.no_latency else args.latency_threads:  # 0: faiss's default; 1: as `serve`
            faiss.omp_set_num_threads(threads or default_threads)
            with benchlib.ContentionMeter() as latency_meter:
                latencies = single_query_latencies(index, queries, truth.shape[1], tuning, args.warmup,
                                                   args.latency_queries, args.latency_max_s)
            label_t = f"{threads or default_threads}t"
            row["latency"][label_t] = {
                "p50_ms": benchlib.percentile_ms(latencies, 50), "p95_ms": benchlib.percentile_ms(latencies, 95),
                "p99_ms": benchlib.percentile_ms(latencies, 99),
                "queries": len(latencies), "other_cores": latency_meter.result.other_cores}
            line += (f"  [{label_t}] p50 {row['latency'][label_t]['p50_ms']:7.2f} p95 {row['latency'][label_t]['p95_ms']:7.2f}"
                     f" p99 {row['latency'][label_t]['p99_ms']:7.2f} ms ({len(latencies)} q, others "
                     f"{latency_meter.result.other_cores:.2f} cores)")
        faiss.omp_set_num_threads(default_threads)
        rows.append(row)
        print(line, flush=True)
    del index
    return rows


def autotune_row(index, spec: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, args, facts: dict) -> dict:
    """What `Library` does after each rebuild: indexer.store.autotune.tune_index with the default config
    (plus --autotune-target-ms), over the stored vectors in 20,000-vector chunks."""
    from indexer.store.autotune import TuneConfig, tune_index

    config = TuneConfig(target_latency_ms=args.autotune_target_ms)
    started = time.perf_counter()
    with benchlib.ContentionMeter() as meter:
        result = tune_index(index, lambda: chunks_with_budget(base, None, {}), config)
    tune_s = time.perf_counter() - started
    _, found = index.search(queries, truth.shape[1], tuning=result.tuning)
    fresh = recall_at_k(found, truth)  # the bench's own queries: not in the index, unlike the tuner's
    print(f"    autotune: {result.status_line()}; recall@10 {fresh:.3f} on the {len(queries)} fresh queries "
          f"(tuning took {tune_s:.1f} s, {meter.result})", flush=True)
    return {"spec": spec, "setting": f"autotune -> {result.parameter}={result.value}", "autotune": result.as_dict(),
            "fresh_recall_at_10": fresh, "tune_s": tune_s, **facts}


def settings_for(spec: str, args) -> list:
    from indexer.store.vectors import DEFAULT_EF_SEARCH, DEFAULT_NPROBE, SearchTuning

    if spec.startswith("IVF"):
        nlist = int(spec[3:].split(",")[0].split("_")[0])
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
    parser.add_argument("--dists", nargs="+", default=["uniform", "clustered"], choices=["uniform", "clustered", "cliplike"])
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
                        help="clustered: noise norm relative to the centre (1.0: cos to centre ~0.71); "
                             "cliplike: multiplies the per-vector noise variance (1.0: 0.30)")
    parser.add_argument("--max-build-s", type=float, default=600.0, help="give up an HNSW build after this")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--omp-threads", type=int, default=0, help="faiss OpenMP threads (0: faiss's default)")
    parser.add_argument("--latency-threads", type=int, nargs="+", default=[0, 1],
                        help="time single queries with these OpenMP thread counts (0: the default)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--specs", nargs="+", help="index_factory strings to measure instead of --types")
    parser.add_argument("--cache", type=Path, help="keep data, exact neighbours and built indexes here; reuse them")
    parser.add_argument("--mmap", action="store_true", help="load cached indexes mapped, as searches do")
    parser.add_argument("--reuse-centroids", action="store_true",
                        help="IVF specs after the first with the same nlist reuse its k-means centroids")
    parser.add_argument("--train-size", type=int, default=0,
                        help="IVF: train k-means on at least this many vectors (0: VectorIndex.build's default)")
    parser.add_argument("--no-latency", action="store_true", help="recall and build only (an untimed pass)")
    parser.add_argument("--autotune-target-ms", type=float,
                        help="also run indexer.store.autotune.tune_index on each IVF/HNSW index with this latency target")
    parser.add_argument("--compare-real", type=Path, metavar="DB_FOLDER",
                        help="only compare the neighbour structure of an mmsearch index's vectors with cliplike draws")
    args = parser.parse_args(argv)
    if args.compare_real:
        compare_with_real(args.compare_real, args.spread, args.seed)
        return 0

    import faiss

    if args.omp_threads:
        faiss.omp_set_num_threads(args.omp_threads)

    from indexer.store.vectors import DEFAULT_EF_SEARCH, DEFAULT_NPROBE, choose_index_spec

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
                base, queries, truth_scores, truth, note = cached_dataset(args, kind, n)
                profile = neighbour_profile(truth_scores, queries, base)
                print(f"{kind} n={n:,} dim={args.dim}: {note}; cosine to neighbours {profile}", flush=True)
                specs = {"flat": "Flat", "ivf": choose_index_spec(n, "ivf" if n < 100_000 else "auto"),
                         "hnsw": choose_index_spec(n, "hnsw")}
                rows = []
                centroids: dict = {}
                for spec in args.specs or [specs[index_type] for index_type in args.types]:
                    rows.extend(measure_spec(spec, base, queries, truth, settings_for(spec, args), args, Path(tmp),
                                             f"{kind}-{n}" + ("" if args.spread == 1.0 else f"-spread{args.spread:g}"),
                                             centroids))
                summary = {
                    "dist": kind, "n": n, "rows": rows, "neighbours": profile,
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
    head = " | ".join(f"p50 / p95 / p99 ms ({label.replace('t', ' OpenMP thr')})" for label in labels)
    print(f"| data | N | index | setting | recall@10 | {head} | build s | size MB |")
    print("|---" * (7 + len(labels)) + "|")
    for result in figures["results"]:
        for row in result["rows"]:
            if "autotune" in row:
                tuned = row["autotune"]
                print(f"| {result['dist']} | {result['n']:,} | {row['spec']} | {row['setting']} | "
                      f"{row['fresh_recall_at_10']:.3f} ({tuned['recall']:.3f} on the tuning sample) | {tuned['status']} |"
                      + " |" * (len(labels) + 1))
                continue
            if "not_run" in row:
                print(f"| {result['dist']} | {result['n']:,} | {row['spec']} | - | {row['not_run']} |"
                      + " |" * (len(labels) + 2))
                continue
            cells = " | ".join(f"{row['latency'][label]['p50_ms']:.2f} / {row['latency'][label]['p95_ms']:.2f} / "
                               f"{row['latency'][label]['p99_ms']:.2f}"
                               if label in row["latency"] else "-" for label in labels)
            print(f"| {result['dist']} | {result['n']:,} | {row['spec']} | {row['setting']} | {row['recall_at_10']:.3f} | "
                  f"{cells} | {row['build_s']:.1f} | {row['size_mb']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
