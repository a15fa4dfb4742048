"""Retrieval metrics on (image, caption) pairs: the one code path for training's validation and `mmsearch eval`.

Text -> image: each distinct caption is a query over the distinct images; image -> text: each
distinct image is a query over the distinct captions. When several pairs share an image or a
caption, a query has several right answers and counts as a hit at k when *any* of them is in the
top k: its rank is the rank of its best-scoring right answer. Ranks are 1-based and pessimistic
about ties: a wrong candidate scoring exactly as high as the best right one counts as ahead of it,
so a model that gives every input the same vector scores near zero, not perfectly; a score that is
not finite (a diverged model's NaN) ranks last.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.finetune.pairs import PairIndex

log = logging.getLogger(__name__)

RANK_BLOCK = 1024  # queries scored at a time: memory stays block x candidates
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DirectionMetrics:
    r1: float
    r5: float
    r10: float
    mean_rank: float
    queries: int

    def to_dict(self) -> dict:
        return {"r1": self.r1, "r5": self.r5, "r10": self.r10, "mean_rank": self.mean_rank}

    @classmethod
    def from_ranks(cls, ranks: np.ndarray) -> "DirectionMetrics":
        if len(ranks) == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0)
        return cls(
            r1=float(np.mean(ranks <= 1)),
            r5=float(np.mean(ranks <= 5)),
            r10=float(np.mean(ranks <= 10)),
            mean_rank=float(np.mean(ranks)),
            queries=int(len(ranks)),
        )

    @classmethod
    def from_dict(cls, data: dict, queries: int = 0) -> "DirectionMetrics":
        return cls(float(data["r1"]), float(data["r5"]), float(data["r10"]), float(data["mean_rank"]), queries)


@dataclass(frozen=True)
class RetrievalMetrics:
    n: int  # pairs
    images: int  # distinct images (image -> text queries)
    captions: int  # distinct captions (text -> image queries)
    text_to_image: DirectionMetrics
    image_to_text: DirectionMetrics

    @property
    def mean_recall(self) -> float:
        """Mean of R@1, R@5, R@10 over both directions: the number training keeps its best epoch by."""
        values = [getattr(direction, key) for direction in (self.text_to_image, self.image_to_text)
                  for key in ("r1", "r5", "r10")]
        return float(np.mean(values))

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "images": self.images,
            "captions": self.captions,
            "text_to_image": self.text_to_image.to_dict(),
            "image_to_text": self.image_to_text.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "RetrievalMetrics":
        return cls(
            n=int(data["n"]),
            images=int(data.get("images", 0)),
            captions=int(data.get("captions", 0)),
            text_to_image=DirectionMetrics.from_dict(data["text_to_image"], int(data.get("captions", 0))),
            image_to_text=DirectionMetrics.from_dict(data["image_to_text"], int(data.get("images", 0))),
        )


def match_ranks(query_vectors: np.ndarray, candidate_vectors: np.ndarray,
                matches: Sequence[np.ndarray], block: int = RANK_BLOCK) -> np.ndarray:
    """1-based rank of each query's best right candidate (pessimistic ties), by inner product."""
    query_vectors = np.asarray(query_vectors, dtype=np.float32)
    candidate_vectors = np.asarray(candidate_vectors, dtype=np.float32)
    ranks = np.empty(len(query_vectors), dtype=np.int64)
    for start in range(0, len(query_vectors), block):
        stop = min(start + block, len(query_vectors))
        scores = query_vectors[start:stop] @ candidate_vectors.T
        scores[~np.isfinite(scores)] = -np.inf  # a diverged model's NaNs must not rank first
        right = np.zeros(scores.shape, dtype=bool)
        for row, candidates in enumerate(matches[start:stop]):
            right[row, candidates] = True
        best = np.where(right, scores, -np.inf).max(axis=1)
        ranks[start:stop] = 1 + ((scores >= best[:, None]) & ~right).sum(axis=1)
    return ranks


def retrieval_metrics(image_vectors: np.ndarray, text_vectors: np.ndarray, index: PairIndex) -> RetrievalMetrics:
    """Metrics from unit vectors of index.images (rows in order) and index.captions."""
    images_of_caption: list[list[int]] = [[] for _ in index.captions]
    captions_of_image: list[list[int]] = [[] for _ in index.images]
    for image_id, caption_id in zip(index.image_ids.tolist(), index.caption_ids.tolist()):
        images_of_caption[caption_id].append(image_id)
        captions_of_image[image_id].append(caption_id)
    text_ranks = match_ranks(text_vectors, image_vectors, _id_arrays(images_of_caption))
    image_ranks = match_ranks(image_vectors, text_vectors, _id_arrays(captions_of_image))
    return RetrievalMetrics(
        n=len(index),
        images=len(index.images),
        captions=len(index.captions),
        text_to_image=DirectionMetrics.from_ranks(text_ranks),
        image_to_text=DirectionMetrics.from_ranks(image_ranks),
    )


def _id_arrays(lists: list[list[int]]) -> list[np.ndarray]:
    return [np.unique(np.asarray(items, dtype=np.int64)) for items in lists]


def evaluate_pairs(
    index: PairIndex,
    embed_images: Callable[[Sequence[int]], np.ndarray],
    embed_texts: Callable[[Sequence[str]], np.ndarray],
    batch_size: int = 64,
    on_progress: Progress | None = None,
) -> RetrievalMetrics:
    """Embed every distinct image (by its index in index.images) and caption in batches, then score.

    `embed_images(ids)` and `embed_texts(captions)` return unit float32 rows; training passes its
    towers, `mmsearch eval` a loaded model's encoders.
    """
    image_chunks = []
    for start in range(0, len(index.images), batch_size):
        ids = list(range(start, min(start + batch_size, len(index.images))))
        image_chunks.append(np.asarray(embed_images(ids), dtype=np.float32))
        if on_progress is not None:
            on_progress("images", ids[-1] + 1, len(index.images))
    text_chunks = []
    text_batch = max(batch_size, 256)
    for start in range(0, len(index.captions), text_batch):
        captions = list(index.captions[start:start + text_batch])
        text_chunks.append(np.asarray(embed_texts(captions), dtype=np.float32))
        if on_progress is not None:
            on_progress("captions", start + len(captions), len(index.captions))
    return retrieval_metrics(np.concatenate(image_chunks), np.concatenate(text_chunks), index)


def evaluate_model(
    model,
    pairs: Sequence,
    *,
    batch_size: int = 64,
    workers: int = 2,
    on_progress: Progress | None = None,
    on_skip=None,
) -> tuple[RetrievalMetrics, list]:
    """Metrics of a loaded `retrieval.models.encoders.Model` on pairs; returns (metrics, skipped rows).

    Images that cannot be decoded cost their pairs (reported through `on_skip` and returned).
    """
    from retrieval.finetune.errors import PairsError
    from retrieval.finetune.images import EVAL, PairImages
    from retrieval.finetune.pairs import drop_failed_images, index_pairs

    paths = list(dict.fromkeys(pair.image for pair in pairs))
    store = PairImages(paths, model.preprocess, mode=EVAL)
    failures = store.load(workers, (lambda done, total: on_progress("decode", done, total)) if on_progress else None)
    kept, skipped = drop_failed_images(pairs, {paths[i]: reason for i, reason in failures.items()}, on_skip)
    if not kept:
        raise PairsError("no pair has a readable image")
    index = index_pairs(kept)
    slot_of = {path: slot for slot, path in enumerate(paths)}
    store_ids = [slot_of[path] for path in index.images]
    metrics = evaluate_pairs(
        index,
        lambda ids: model.image.embed_pixels(store.pixels([store_ids[i] for i in ids])),
        model.text.embed_texts,
        batch_size=batch_size,
        on_progress=on_progress,
    )
    return metrics, skipped
