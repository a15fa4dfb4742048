"""Training an OPQ + IVF-PQ index on a sample, within what a small shared CPU allows.

faiss's defaults are tuned for quality on big machines; each setting here names what it cost on
the 2-core CPU of docs/BENCHMARKS.md, and what it gives up (little: the on-disk index re-ranks its
candidates with exact vectors, so rougher codes cost recall only before the re-rank).
"""
from __future__ import annotations

import itertools
import math
import re
from typing import Iterator

import numpy as np

TRAIN_POINTS_PER_LIST = 24  # k-means sample per coarse list (docs/BENCHMARKS.md: 24 vs 40 per list moves recall <= 0.004)
MAX_TRAIN_POINTS = 1_000_000
MIN_TRAIN_POINTS = 256 * 40  # 8-bit PQ: 256 centroids per sub-quantizer, faiss wants >= 39 points each
TWO_LEVEL_FROM = 4096  # lists: from here the coarse centroids come from two-level k-means
# OPQ: faiss's defaults (50 rotation + PQ refits on 65,536 vectors) spent over half an hour of a
# shared 2-core CPU on 512-d; with re-ranking a rougher rotation costs recall only before the re-rank
OPQ_ITERATIONS = 20
OPQ_TRAIN_POINTS = 32_768
# PQ codebooks (faiss: 25 k-means iterations on up to 256 points per centroid, 65,536 vectors):
# 64 sub-quantizers of 256 centroids in 4-d took over 20 minutes of that CPU for 300k vectors
PQ_TRAIN_ITERATIONS = 10
PQ_POINTS_PER_CENTROID = 64
QUANTIZER_EF_ADD = 64  # HNSW efSearch when assigning added vectors to lists (and the least when searching)


def _faiss():
    import faiss

    return faiss


def default_train_size(spec: str) -> int:
    match = re.search(r"IVF(\d+)", spec)
    return max(MIN_TRAIN_POINTS, min(int(match.group(1)) * TRAIN_POINTS_PER_LIST, MAX_TRAIN_POINTS)) if match else 0


def train(index, chunks, train_vectors, needed: int, progress) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Train `index` now (on train_vectors, else on the first `needed` vectors); returns every chunk."""
    ivf = _faiss().extract_index_ivf(index)
    ivf.cp.min_points_per_centroid = min(ivf.cp.min_points_per_centroid, TRAIN_POINTS_PER_LIST // 2)
    iterator = iter(chunks)
    if train_vectors is not None and len(train_vectors):
        progress("train", 0)
        train_index(index, train_vectors)
        return iterator
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    held = 0
    for ids, vectors in iterator:
        pending.append((ids, vectors))
        held += len(ids)
        if held >= needed:
            break
    if not held:
        raise ValueError("an on-disk index needs at least one vector")
    progress("train", 0)
    train_index(index, np.concatenate([vectors for _, vectors in pending]))
    return itertools.chain(pending, iterator)


def train_index(index, sample: np.ndarray) -> None:
    """Train the pre-transforms (OPQ), the coarse centroids and the PQ codebooks on `sample`.

    From TWO_LEVEL_FROM lists on, the centroids come from two-level k-means (faiss contrib's
    two_level_clustering: sqrt(nlist) clusters, then each split in proportion to its share):
    k-means costs sample * nlist per iteration, two levels sample * 2 * sqrt(nlist), 64x less at
    16,384 lists. Spherical k-means: the index ranks by inner product of unit vectors.
    """
    faiss = _faiss()
    x = np.ascontiguousarray(sample, dtype=np.float32)
    if isinstance(index, faiss.IndexPreTransform):
        for number in range(index.chain.size()):
            transform = faiss.downcast_VectorTransform(index.chain.at(number))
            if isinstance(transform, faiss.OPQMatrix):
                transform.niter = OPQ_ITERATIONS
                transform.max_train_points = OPQ_TRAIN_POINTS
            transform.train(x)
            x = np.ascontiguousarray(transform.apply(x), dtype=np.float32)
    ivf = faiss.extract_index_ivf(index)
    if ivf.nlist >= TWO_LEVEL_FROM and len(x) >= 4 * ivf.nlist:
        from faiss.contrib.clustering import two_level_clustering

        centroids, _ = two_level_clustering(x, int(math.sqrt(ivf.nlist)), ivf.nlist, spherical=True,
                                            min_points_per_centroid=1, seed=1234)
        ivf.quantizer.train(centroids)
        ivf.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    pq_index = faiss.downcast_index(ivf)
    if hasattr(pq_index, "do_polysemous_training"):
        pq_index.do_polysemous_training = False  # a code order for Hamming pre-filtering, which search never uses
    if hasattr(pq_index, "pq"):  # codebooks: 256 centroids in 4-d sub-spaces need far fewer points than faiss takes
        pq_index.pq.cp.niter = PQ_TRAIN_ITERATIONS
        pq_index.pq.cp.max_points_per_centroid = PQ_POINTS_PER_CENTROID
    ivf.train(x)  # k-means unless the quantizer holds its centroids already; then PQ on the residuals
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = QUANTIZER_EF_ADD  # which list each added vector joins
    index.is_trained = True
