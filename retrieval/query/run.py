"""A search as one library call: open the index, embed the query, rank, and say why when it is empty.

`search_index` answers one query (words, image files, or both), `search_queries` a file of them
(blank and `# comment` lines skipped). Both return notes for the person asking: what an emoji
became, words the model cannot read, a GPU that is not there, and why nothing matched. The CLI
prints the hits and the notes; nothing here prints.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from indexer.store.library import Library
from retrieval.errors import QueryError
from retrieval.index_model import search_model
from retrieval.models.encoders import resolve_device
from retrieval.query.search import Filters, Hit, build_terms, embed_queries, embed_terms, rank
from retrieval.query.spaces import foreign_encoders, rank_spaces
from retrieval.query.text import unknown_note

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryRequest:
    db: Path
    top: int = 10
    filters: Filters = Filters()
    model: str | None = None  # --model / MMSEARCH_MODEL
    configured_model: str | None = None  # the config file's
    device: str = "cpu"  # for the query towers; with many queries on CUDA the ranking goes there too
    search_threads: int | None = None  # FAISS threads; None: 1 for one query, FAISS's default for many
    min_relevance: float = 0.0  # drop hits whose relevance (retrieval.query.relevance) is below this


@dataclass
class SearchOutcome:
    hits: list[Hit]
    notes: list[str] = field(default_factory=list)


@dataclass
class BatchOutcome:
    results: list[tuple[str, list[Hit]]]
    notes: list[str] = field(default_factory=list)


def check_filters(filters: Filters) -> None:
    if filters.after is not None and filters.before is not None and filters.after >= filters.before:
        raise QueryError("--after must be earlier than --before: no moment is both")


def make_filters(path_glob: str | None = None, after: float | None = None, before: float | None = None,
                 extensions=(), modalities=(), cwd: str | None = None) -> Filters:
    """Filters as a person means them: a relative --path glob is taken from the current folder (the
    index stores absolute paths), `~` is the home folder, --ext takes repeats and comma lists with
    or without the dot."""
    if path_glob:
        path_glob = os.path.expanduser(path_glob)
        if not path_glob.startswith(("/", "*", "?", "[")):
            path_glob = os.path.join(cwd or os.getcwd(), path_glob)
    names = tuple(dict.fromkeys(part.strip().lstrip(".").lower() for value in extensions
                                for part in str(value).split(",") if part.strip()))
    kinds = tuple(dict.fromkeys(part.strip().lower() for value in modalities for part in str(value).split(",")
                                if part.strip() and part.strip().lower() != "all"))
    filters = Filters(path_glob=path_glob or None, after=after, before=before, extensions=names, modalities=kinds)
    check_filters(filters)
    return filters


def search_index(request: QueryRequest, text: str | None, images: tuple[str, ...] = (),
                 sounds: tuple[str, ...] = (), words: str | None = None) -> SearchOutcome:
    """The top items for one query (text, image files, or a weighted mix of both; or sound files,
    with words or without, which rank the sounds); with `words` (--ocr), only pictures whose words
    read at index time match them (retrieval.query.words)."""
    check_filters(request.filters)
    if words is not None:
        from retrieval.query.words import search_words

        if not words.strip():
            raise QueryError("--ocr needs some words to look for in the pictures")
        if text is None and not images:
            return SearchOutcome(*search_words(request, words))
    notes: list[str] = []
    device, note = resolve_device(request.device, fallback=True)
    if note:
        notes.append(note)
    terms = build_terms(text, images) if (text and text.strip()) or images or not sounds else []
    with Library(request.db, create=False, read_only=True) as library:
        filters, matches = request.filters, None
        if words is not None:  # rank by the description among the pictures holding the words
            from retrieval.query.words import with_words, words_matches

            matches = words_matches(library, words)
            filters = replace(filters, item_ids=tuple(matches))
        model = search_model(library, request.model, request.configured_model, device=device, one_query=True)
        _set_search_threads(request.search_threads or 1)
        if sounds or foreign_encoders(library, model.info):
            vector = embed_terms(model, terms) if terms else None
            hits = rank_spaces(library, model, [terms], None if vector is None else vector[None], request.top,
                               filters, device=device, sounds=sounds)[0]
        else:
            vector = embed_terms(model, terms)
            hits = rank(library, vector, request.top, filters)[0]
        notes.extend(_unknown_notes(model, terms))
        if matches is not None:
            hits = with_words(hits, matches)
            if not matches:
                from retrieval.query.words import why_no_words

                notes.extend(why_no_words(library, words))
        elif not hits:
            from retrieval.query.explain import why_nothing

            notes.extend(why_nothing(library, request.filters))
        if vector is not None:
            hits = _with_relevance(library, [hits], vector, [query_kind(terms)], request.min_relevance, notes)[0]
        elif request.min_relevance > 0:  # a sound alone: no calibration describes the audio tower's scores
            notes.append("--min-relevance: a query by sound has no calibrated relevance yet; every result is kept")
    return SearchOutcome(hits, _what_terms_became(terms) + notes)


def read_queries(path: Path) -> list[str]:
    """A queries file: one query per line; blank lines and lines starting with # are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QueryError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise QueryError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = [line.strip() for line in text.splitlines()]
    queries = [line for line in lines if line and not line.startswith("#")]
    if not queries:
        raise QueryError(f"{path} holds no query (one per line; blank lines and # comments are skipped)")
    return queries


def search_queries(request: QueryRequest, queries: list[str]) -> BatchOutcome:
    """The top items for each of many queries: text terms embedded in batches, ranked together."""
    check_filters(request.filters)
    notes: list[str] = []
    device, note = resolve_device(request.device, fallback=True)
    if note:
        notes.append(note)
    with Library(request.db, create=False, read_only=True) as library:
        model = search_model(library, request.model, request.configured_model, device=device)
        vectors = embed_queries(model, queries)
        _set_search_threads(request.search_threads)
        if foreign_encoders(library, model.info):
            results = rank_spaces(library, model, [build_terms(query) for query in queries], vectors, request.top,
                                  request.filters, device=device)
        else:
            results = rank(library, vectors, request.top, request.filters, device=device)
        if not any(results):
            from retrieval.query.explain import why_nothing

            notes.extend(why_nothing(library, request.filters))
        kinds = [query_kind(build_terms(query)) for query in queries]
        results = _with_relevance(library, results, vectors, kinds, request.min_relevance, notes)
    return BatchOutcome(list(zip(queries, results)), notes)


def query_kind(terms) -> str:
    """Which calibration a query's scores take: a query with a picture in it scores like one."""
    from retrieval.query.relevance import IMAGE_QUERY, TEXT

    return IMAGE_QUERY if any(term.is_image for term in terms) else TEXT


def _with_relevance(library, results, vectors, kinds, min_relevance: float, notes: list[str]):
    """Every hit's relevance; hits below `min_relevance` dropped, with a note saying how many and what was best."""
    from retrieval.query.relevance import above, add_relevance, calibration_for

    info = library.model()
    calibration = calibration_for(library, info)
    results = add_relevance(library, results, vectors, kinds, calibration)
    if min_relevance <= 0:
        return results
    kept = [above(hits, min_relevance) for hits in results]
    hidden = sum(len(hits) - len(shown) for hits, shown in zip(results, kept))
    if hidden:
        best = max(hit.relevance for hits in results for hit in hits)
        emptied = sum(1 for hits, shown in zip(results, kept) if hits and not shown)
        left_empty = f"; {emptied} quer{'ies' if emptied != 1 else 'y'} left empty" if len(results) > 1 and emptied else ""
        notes.append(f"{hidden} result{'s' if hidden != 1 else ''} below relevance {min_relevance:g} hidden "
                     f"(best {best:.2f}){left_empty}; --min-relevance 0 shows them")
    if not any(calibration.fitted_for(kind) for kind in set(kinds)):
        notes.append(f"relevance for {info.name if info else 'this model'} is a label-free estimate (no calibration "
                     f"fitted for it): fit one on your own pairs with `mmsearch calibrate --pairs FILE` (docs/RELEVANCE.md)")
    return kept


def _what_terms_became(terms) -> list[str]:
    return [f"searching {term.original!r} as {term.value!r}" for term in terms
            if not term.is_image and term.original is not None and term.original != term.value]


def _unknown_notes(model, terms) -> list[str]:
    share = getattr(model.text, "unknown_share", None)
    if share is None:
        return []
    out = []
    for term in terms:
        if not term.is_image:
            note = unknown_note(term.original or term.value, share(term.value))
            if note:
                out.append(note)
    return out


def _set_search_threads(threads: int | None) -> None:
    """FAISS's OpenMP threads for this process; None leaves its default. See docs/BENCHMARKS.md, "Cold start"."""
    if threads:
        import faiss  # the search imports it anyway

        faiss.omp_set_num_threads(threads)
