"""Which vector ids to read for a random sample of a collection (pure; no database layer)."""
from __future__ import annotations

import numpy as np


def sample_candidates(top_id: int, count: int, seed: int) -> np.ndarray | None:
    """Vector ids to try for a random sample of about `count` among ids 1..top_id, ascending.

    Vector ids are nearly dense (AUTOINCREMENT; gaps only where items were deleted or belong to
    another encoder), so twice `count` candidates below the largest id find about `count` vectors
    without a table scan. None: there are few enough to read them all.
    """
    if top_id <= 2 * count:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(top_id, size=2 * count, replace=False).astype(np.int64) + 1)


def unpack_sample(rows, dim: int, count: int) -> np.ndarray:
    """(id, blob) rows -> at most `count` vectors [n, dim] float32; blobs of another size are skipped."""
    blobs = [row[1] for row in rows if len(row[1]) == dim * 4][:count]
    if not blobs:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
