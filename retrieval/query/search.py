"""Cross-modal search: embed a query (text, image or both, weighted), rank the index, filter."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.media.image import DecodeOptions, decode_image, read_file
from indexer.store.library import Library
from indexer.media.scan import image_extensions
from indexer.store.vectors import SearchTuning
from indexer.errors import DecodeError
from retrieval.errors import QueryError
from retrieval.query.parse import Term, combine, parse_query

log = logging.getLogger(__name__)

BRUTE_FORCE_LIMIT = 20_000  # filtered candidate sets up to this size are ranked exactly in numpy
GPU_MIN_QUERIES = 64  # rank() moves the vectors to a CUDA device for batches at least this large


@dataclass(frozen=True)
class Filters:
    path_glob: str | None = None
    after: float | None = None  # unix time, inclusive
    before: float | None = None  # unix time, exclusive
    extensions: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.path_glob or self.after is not None or self.before is not None or self.extensions)


@dataclass(frozen=True)
class Hit:
    item_id: int
    path: str
    score: float
    width: int | None
    height: int | None
    format: str | None
    mtime: float
    size: int

    def as_dict(self) -> dict:
        return {"path": self.path, "score": round(self.score, 6), "id": self.item_id, "width": self.width,
                "height": self.height, "format": self.format, "mtime": self.mtime, "size": self.size}


def _looks_like_image_path(value: str) -> bool:
    # the file test first: image_extensions() may import pillow-heif, which plain words need not pay for
    return os.path.isfile(os.path.expanduser(value)) and os.path.splitext(value)[1].lower() in image_extensions()


def build_terms(query: str | None, images: Sequence[str | Path] = ()) -> list[Term]:
    """Query text and --image paths -> terms; a text term naming an existing image file is an image term."""
    terms: list[Term] = []
    if query is not None and query.strip():
        for term in parse_query(query):
            terms.append(Term(term.value, term.weight, _looks_like_image_path(term.value)))
    elif query is not None and not images:
        raise QueryError("empty query: give some words, or --image PATH")
    for image in images:
        terms.append(Term(str(image), 1.0, True))
    if not terms:
        raise QueryError("nothing to search for: give a query or --image PATH")
    return terms


def embed_image_file(model, path: str) -> np.ndarray:
    try:
        decoded = decode_image(read_file(os.path.expanduser(path)), model.preprocess, DecodeOptions())
    except DecodeError as exc:
        raise QueryError(f"query image {path}: {exc}") from None
    return model.image.embed_pixels(decoded.pixels[None])[0]


def embed_terms(model, terms: Sequence[Term]) -> np.ndarray:
    """One unit query vector for weighted text and image terms."""
    texts = [term.value for term in terms if not term.is_image]
    text_vectors = iter(model.text.embed_texts(texts)) if texts else iter(())
    vectors = [embed_image_file(model, term.value) if term.is_image else next(text_vectors) for term in terms]
    return combine(np.stack(vectors), [term.weight for term in terms])


def embed_queries(model, queries: Sequence[str]) -> np.ndarray:
    """Many queries at once (text terms batched through the text tower)."""
    parsed = [build_terms(query) for query in queries]
    texts = sorted({term.value for terms in parsed for term in terms if not term.is_image})
    table = dict(zip(texts, model.text.embed_texts(texts))) if texts else {}
    out = []
    for terms in parsed:
        vectors = [embed_image_file(model, term.value) if term.is_image else table[term.value] for term in terms]
        out.append(combine(np.stack(vectors), [term.weight for term in terms]))
    return np.stack(out)


def check_model(library: Library, model) -> None:
    from indexer.store.meta import check_same_model  # lazily: SQLAlchemy costs a text search 0.3 s

    recorded = library.meta.model()
    if recorded is not None:
        check_same_model(recorded, model.info)


def rank(library: Library, query_vectors: np.ndarray, top: int, filters: Filters = Filters(),
         tuning: SearchTuning = SearchTuning(), device: str = "cpu") -> list[list[Hit]]:
    """Top hits for each query vector, best first, filtered by metadata.

    On a CUDA `device`, a batch of at least GPU_MIN_QUERIES queries is ranked on the GPU
    (indexer.store.gpu_search: faiss-gpu, else exact fp16 search in torch); fewer queries are not worth
    moving the vectors there.
    """
    query_vectors = np.atleast_2d(query_vectors).astype(np.float32)
    if top < 1:
        raise QueryError("--top must be at least 1")
    if str(device).startswith("cuda") and len(query_vectors) >= GPU_MIN_QUERIES:
        from indexer.store.gpu_search import gpu_index

        index = gpu_index(library, device)
    else:
        index = library.vectors_for_search()
    if index is None or index.ntotal == 0:
        return [[] for _ in query_vectors]
    allowed = None
    if filters.active:
        allowed = library.meta.filter_ids(path_like=filters.path_glob, after=filters.after,
                                          before=filters.before, extensions=filters.extensions)
        if len(allowed) == 0:
            return [[] for _ in query_vectors]
    if allowed is not None and len(allowed) <= BRUTE_FORCE_LIMIT:
        ids, vectors = library.meta.vectors_for(allowed.tolist(), index.dim)
        scores_all = query_vectors @ vectors.T
        order = np.argsort(-scores_all, axis=1, kind="stable")[:, :top]
        scores = np.take_along_axis(scores_all, order, axis=1)
        labels = ids[order]
    else:
        scores, labels = index.search(query_vectors, top, allowed_ids=allowed, tuning=tuning)
    wanted = sorted({int(label) for label in labels.ravel() if label >= 0})
    records = library.meta.items(wanted)
    results = []
    for row_scores, row_labels in zip(scores, labels):
        hits = []
        for score, label in zip(row_scores, row_labels):
            record = records.get(int(label))
            if label < 0 or record is None:
                continue
            hits.append(Hit(record.id, record.path, float(score), record.width, record.height, record.format,
                            record.mtime, record.size))
        results.append(hits)
    return results
