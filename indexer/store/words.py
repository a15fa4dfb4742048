"""The words read in pictures (OCR), and their full-text index: which pictures still need reading,
storing what was read, and finding pictures by words despite OCR's misreadings.

Table `item_words` (schema 4) holds one row per picture read or tested: the content hash and the
OCR settings it was read with (a changed file or another --ocr-lang is read again), what became of
it (read / skipped by the text test / failed) and the text. `item_words_fts` is an SQLite FTS5
index over the text with the trigram tokenizer, kept in step by triggers (a deleted item's row goes
with it: ON DELETE CASCADE, and the triggers follow). A search asks FTS5 for the pictures sharing
the most trigrams with the query's words (so "inv0ice" still finds "invoice"), then scores each
candidate here: for each query word, the best word of the picture by trigram overlap
(`word_similarity`); the snippet is the line that scored best.

On PostgreSQL the full-text index is pg_trgm's: a GIN trigram index on `item_words.text`, asked
with `<%` (word similarity) per query word at a low threshold, so it hands the scorer the same
candidates FTS5's "shares a trigram" does; the scoring, and so the answer, is this module's on both
databases. pg_trgm rather than tsvector: a tsvector matches whole (stemmed) words, so "inv0ice"
would never find "invoice", and trigrams are what the SQLite side already tolerates OCR errors with.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from indexer.store.records import IMAGE
from indexer.store.sql import run_sql

# the FTS5 index and its triggers (external content: the text is stored once, in item_words)
FTS_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS item_words_fts USING fts5(text, content='item_words', "
    "content_rowid='item_id', tokenize='trigram')",
    "CREATE TRIGGER IF NOT EXISTS item_words_ai AFTER INSERT ON item_words BEGIN "
    "INSERT INTO item_words_fts (rowid, text) VALUES (new.item_id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS item_words_ad AFTER DELETE ON item_words BEGIN "
    "INSERT INTO item_words_fts (item_words_fts, rowid, text) VALUES ('delete', old.item_id, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS item_words_au AFTER UPDATE ON item_words BEGIN "
    "INSERT INTO item_words_fts (item_words_fts, rowid, text) VALUES ('delete', old.item_id, old.text); "
    "INSERT INTO item_words_fts (rowid, text) VALUES (new.item_id, new.text); END",
)

# PostgreSQL: pg_trgm (a trusted extension: the database's owner may create it) and its GIN index
PG_DDL = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS ix_item_words_trgm ON item_words USING gin (text gin_trgm_ops)",
)
PG_CANDIDATE_SIMILARITY = 0.1  # pg_trgm word_similarity a candidate needs for one query word (about one shared trigram)

CANDIDATES = 2000  # pictures FTS5 hands the scorer, most shared trigrams first
KNOWN_LOOKUP_MAX = 20_000  # known_by_hash: more hashes than this read the whole table once instead
KNOWN_LOOKUP_CHUNK = 500  # hashes per lookup query (SQLite's and PostgreSQL's parameter limits are far above)
MIN_SCORE = 0.6  # a picture's words must match the query at least this well to be a hit
TOKEN = re.compile(r"\w+", re.UNICODE)


def create_fts(connection) -> None:
    """The full-text index (and on SQLite its triggers), on a connection inside the schema transaction."""
    for statement in PG_DDL if connection.dialect.name == "postgresql" else FTS_DDL:
        connection.exec_driver_sql(statement)


COPY_RANK = {"read": 0, "skipped": 1, "failed": 2}  # of copies, the one whose words are copied: read first


def _read_copies_first(rows) -> dict[str, tuple[str, str]]:
    """(content_hash, status, text) rows, in item order -> hash -> (status, text); of copies, one that
    was read wins over one the text test skipped, which wins over one OCR failed on; among equals, the
    first (the lowest item id: both queries order by it)."""
    known: dict[str, tuple[str, str]] = {}
    for content_hash, status, text in rows:
        held = known.get(content_hash)
        if held is None or COPY_RANK.get(status, 3) < COPY_RANK.get(held[0], 3):
            known[content_hash] = (status, text)
    return known


@dataclass(frozen=True)
class WordsRow:
    item_id: int
    content_hash: str | None
    settings: str
    status: str
    text: str
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class PendingPicture:
    item_id: int
    path: str
    content_hash: str | None


@dataclass(frozen=True)
class WordsMatch:
    item_id: int
    score: float  # 0..1: how well the picture's words hold the query's
    snippet: str  # the line that matched best
    matched: tuple[str, ...]  # the picture's words that matched the query's (for highlighting)


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def _trigrams(word: str) -> set[str]:
    padded = f" {word} "
    return {padded[index:index + 3] for index in range(len(padded) - 2)}


# characters OCR mistakes for each other, folded together before words are compared
CONFUSABLE = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l", "5": "s", "8": "b"})


def word_similarity(a: str, b: str) -> float:
    """Dice overlap of the two words' trigrams (padded, so short words and word ends count), after
    folding characters OCR confuses (0/o, 1/l/i, 5/s, 8/b): 1 for the same word, about 0.6 for one
    misread letter in seven."""
    if a == b:
        return 1.0
    a, b = a.translate(CONFUSABLE), b.translate(CONFUSABLE)
    if a == b:
        return 0.95
    left, right = _trigrams(a), _trigrams(b)
    return 2 * len(left & right) / (len(left) + len(right))


def score_text(query: Sequence[str], text: str) -> tuple[float, str, tuple[str, ...]]:
    """(score, best line, matched words) of a picture's text against the query's words. The score is
    the mean over query words of each one's best similarity to a word of the text; a line holding
    the query's words as a phrase scores best among lines."""
    lines = [line for line in text.splitlines() if line.strip()] or [text]
    line_tokens = [tokens(line) for line in lines]
    everything = {token for words in line_tokens for token in words}
    if not query or not everything:
        return 0.0, "", ()
    best: dict[str, tuple[float, str]] = {}
    for word in query:
        best[word] = max(((word_similarity(word, token), token) for token in everything), default=(0.0, ""))
    score = sum(value for value, _ in best.values()) / len(query)
    matched = tuple(dict.fromkeys(token for value, token in best.values() if value >= MIN_SCORE))
    wanted = set(matched)
    snippet = max(range(len(lines)), key=lambda index: (len(wanted & set(line_tokens[index])), -index))
    return score, lines[snippet][:200], matched


def fts_query(query: Sequence[str]) -> str | None:
    """An FTS5 query for pictures sharing any trigram with the query's words (None: nothing to ask)."""
    grams = sorted({word[index:index + 3] for word in query for index in range(len(word) - 2)})
    if not grams:
        return None
    return " OR ".join('"' + gram.replace('"', '""') + '"' for gram in grams)


class WordStore:
    """Reads and writes of `item_words`. `rows(sql, params)` runs a read written with `?` placeholders
    (plain sqlite3 on the search path, SQLAlchemy otherwise); writes go through the Database's
    transactions. `postgres`: the database is PostgreSQL (pg_trgm instead of FTS5)."""

    def __init__(self, rows: Callable[[str, Sequence], list[tuple]], open_db: Callable, *, postgres: bool = False):
        self._rows = rows
        self._open_db = open_db
        self._postgres = postgres

    # --- indexing ---------------------------------------------------------------------
    def pending(self, settings: str, *, retry: bool = False) -> list[PendingPicture]:
        """Pictures (with vectors) whose words were never read with `settings`, or read before their
        file changed; with `retry`, also those the text test skipped or OCR failed on."""
        done = "w.status = 'read'" if retry else "TRUE"
        sql = ("SELECT i.id, i.path, i.content_hash FROM items i LEFT JOIN item_words w ON w.item_id = i.id "
               "WHERE i.modality = ? AND i.error IS NULL AND EXISTS (SELECT 1 FROM vectors v WHERE v.item_id = i.id) "
               "AND NOT (w.item_id IS NOT NULL AND w.settings = ? "
               f"AND w.content_hash IS NOT DISTINCT FROM i.content_hash AND {done}) "
               "ORDER BY i.path")
        return [PendingPicture(*row) for row in self._rows(sql, (IMAGE, settings))]

    def known_by_hash(self, settings: str, hashes: Sequence[str] | None = None) -> dict[str, tuple[str, str]]:
        """content hash -> (status, text) of pictures read with `settings` (copies are not read twice).

        With `hashes` (those of the pictures about to be read), only those are looked up, through the
        items' content-hash index and item_words' key: a run that adds 10 pictures to an index of
        1,000,000 then asks for 10 hashes instead of reading a million rows into a dict (2.1 s there:
        bench/bench_words_pending.py). It finds the words of pictures whose content still has that
        hash; a row kept from before its picture changed is only found without `hashes`."""
        if hashes is None or len(hashes) > KNOWN_LOOKUP_MAX:
            sql = ("SELECT content_hash, status, text FROM item_words WHERE settings = ? AND content_hash IS NOT NULL "
                   "ORDER BY item_id")
            return _read_copies_first(self._rows(sql, (settings,)))
        wanted = sorted(set(hashes))
        found: list[tuple] = []
        for start in range(0, len(wanted), KNOWN_LOOKUP_CHUNK):
            chunk = wanted[start:start + KNOWN_LOOKUP_CHUNK]
            sql = ("SELECT i.content_hash, w.status, w.text, w.item_id FROM items i JOIN item_words w ON w.item_id = i.id "
                   "WHERE i.content_hash IN (" + ",".join("?" * len(chunk)) + ") AND w.settings = ? "
                   "AND w.content_hash = i.content_hash ORDER BY w.item_id")
            found.extend(self._rows(sql, (*chunk, settings)))
        found.sort(key=lambda row: row[3])  # item order across chunks
        return _read_copies_first(row[:3] for row in found)

    def write(self, rows: Sequence[WordsRow]) -> None:
        """Store (replace) the words of `rows`, in one transaction; rows of items deleted meanwhile are dropped."""
        if not rows:
            return
        db = self._open_db()
        now = time.time()
        with db.transaction() as session:
            run_sql(session, "DELETE FROM item_words WHERE item_id IN (" + ",".join("?" * len(rows)) + ")",
                    tuple(row.item_id for row in rows))
            run_sql(session,
                "INSERT INTO item_words (item_id, content_hash, settings, status, text, error, seconds, read_at) "
                "SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM items WHERE id = ?)",
                [(row.item_id, row.content_hash, row.settings, row.status, row.text, row.error, row.seconds, now,
                  row.item_id) for row in rows])

    def counts(self) -> dict[str, int]:
        return {status: count for status, count in
                self._rows("SELECT status, COUNT(*) FROM item_words GROUP BY status", ())}

    def with_words(self) -> int:
        """Pictures whose read found words."""
        return self._rows("SELECT COUNT(*) FROM item_words WHERE status = 'read' AND text != ''", ())[0][0]

    def text_of(self, item_id: int) -> str | None:
        rows = self._rows("SELECT text FROM item_words WHERE item_id = ?", (item_id,))
        return rows[0][0] if rows else None

    # --- search -----------------------------------------------------------------------
    def search(self, query: str, top: int, *, item_ids: Sequence[int] | None = None,
               min_score: float = MIN_SCORE) -> list[WordsMatch]:
        """Pictures whose words match `query`, best first (at most `top`; only `item_ids` when given)."""
        words = tokens(query)
        ask = fts_query(words)
        if ask is None:  # words of one or two letters: no trigrams, score every picture with words
            rows = self._rows("SELECT item_id, text FROM item_words WHERE status = 'read' AND text != '' "
                              "ORDER BY item_id LIMIT ?", (CANDIDATES,))
        elif self._postgres:
            rows = self._pg_candidates(words)
        else:
            rows = self._rows("SELECT w.item_id, w.text FROM item_words_fts f JOIN item_words w ON w.item_id = f.rowid "
                              "WHERE item_words_fts MATCH ? ORDER BY f.rank LIMIT ?", (ask, CANDIDATES))
        allowed = None if item_ids is None else {int(item_id) for item_id in item_ids}
        matches = []
        for order, (item_id, text) in enumerate(rows):
            if allowed is not None and item_id not in allowed:
                continue
            score, snippet, matched = score_text(words, text)
            if score >= min_score:
                matches.append((score, -order, WordsMatch(item_id, round(score, 6), snippet, matched)))
        matches.sort(key=lambda entry: (-entry[0], -entry[1]))
        return [match for _, _, match in matches[:top]]

    def _pg_candidates(self, words: Sequence[str]) -> list[tuple[int, str]]:
        """pg_trgm's candidates: pictures with a word near any query word (GIN index, `<%`), most similar
        first. The threshold is set for this transaction only (SET LOCAL)."""
        db = self._open_db()
        unique = list(dict.fromkeys(words))
        near = " OR ".join("? <% w.text" for _ in unique)
        best = "GREATEST(" + ", ".join("word_similarity(?, w.text)" for _ in unique) + ")"
        with db.reading() as session:
            run_sql(session, f"SET LOCAL pg_trgm.word_similarity_threshold = {PG_CANDIDATE_SIMILARITY}")
            return [tuple(row) for row in run_sql(
                session, f"SELECT w.item_id, w.text FROM item_words w WHERE w.status = 'read' AND ({near}) "
                         f"ORDER BY {best} DESC, w.item_id LIMIT ?", (*unique, *unique, CANDIDATES)).fetchall()]
