"""Cross-modal search: embed a query (text, image or both, weighted), rank the index, filter."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.errors import DecodeError
from indexer.media.files import read_file
from indexer.media.image import DecodeOptions, decode_image
from indexer.media.scan import image_extensions
from indexer.store.library import Library
from indexer.store.records import IMAGE
from indexer.store.vectors import SearchTuning
from retrieval.errors import QueryError
from retrieval.query.parse import Term, combine, parse_query

log = logging.getLogger(__name__)

BRUTE_FORCE_LIMIT = 20_000  # filtered candidate sets up to this size are ranked exactly in numpy
GPU_MIN_QUERIES = 64  # rank() moves the vectors to a CUDA device for batches at least this large


@dataclass(frozen=True)
class Filters:
    path_glob: str | None = None
    after: float | None = None  # unix time, inclusive; the capture time where known, else the file's mtime
    before: float | None = None  # unix time, exclusive
    extensions: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    item_ids: tuple[int, ...] | None = None  # only these items (the pictures whose words matched --ocr)

    @property
    def active(self) -> bool:
        return bool(self.path_glob or self.after is not None or self.before is not None or self.extensions
                    or self.modalities or self.item_ids is not None)


MAX_MOMENTS = 3  # a sound's or a video's best moments listed with its hit


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
    modality: str = IMAGE
    time: float | None = None  # the best moment's start (seconds) in a sound or video
    moments: tuple[tuple[float, float], ...] = ()  # (start seconds, score) of its best moments, best first
    ocr_score: float | None = None  # how well the picture's words matched --ocr (0..1)
    ocr_snippet: str | None = None  # the line of its words that matched best
    ocr_matched: tuple[str, ...] = ()  # its words that matched (for highlighting)
    relevance: float | None = None  # estimated P(it is what was asked for): retrieval.query.relevance

    def as_dict(self) -> dict:
        out = {"path": self.path, "score": round(self.score, 6), "id": self.item_id, "width": self.width,
               "height": self.height, "format": self.format, "mtime": self.mtime, "size": self.size,
               "modality": self.modality}
        if self.relevance is not None:
            out["relevance"] = round(self.relevance, 4)
        if self.time is not None:
            out["time"] = round(self.time, 3)
            out["moments"] = [{"time": round(start, 3), "score": round(score, 6)} for start, score in self.moments]
        if self.ocr_score is not None:
            out.update({"ocr_score": round(self.ocr_score, 6), "ocr_snippet": self.ocr_snippet,
                        "ocr_matched": list(self.ocr_matched)})
        return out


def _looks_like_image_path(value: str) -> bool:
    # the file test first: image_extensions() may import pillow-heif, which plain words need not pay for
    return os.path.isfile(os.path.expanduser(value)) and os.path.splitext(value)[1].lower() in image_extensions()


def _meant_as_a_file(value: str) -> bool:
    """A term written like a file name: a path (/, ./, ../, ~/) or an image file's extension."""
    from indexer.media.scan import HEIF_EXTENSIONS, IMAGE_EXTENSIONS

    value = value.strip()
    return value.startswith(("/", "./", "../", "~/")) or \
        os.path.splitext(value)[1].lower() in IMAGE_EXTENSIONS | HEIF_EXTENSIONS


def build_terms(query: str | None, images: Sequence[str | Path] = ()) -> list[Term]:
    """Query text and --image paths -> terms; a text term naming an existing image file is an image term,
    and a term written like a file that does not exist is an error (a typo would else be searched as words)."""
    terms: list[Term] = []
    if query is not None and query.strip():
        for term in parse_query(query):
            raw = term.original or term.value
            if _looks_like_image_path(raw):
                terms.append(Term(raw, term.weight, True))
            elif _meant_as_a_file(raw):
                raise QueryError(f"{raw!r} looks like an image file, but there is no such file (relative paths are "
                                 f"taken from the current folder, {os.getcwd()})")
            else:
                terms.append(term)
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


def rank(library: Library, query_vectors: np.ndarray, top: int, filters: Filters = Filters(),
         tuning: SearchTuning = SearchTuning(), device: str = "cpu", encoders: Sequence[str] | None = None) -> list[list[Hit]]:
    """Top items for each query vector, best first, filtered by metadata.

    The query vectors come from the index model's text or image tower; they rank the vectors of
    every encoder in that model's space (`encoders`, default: all of them, e.g. pictures and video
    frames), merged by score. A vector file holds vectors, and a sound or a video holds several:
    candidates are fetched until `top` distinct items are found (or there are no more), each item
    ranked by its best vector, with its best moments. On a CUDA `device`, a batch of at least
    GPU_MIN_QUERIES queries is ranked on the GPU (indexer.store.gpu_search: faiss-gpu, else exact
    fp16 search in torch); fewer queries are not worth moving the vectors there.
    """
    query_vectors = np.atleast_2d(query_vectors).astype(np.float32)
    if top < 1:
        raise QueryError("--top must be at least 1")
    if encoders is None:
        model = library.model()
        encoders = library.encoders_sharing(model) if model is not None else []
    per_encoder = [_rank_encoder(library, encoder, query_vectors, top, filters, tuning, device) for encoder in encoders]
    if not per_encoder:
        return [[] for _ in query_vectors]
    if len(per_encoder) == 1:
        return per_encoder[0]
    return [_merge([results[row] for results in per_encoder], top) for row in range(len(query_vectors))]


def _merge(lists: list[list[Hit]], top: int) -> list[Hit]:
    """Hits of several encoders for one query: one per item (its best), best first."""
    best: dict[int, Hit] = {}
    for hits in lists:
        for hit in hits:
            known = best.get(hit.item_id)
            if known is None or hit.score > known.score:
                moments = tuple(sorted(set(hit.moments + (known.moments if known else ())), key=lambda m: -m[1]))
                best[hit.item_id] = replace(hit, moments=moments[:MAX_MOMENTS])
    return sorted(best.values(), key=lambda hit: -hit.score)[:top]


def _rank_encoder(library: Library, encoder: str, query_vectors: np.ndarray, top: int, filters: Filters,
                  tuning: SearchTuning, device: str) -> list[list[Hit]]:
    if str(device).startswith("cuda") and len(query_vectors) >= GPU_MIN_QUERIES and encoder == IMAGE:
        from indexer.store.gpu_search import gpu_index

        index = gpu_index(library, device)
    else:
        index = library.vectors_for_search(encoder)
    if index is None or index.ntotal == 0:
        return [[] for _ in query_vectors]
    allowed = None
    if filters.active:
        allowed = library.reads.filter_ids(path_like=filters.path_glob, after=filters.after, before=filters.before,
                                           extensions=filters.extensions, modalities=filters.modalities,
                                           encoder=encoder, item_ids=filters.item_ids)
        if len(allowed) == 0:
            return [[] for _ in query_vectors]
    available = index.ntotal if allowed is None else len(allowed)
    if allowed is not None and len(allowed) <= BRUTE_FORCE_LIMIT:
        ids, vectors = library.reads.vectors_for(allowed.tolist(), index.dim)
        scores_all = query_vectors @ vectors.T
        order = np.argsort(-scores_all, axis=1, kind="stable")
        scores, labels = np.take_along_axis(scores_all, order, axis=1), ids[order]
        return _group(library, scores, labels, top)
    wanted = top
    while True:
        scores, labels = index.search(query_vectors, wanted, allowed_ids=allowed, tuning=tuning)
        results = _group(library, scores, labels, top)
        if all(len(hits) >= top for hits in results) or wanted >= available:
            return results
        wanted = min(available, wanted * 4)  # several vectors per item, or rows gone since the file was written


def _group(library: Library, scores: np.ndarray, labels: np.ndarray, top: int) -> list[list[Hit]]:
    """Ranked vector hits -> the top distinct items per query, each with its best moments."""
    found = library.reads.hits(sorted({int(label) for label in labels.ravel() if label >= 0}))
    results = []
    for row_scores, row_labels in zip(scores, labels):
        hits: dict[int, Hit] = {}
        for score, label in zip(row_scores, row_labels):
            vector_hit = found.get(int(label)) if label >= 0 else None
            if vector_hit is None:  # gone since the vector file was written
                continue
            record, score = vector_hit.item, float(min(1.0, max(-1.0, score)))  # unit vectors: a cosine
            known = hits.get(record.id)
            if known is None:
                if len(hits) >= top:
                    continue
                moments = ((vector_hit.start_s, score),) if vector_hit.start_s is not None else ()
                hits[record.id] = Hit(record.id, record.path, score, record.width, record.height, record.format,
                                      record.mtime, record.size, record.modality, vector_hit.start_s, moments)
            elif vector_hit.start_s is not None and len(known.moments) < MAX_MOMENTS:
                hits[record.id] = replace(known, moments=known.moments + ((vector_hit.start_s, score),))
        results.append(list(hits.values()))
    return results
