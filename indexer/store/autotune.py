"""Pick nprobe (IVF) or efSearch (HNSW) for an index: the cheapest setting that reaches a recall
target, then check it against a latency target.

As autofaiss does: a sample of the index's own vectors serves as queries; their exact neighbours
come from brute force over all stored vectors (streamed in chunks, memory stays flat), each query's
own entry left out (held out). Each candidate setting, smallest first, is scored for recall@k
against that truth with one batch search (cheap); the first that reaches the target (plus a margin
of 0.015 for the sample's error) wins: recall and latency both grow with nprobe / efSearch, so the
first is also the fastest. Only that setting is timed, on single queries with one OpenMP thread (as
`mmsearch serve` runs); when its p50 is over the latency target, no setting can give the recall
target within it, and the result says so (a warning in the log, and `status` in the report stored
with the index) rather than trading recall away silently. The choice is stored with the index (the
vectors.json sidecar) and searches use it.
"""
from __future__ import annotations

import contextlib
import logging
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from indexer.store.vectors import SearchTuning, VectorIndex

log = logging.getLogger(__name__)

NPROBE_STEPS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024, 2048, 4096, 8192, 16384)
EF_SEARCH_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
# An on-disk IVF-PQ index (indexer.store.ondisk) re-scores its best PQ candidates with their exact
# vectors: past a few million vectors its recall is bound by that depth, not by nprobe (10M x 512:
# re-rank 100 gives recall@10 0.90-0.91 at any nprobe from 16 to 64, re-rank 500 0.97;
# docs/BENCHMARKS.md "An index larger than memory"). So nprobe and the depth are tuned together,
# cheapest pair first: one re-scored row costs about as much as scanning RERANK_COST_CODES PQ codes
# (10 us against 45 ns, warm, at 10M), and a pair no larger than one that failed is not tried.
RERANK_STEPS = (100, 200, 500, 1000, 2000)
RERANK_COST_CODES = 200


@dataclass(frozen=True)
class TuneConfig:
    target_recall: float = 0.95
    # the sample's recall must clear the target by this much: it is an estimate (per-query recall
    # varies, so 500 queries pin the mean to about +-0.007; 1M clip-like vectors, IVF4096: 0.957 on a
    # 200-query sample vs 0.948 on 1,000 fresh queries at nprobe 4, 0.960 vs 0.946 at nprobe 16)
    margin: float = 0.015
    target_latency_ms: float | None = 10.0  # p50 of one query at a time; None: not checked
    k: int = 10
    queries: int = 500  # exact neighbours for 500 queries over 1M x 512: ~5 s on 2 cores
    timed_queries: int = 50  # single-query latency is the median over up to this many (after 5 warm-ups)
    max_timing_s: float = 2.0  # ... or fewer, once timing has taken this long (at least 10)
    latency_threads: int = 1  # OpenMP threads while timing: 1 as `mmsearch serve`; 0 leaves faiss's setting
    seed: int = 0


@dataclass
class TuneResult:
    tuning: SearchTuning
    parameter: str  # "nprobe", "ef_search" or "" (exact index: nothing to tune)
    value: int
    recall: float
    latency_ms: float
    reached: bool  # the recall target plus the margin
    trials: list[dict] = field(default_factory=list)
    target_recall: float = 0.95
    margin: float = 0.0
    target_latency_ms: float | None = None
    latency_threads: int = 0
    rerank: int = 0  # an on-disk index: the re-rank depth tuned with nprobe (0: not tuned)

    @property
    def latency_met(self) -> bool | None:
        """None when there was no latency target (or nothing to time)."""
        if self.target_latency_ms is None or not self.parameter:
            return None
        return self.latency_ms <= self.target_latency_ms

    def status_line(self) -> str:
        """One line for people: the setting, its recall and latency, and which target it missed."""
        if not self.parameter:
            return "exact index: nothing to tune"
        threads = f"{self.latency_threads} thread{'s' if self.latency_threads != 1 else ''}" \
            if self.latency_threads else "faiss's default threads"
        setting = f"{self.parameter}={self.value}" + (f", rerank={self.rerank}" if self.rerank else "")
        line = (f"{setting}: recall@10 {self.recall:.3f} on a sample of the index's own "
                f"vectors, p50 {self.latency_ms:.2f} ms per query ({threads})")
        if not self.reached:
            line += (f"; recall target {self.target_recall:g} (+ margin {self.margin:g}) not reached by any setting "
                     f"(this is the best)")
        if self.latency_met is False:
            line += (f"; over the {self.target_latency_ms:g} ms latency target"
                     + (" even at the cheapest setting reaching the recall target" if self.reached else ""))
        elif self.latency_met:
            line += f"; within the {self.target_latency_ms:g} ms target"
        return line

    def as_dict(self) -> dict:
        return {"parameter": self.parameter, "value": self.value, "rerank": self.rerank, "recall": round(self.recall, 4),
                "latency_ms": round(self.latency_ms, 3), "reached": self.reached,
                "target_recall": self.target_recall, "margin": self.margin, "target_latency_ms": self.target_latency_ms,
                "latency_met": self.latency_met, "latency_threads": self.latency_threads,
                "status": self.status_line(), "trials": self.trials}


def exact_neighbours(queries: np.ndarray, chunks: Iterable[tuple[np.ndarray, np.ndarray]], k: int,
                     exclude: np.ndarray | None = None) -> np.ndarray:
    """Ids of the exact top-k by inner product, streamed over (ids, vectors) chunks; `exclude[i]`
    (a query's own id) never counts as its neighbour."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for ids, vectors in chunks:
        scores = queries @ np.ascontiguousarray(vectors, dtype=np.float32).T
        if exclude is not None:
            scores[ids[None, :] == exclude[:, None]] = -np.inf
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        merged_ids = np.concatenate([best_ids, ids[part]], axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_ids = np.take_along_axis(merged_ids, order, axis=1)
    return best_ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(row[row >= 0].tolist()) & set(t[t >= 0].tolist())) for row, t in zip(found, truth))
    return hits / max(1, int((truth >= 0).sum()))


def sample_queries(chunks: Iterable[tuple[np.ndarray, np.ndarray]], count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` (ids, vectors) drawn uniformly from the chunks in one pass (each vector gets a
    random key; the `count` smallest keys win)."""
    rng = np.random.default_rng(seed)
    kept_keys = np.zeros(0)
    kept_ids = np.zeros(0, np.int64)
    kept = None
    for ids, vectors in chunks:
        keys = np.concatenate([kept_keys, rng.random(len(ids))])
        all_ids = np.concatenate([kept_ids, np.asarray(ids, dtype=np.int64)])
        all_vectors = np.asarray(vectors, dtype=np.float32) if kept is None else np.concatenate([kept, vectors])
        order = np.argsort(keys, kind="stable")[:count]
        kept_keys, kept_ids, kept = keys[order], all_ids[order], np.ascontiguousarray(all_vectors[order])
    if kept is None:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return kept_ids, kept


def _steps(index: VectorIndex) -> tuple[str, tuple]:
    """The parameter tuned and its settings, cheapest first: values, or (nprobe, rerank) pairs for
    an on-disk index."""
    if re.search(r"(^|,)IVF\d+", index.spec):
        import faiss

        nlist = faiss.extract_index_ivf(index.index).nlist
        nprobes = tuple(step for step in NPROBE_STEPS if step < nlist) + (nlist,)
        if getattr(index, "kind", "") == "ondisk":
            per_list = max(1, int(index.index.ntotal)) / nlist  # PQ codes scanned per list probed
            pairs = [(nprobe, rerank) for rerank in RERANK_STEPS for nprobe in nprobes]
            return "nprobe", tuple(sorted(pairs, key=lambda pair: (pair[0] * per_list + pair[1] * RERANK_COST_CODES,
                                                                   pair[1])))
        return "nprobe", nprobes
    if index.spec.startswith("HNSW"):
        return "ef_search", EF_SEARCH_STEPS
    return "", ()


def _tuning(parameter: str, value) -> SearchTuning:
    if parameter == "nprobe" and isinstance(value, tuple):
        return SearchTuning(nprobe=value[0], rerank=value[1])
    if parameter == "nprobe":
        return SearchTuning(nprobe=value)
    if parameter == "ef_search":
        return SearchTuning(ef_search=value)
    return SearchTuning()


def _trial(parameter: str, value) -> dict:
    return {parameter: value[0], "rerank": value[1]} if isinstance(value, tuple) else {parameter: value}


@contextlib.contextmanager
def _omp_threads(threads: int):
    if not threads:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def single_query_ms(index: VectorIndex, queries: np.ndarray, k: int, tuning: SearchTuning,
                    config: TuneConfig) -> float:
    """Median milliseconds of one query at a time (5 warm-ups first), with config.latency_threads."""
    times = []
    with _omp_threads(config.latency_threads):
        for query in queries[:5]:
            index.search(query[None], k, tuning=tuning)
        budget_start = time.perf_counter()
        for query in queries[:config.timed_queries]:
            started = time.perf_counter()
            index.search(query[None], k, tuning=tuning)
            times.append(time.perf_counter() - started)
            if len(times) >= 10 and time.perf_counter() - budget_start > config.max_timing_s:
                break
    return statistics.median(times) * 1000 if times else 0.0


def autotune(index: VectorIndex, query_ids: np.ndarray, query_vectors: np.ndarray,
             truth: np.ndarray, config: TuneConfig = TuneConfig()) -> TuneResult:
    """The cheapest setting reaching config.target_recall (the best one tried when none does), with
    its single-query latency checked against config.target_latency_ms."""
    parameter, steps = _steps(index)
    if not steps or len(query_vectors) == 0:
        return TuneResult(SearchTuning(), "", 0, 1.0, 0.0, True, target_recall=config.target_recall)
    trials = []
    chosen = None  # (recall, value)
    failed: list[tuple] = []  # (nprobe, rerank) pairs that missed: a pair no larger in both misses too
    k = config.k
    for value in steps:
        if isinstance(value, tuple) and any(value[0] <= a and value[1] <= b for a, b in failed):
            continue
        _, found = index.search(query_vectors, k + 1, tuning=_tuning(parameter, value))
        # the query's own vector is in the index: drop it, keep k
        found = np.stack([np.concatenate([row[row != own], np.full(1, -1)])[:k] for row, own in zip(found, query_ids)])
        recall = recall_at_k(found, truth)
        trials.append({**_trial(parameter, value), "recall": round(recall, 4)})
        log.debug("autotune %s: recall@%d %.3f", _trial(parameter, value), k, recall)
        if chosen is None or recall > chosen[0]:
            chosen = (recall, value)
        if recall >= config.target_recall + config.margin:
            break
        if isinstance(value, tuple):
            failed.append(value)
    recall, value = chosen
    tuning = _tuning(parameter, value)
    latency_ms = single_query_ms(index, query_vectors, k, tuning, config)
    trials[-1]["latency_ms"] = round(latency_ms, 3)
    return TuneResult(tuning, parameter, value[0] if isinstance(value, tuple) else value, recall, latency_ms,
                      recall >= config.target_recall + config.margin, trials, config.target_recall, config.margin,
                      config.target_latency_ms, config.latency_threads, rerank=value[1] if isinstance(value, tuple) else 0)


def tune_index(index: VectorIndex, chunks_factory, config: TuneConfig = TuneConfig()) -> TuneResult:
    """Sample queries from the stored vectors, find their exact neighbours, tune; sets index.tuning.

    `chunks_factory()` yields (ids, vectors) over every stored vector (called twice: sample, truth).
    """
    if not _steps(index)[1]:
        return TuneResult(SearchTuning(), "", 0, 1.0, 0.0, True, target_recall=config.target_recall)
    started = time.perf_counter()
    query_ids, query_vectors = sample_queries(chunks_factory(), config.queries, config.seed)
    truth = exact_neighbours(query_vectors, chunks_factory(), config.k, exclude=query_ids)
    result = autotune(index, query_ids, query_vectors, truth, config)
    index.tuning = result.tuning
    index.tuning_report = {key: value for key, value in result.as_dict().items() if key != "trials"}
    missed = not result.reached or result.latency_met is False
    log.log(logging.WARNING if missed else logging.INFO, "autotuned %s in %.1f s: %s", index.spec,
            time.perf_counter() - started, result.status_line())
    return result
