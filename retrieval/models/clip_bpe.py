"""CLIP's BPE for a query, reading its vocabulary and merges from a small SQLite file on demand.

A one-shot `mmsearch search` spent ~0.1 s loading `tokenizer.json` with `tokenizers` (most of it
building the 48,894 merges) to split a few words (docs/BENCHMARKS.md, "Cold start"). CLIP's BPE is
open_clip's `SimpleTokenizer.bpe`: lower-cased text split by CLIP's pattern, each piece's UTF-8 bytes
mapped to printable characters, then the lowest-ranked pair of symbols merged until none is known.
A query needs the ranks of the pairs in its own words only, so the export keeps the merges and the
vocabulary in `tokenizer.sqlite` (`write_tables`, two WITHOUT ROWID tables) and `ClipBpe` looks up
just those (a few milliseconds to open and encode), caching what it saw. tests/test_clip_bpe.py
checks it against open_clip's tokenizer and the `tokenizers` file on mixed text.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from retrieval.models.clip_vocab import CLIP_PATTERN, bytes_to_unicode

TABLES_NAME = "tokenizer.sqlite"
_BYTES = bytes_to_unicode()


def write_tables(path: Path, vocabulary) -> Path:
    """`vocabulary`'s encoder and merge ranks (a ClipVocabulary or open_clip's SimpleTokenizer) as the
    SQLite file `ClipBpe` reads (staged, then renamed)."""
    path = Path(path)
    staged = path.with_name(path.name + f".tmp-{os.getpid()}")
    staged.unlink(missing_ok=True)
    try:
        with sqlite3.connect(staged) as db:
            db.execute("CREATE TABLE merges (pair TEXT PRIMARY KEY, rank INTEGER NOT NULL) WITHOUT ROWID")
            db.execute("CREATE TABLE vocab (token TEXT PRIMARY KEY, id INTEGER NOT NULL) WITHOUT ROWID")
            db.executemany("INSERT INTO merges VALUES (?, ?)",
                           ((f"{first} {second}", rank) for (first, second), rank in vocabulary.bpe_ranks.items()))
            db.executemany("INSERT INTO vocab VALUES (?, ?)", vocabulary.encoder.items())
        db.close()
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return path


class ClipBpe:
    """`encode(text)`: the token ids of already cleaned (lower-cased) text, without start/end tokens.
    Safe to share between threads (one lock around its lookups)."""

    def __init__(self, path: Path):
        import regex  # CLIP's pattern needs \\p{L} and \\p{N}; open_clip and tokenizers' JSON use the same

        self._pattern = regex.compile(CLIP_PATTERN, regex.IGNORECASE)
        self._db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        self._ranks: dict[str, int | None] = {}
        self._ids: dict[str, int] = {}
        self._words: dict[str, list[str]] = {}

    def encode(self, text: str) -> list[int]:
        pieces = ["".join(_BYTES[byte] for byte in piece.encode("utf-8")) for piece in self._pattern.findall(text)]
        with self._lock:
            symbols = [symbol for piece in pieces for symbol in self._bpe(piece)]
            self._look_up(self._ids, "SELECT token, id FROM vocab WHERE token IN ({})", symbols)
            return [self._ids[symbol] for symbol in symbols]

    def _bpe(self, piece: str) -> list[str]:
        if piece in self._words:
            return self._words[piece]
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
