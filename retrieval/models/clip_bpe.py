"""CLIP's BPE for a query, reading its vocabulary and merges from a small SQLite file on demand.

A one-shot `mmsearch search` spent 0.08-0.10 s loading `tokenizer.json` with `tokenizers` (most of it
building the 48,894 merges) to split a few words (docs/BENCHMARKS.md, "Cold start"). CLIP's BPE is
open_clip's `SimpleTokenizer.bpe`: lower-cased text split by CLIP's pattern, each piece's UTF-8 bytes
mapped to printable characters, then the lowest-ranked pair of symbols merged until none is known.
A query needs the ranks of the pairs in its own words only, so the export keeps the merges and the
vocabulary in `tokenizer.sqlite` (`write_tables`, two WITHOUT ROWID tables) and `ClipBpe` looks up
just those (20 ms to open and encode "a cat" in a fresh process, imports included, against 79 ms
for the tokenizers file: bench/bench_clip_bpe.py), caching what it saw (bounded). It splits text
with the `regex` call open_clip makes (CLIP's pattern, IGNORECASE), so its ids are open_clip's; the
`tokenizers` file the fast path used before agrees on ordinary text but splits a few rare characters
otherwise (U+0345, a long s after an apostrophe, letters newer than its Unicode tables, and
"<start_of_text>" typed as text, which open_clip reads as that special token).
tests/test_clip_bpe.py checks both. A long word costs quadratic time, as in open_clip (a query is at
most 2,000 characters: 0.25 s for 2,000 random letters, the same bench).
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

from retrieval.models.clip_vocab import CLIP_PATTERN, SPECIAL, bytes_to_unicode

TABLES_NAME = "tokenizer.sqlite"
CACHE_LIMIT = 100_000  # cached words, pairs and ids each: cleared past this (a server sees endless words)
_BYTES = bytes_to_unicode()


def write_tables(path: Path, vocabulary) -> Path:
    """`vocabulary`'s encoder and merge ranks (a ClipVocabulary or open_clip's SimpleTokenizer) as the
    SQLite file `ClipBpe` reads (staged, then renamed)."""
    path = Path(path)
    staged = path.with_name(path.name + f".tmp-{os.getpid()}")
    staged.unlink(missing_ok=True)
    try:
        with contextlib.closing(sqlite3.connect(staged)) as db, db:
            db.execute("CREATE TABLE merges (pair TEXT PRIMARY KEY, rank INTEGER NOT NULL) WITHOUT ROWID")
            db.execute("CREATE TABLE vocab (token TEXT PRIMARY KEY, id INTEGER NOT NULL) WITHOUT ROWID")
            db.executemany("INSERT INTO merges VALUES (?, ?)",
                           ((f"{first} {second}", rank) for (first, second), rank in vocabulary.bpe_ranks.items()))
            db.executemany("INSERT INTO vocab VALUES (?, ?)", vocabulary.encoder.items())
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return path


class ClipBpe:
    """`encode(text)`: the token ids of already cleaned (lower-cased) text, without start/end tokens.
    Safe to share between threads (one lock around its lookups). Raises sqlite3.Error when `path` is
    not such a file (the caller then loads the tokenizer file)."""

    def __init__(self, path: Path):
        import regex  # CLIP's pattern needs \p{L} and \p{N}; open_clip compiles it the same way

        self._pattern = regex.compile(CLIP_PATTERN, regex.IGNORECASE)
        # a URI from the path itself: "#", "?" or "%" in a folder's name stay part of the name
        uri = Path(path).absolute().as_uri() + "?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._db.execute("SELECT 1 FROM merges JOIN vocab LIMIT 1").fetchall()  # a missing or damaged file: now
        self._lock = threading.Lock()
        self._ranks: dict[str, int | None] = {}
        self._ids: dict[str, int] = {}
        self._words: dict[str, list[str]] = {}

    def encode(self, text: str) -> list[int]:
        pieces = ["".join(_BYTES[byte] for byte in piece.encode("utf-8")) for piece in self._pattern.findall(text)]
        with self._lock:
            for cache in (self._words, self._ranks, self._ids):
                if len(cache) > CACHE_LIMIT:
                    cache.clear()
            symbols = [symbol for piece in pieces for symbol in self._bpe(piece)]
            self._look_up(self._ids, "SELECT token, id FROM vocab WHERE token IN ({})", symbols)
            return [self._ids[symbol] for symbol in symbols]

    def _bpe(self, piece: str) -> list[str]:
        if piece in self._words:
            return self._words[piece]
        if piece in SPECIAL:  # typed as text: open_clip's tokenizer gives the special token itself
            return [piece]
        word = list(piece[:-1]) + [piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = {f"{first} {second}" for first, second in zip(word, word[1:])}
            self._look_up(self._ranks, "SELECT pair, rank FROM merges WHERE pair IN ({})", pairs, missing=None)
            known = [pair for pair in pairs if self._ranks[pair] is not None]
            if not known:
                break
            first, second = min(known, key=self._ranks.__getitem__).split(" ")
            merged, index = [], 0
            while index < len(word):  # every occurrence, left to right, as open_clip merges
                if index < len(word) - 1 and word[index] == first and word[index + 1] == second:
                    merged.append(first + second)
                    index += 2
                else:
                    merged.append(word[index])
                    index += 1
            word = merged
        self._words[piece] = word
        return word

    def _look_up(self, cache: dict, query: str, keys, missing: object = KeyError) -> None:
        wanted = [key for key in set(keys) if key not in cache]
        for start in range(0, len(wanted), 500):  # under SQLite's bound-parameter limit
            chunk = wanted[start:start + 500]
            cache.update(self._db.execute(query.format(",".join("?" * len(chunk))), chunk).fetchall())
        for key in wanted:
            if key not in cache:
                if missing is KeyError:
                    raise KeyError(f"{key!r} is not in the vocabulary")
                cache[key] = missing
