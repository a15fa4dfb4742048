"""Queries: parse "beach + sunset - people" / "2:dog" into weighted terms, combine their vectors.

Pure functions; embedding the terms is the caller's business (`retrieval.query.search`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from retrieval.errors import QueryError
from retrieval.query.text import emoji_to_words

MAX_QUERY_CHARS = 2_000
MAX_QUERY_TERMS = 16  # each term is one text-tower pass: 150 terms cost seconds of CPU
MAX_TERM_WEIGHT = 100.0
_SPLIT = re.compile(r"\s+([+-])(?=\s)")
_WEIGHT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*:\s*(.+)$", re.S)


@dataclass(frozen=True)
class Term:
    """One part of a query: text (or an image path) and its signed weight."""

    value: str  # what is embedded (emoji turned into their names)
    weight: float = 1.0
    is_image: bool = False
    original: str | None = None  # what was typed, when it differs from `value`


def parse_query(query: str) -> list[Term]:
    """Split a query on " + " and " - " (spaces around the sign), each part optionally "W:text".

    "beach + sunset - people" -> beach (+1), sunset (+1), people (-1);
    "2:red car + 0.5:night"   -> red car (+2), night (+0.5). "t-shirt" stays one term.
    """
    if query is None or not query.strip():
        raise QueryError("empty query: give some words, or --image PATH")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
    parts = _SPLIT.split(" " + query.strip() + " ")
    count = sum(1 for index, part in enumerate(parts) if index % 2 == 0 and part.strip())
    if count > MAX_QUERY_TERMS:
        raise QueryError(f"query has {count} terms; the limit is {MAX_QUERY_TERMS} (words without + or - "
                         "between them are one term)")
    terms: list[Term] = []
    sign = 1.0
    for index, part in enumerate(parts):
        if index % 2 == 1:
            sign = 1.0 if part == "+" else -1.0
            continue
        part = part.strip()
        if not part:
            if index == 0:
                continue
            raise QueryError(f"query {query!r} has an empty term next to a + or -")
        weight = 1.0
        match = _WEIGHT.match(part)
        if match:
            weight, part = float(match.group(1)), match.group(2).strip()
            if not abs(weight) <= MAX_TERM_WEIGHT:
                raise QueryError(f"weight {match.group(1)[:20]} of {part[:40]!r} is out of range: weights go from "
                                 f"-{MAX_TERM_WEIGHT:g} to {MAX_TERM_WEIGHT:g}")
        words = emoji_to_words(part)
        terms.append(Term(words or part, sign * weight, original=part if words != part else None))
    if not any(term.weight > 0 for term in terms):
        raise QueryError(f"query {query!r} has no positive term: something to find is needed")
    return terms


def combine(vectors: np.ndarray, weights) -> np.ndarray:
    """Weighted sum of unit vectors, renormalised: one query vector (a finite unit vector, or QueryError).

    Summed in float64 with the weights scaled by the largest one first, so no weight a caller
    passes can overflow float32 into inf/NaN (which FAISS would answer with no results at all).
    """
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    weights = np.asarray(weights, dtype=np.float64).reshape(-1, 1)
    if len(weights) != len(vectors):
        raise ValueError("one weight per vector")
    if not (np.isfinite(weights).all() and np.isfinite(vectors).all()):
        raise QueryError("the query has a weight or vector that is not a finite number")
    scale = float(np.abs(weights).max()) if weights.size else 0.0
    if scale == 0.0:
        raise QueryError("the query's weights are all zero")
    total = (vectors * (weights / scale)).sum(axis=0)
    norm = float(np.linalg.norm(total))
    if not math.isfinite(norm) or norm < 1e-8:
        raise QueryError("the query's terms cancel out; change the weights")
    return (total / norm).astype(np.float32)
