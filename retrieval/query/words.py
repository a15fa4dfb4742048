"""Search by the words read in pictures at index time (`search --ocr WORDS`).

Alone, the words rank the pictures (indexer.store.words: FTS5 trigram candidates, scored by how
well each picture's words hold the query's, despite misread letters); no model is opened. With a
description or an example image, the pictures holding the words are ranked by the vectors
(retrieval.query.run). Every hit carries its best-matching line and matched words.
"""
from __future__ import annotations

from dataclasses import replace

from indexer.store.library import Library
from retrieval.query.search import Hit

WORD_CANDIDATES = 2000  # pictures matching the words that a described query ranks among


def words_matches(library: Library, words: str, top: int = WORD_CANDIDATES, item_ids=None) -> dict:
    """item id -> WordsMatch of the pictures whose words match, best first."""
    return {match.item_id: match for match in library.words.search(words, top, item_ids=item_ids)}


def with_words(hits: list[Hit], matches: dict) -> list[Hit]:
    out = []
    for hit in hits:
        match = matches.get(hit.item_id)
        if match is not None:
            hit = replace(hit, ocr_score=match.score, ocr_snippet=match.snippet, ocr_matched=match.matched)
        out.append(hit)
    return out


def _allowed_items(library: Library, filters) -> set[int] | None:
    if not filters.active:
        return None
    vector_ids = library.reads.filter_ids(path_like=filters.path_glob, after=filters.after, before=filters.before,
                                          extensions=filters.extensions, modalities=filters.modalities, encoder=None)
    return {hit.item.id for hit in library.reads.hits(vector_ids.tolist()).values()}


def rank_by_words(library: Library, words: str, top: int, filters) -> tuple[list[Hit], list[str]]:
    """(hits, notes): the pictures whose words best match `words`, best first (`filters` apply)."""
    allowed = _allowed_items(library, filters)
    if allowed is not None and not allowed:
        return [], ["no item passes the filters"]
    matches = words_matches(library, words, top, allowed)
    items = library.reads.items(list(matches))
    hits = []
    for item_id, match in matches.items():
        record = items.get(item_id)
        if record is None:  # deleted since
            continue
        hits.append(Hit(record.id, record.path, match.score, record.width, record.height, record.format,
                        record.mtime, record.size, record.modality, ocr_score=match.score,
                        ocr_snippet=match.snippet, ocr_matched=match.matched))
    return hits, [] if hits else why_no_words(library, words)


def search_words(request, words: str) -> tuple[list[Hit], list[str]]:
    """rank_by_words on the index of a retrieval.query.run.QueryRequest."""
    with Library(request.db, create=False, read_only=True) as library:
        return rank_by_words(library, words, request.top, request.filters)


def why_no_words(library: Library, words: str) -> list[str]:
    counts = library.words.counts()
    if not counts.get("read"):
        return ["no words have been read in this index's pictures: install Tesseract (apt install tesseract-ocr "
                "tesseract-ocr-eng; pip install 'mmsearch[ocr]') and run `mmsearch index` again (--ocr auto, or "
                "--ocr on to read every picture)"]
    return [f"no picture's words match {words!r} ({counts.get('read', 0)} pictures have words; "
            f"{counts.get('skipped', 0)} were skipped by the text test: `mmsearch index --ocr on` reads those too)"]
