"""Vector search on a GPU: faiss-gpu when it is installed, else exact search in torch.

- With faiss-gpu (`faiss.StandardGpuResources` present and a GPU visible), the index saved on disk
  is cloned to the GPU (`faiss.index_cpu_to_gpu`) and searched there with the same nprobe.
- Without it, on a CUDA machine, `TorchExactIndex` holds the vectors on the GPU in fp16 and ranks a
  batch of queries by chunked matrix product + top-k, merging the chunks' top-k: exact up to fp16
  rounding of the scores (recall against fp32 is measured in bench/gpu_check.py).

Both answer `search(queries, k, allowed_ids=..., tuning=...) -> (scores, ids)` like
`indexer.store.vectors.VectorIndex`, with ids -1 where fewer than k items qualify.
`TorchExactIndex` runs on any torch device, so the tests check it on the CPU against FAISS.
"""
from __future__ import annotations

import logging
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)

QUERY_BATCH = 1024
SCORE_BUDGET_BYTES = 2 << 30  # one chunk's (queries x vectors) score matrix at most this size


def faiss_gpu_count() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    try:
        import faiss
    except ImportError:
        return 0
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except (AttributeError, RuntimeError):
        return 0


class TorchExactIndex:
    """Exact inner-product top-k over vectors held on one torch device."""

    def __init__(self, ids: np.ndarray, vectors, device: str = "cuda", dtype=None):
        import torch

        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.vectors = torch.as_tensor(vectors).to(self.device, self.dtype).contiguous()
        self.item_ids = torch.as_tensor(np.asarray(ids, dtype=np.int64)).to(self.device)
        if self.vectors.ndim != 2 or len(self.item_ids) != len(self.vectors):
            raise ValueError("ids and vectors must match: (n,) and (n, dim)")
        self.spec = f"torch-exact-{str(self.dtype).replace('torch.', '')}"
        self.tuning = None

    @classmethod
    def from_chunks(cls, chunks: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, device: str = "cuda",
                    dtype=None) -> "TorchExactIndex":
        """Streamed (ids, vectors) chunks (ItemReads.iter_vectors) -> an index, one chunk in host memory at a time."""
        import torch

        device_ = torch.device(device)
        dtype = dtype or (torch.float16 if device_.type == "cuda" else torch.float32)
        id_parts, vector_parts = [], []
        for ids, vectors in chunks:
            id_parts.append(np.asarray(ids, dtype=np.int64))
            vector_parts.append(torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(device_, dtype))
        vectors = torch.cat(vector_parts) if vector_parts else torch.zeros((0, dim), device=device_, dtype=dtype)
        ids = np.concatenate(id_parts) if id_parts else np.zeros(0, dtype=np.int64)
        return cls(ids, vectors, device, dtype)

    @property
    def ntotal(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def _chunk_rows(self, n_queries: int) -> int:
        per_row = max(1, n_queries) * self.vectors.element_size()
        return max(1024, SCORE_BUDGET_BYTES // per_row)

    def search_tensor(self, queries, k: int, allowed=None):
        """queries: (q, dim) tensor on this device -> (scores, positions) tensors, best first.

        `allowed`: a bool mask over stored rows, or None. Positions are -1 where fewer than k rows qualify.
        """
        import torch

        n = self.ntotal
        k = max(1, k)
        best_scores = best_positions = None
        chunk = self._chunk_rows(len(queries))
        for start in range(0, n, chunk):
            block = self.vectors[start:start + chunk]
            scores = queries @ block.T
            if allowed is not None:
                scores = scores.masked_fill(~allowed[start:start + chunk][None, :], float("-inf"))
            top_scores, top_positions = scores.topk(min(k, len(block)), dim=1)
            top_positions += start
            if best_scores is None:
                best_scores, best_positions = top_scores, top_positions
                continue
            merged = torch.cat([best_scores, top_scores], 1)
            order = merged.topk(min(k, merged.shape[1]), dim=1).indices
            best_scores = merged.gather(1, order)
            best_positions = torch.cat([best_positions, top_positions], 1).gather(1, order)
        if best_scores is None:
            shape = (len(queries), k)
            return (torch.full(shape, float("-inf"), device=self.device), torch.full(shape, -1, device=self.device))
        best_positions = best_positions.masked_fill(torch.isinf(best_scores), -1)
        return best_scores, best_positions

    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               tuning=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, item_ids) per query, like VectorIndex.search; `tuning` is ignored (exact)."""
        import torch

        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        allowed = None
        if allowed_ids is not None:
            wanted = torch.as_tensor(np.asarray(allowed_ids, dtype=np.int64)).to(self.device)
            allowed = torch.isin(self.item_ids, wanted)
        all_scores, all_ids = [], []
        with torch.inference_mode():
            for start in range(0, len(queries), QUERY_BATCH):
                batch = torch.from_numpy(queries[start:start + QUERY_BATCH]).to(self.device, self.dtype)
                scores, positions = self.search_tensor(batch, k, allowed)
                ids = torch.where(positions >= 0, self.item_ids[positions.clamp(min=0)], torch.full_like(positions, -1))
                all_scores.append(scores.float().cpu().numpy())
                all_ids.append(ids.cpu().numpy())
        return np.concatenate(all_scores), np.concatenate(all_ids).astype(np.int64)


class FaissGpuIndex:
    """A saved FAISS index cloned to a GPU with faiss-gpu (the user's install; not exercised in CI)."""

    def __init__(self, vector_index, device: str):
        import faiss

        gpu = int(device.split(":")[1]) if ":" in device else 0
        self.resources = faiss.StandardGpuResources()
        self.index = faiss.index_cpu_to_gpu(self.resources, gpu, vector_index.index)
        self.cpu = vector_index
        self.spec = vector_index.spec
        self.tuning = vector_index.tuning

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               tuning=None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if allowed_ids is not None:  # GPU indexes take no ID selector: filtered searches stay on the CPU copy
            return self.cpu.search(queries, k, allowed_ids=allowed_ids, tuning=tuning)
        tuning = self.cpu.effective_tuning(tuning)
        if self.spec.startswith("IVF"):
            faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", int(tuning.nprobe))
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        return self.index.search(queries, k)


def gpu_index(library, device: str):
    """The library's vectors searchable on `device` (a CUDA device): faiss-gpu when present, else torch."""
    model = library.model()
    if model is None:
        return None
    if faiss_gpu_count() > 0:
        cpu_index = library.vectors_for_search()
        if cpu_index is None:
            return None
        if getattr(cpu_index, "kind", "memory") == "ondisk":  # lists on disk + exact re-ranking: searched where it is
            return cpu_index
        try:
            return FaissGpuIndex(cpu_index, device)
        except (RuntimeError, AttributeError) as exc:  # an index type faiss-gpu cannot hold (HNSW, say)
            log.info("faiss-gpu cannot take %s (%s); exact search in torch instead", cpu_index.spec, exc)
    # straight from the database: the FAISS file (possibly stale, then rebuilt on the CPU) is not needed
    return TorchExactIndex.from_chunks(library.reads.iter_vectors(model.dim), model.dim, device)
