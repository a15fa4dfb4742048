"""What an unchanged re-run's words pass costs at scale: `WordStore.pending()` (the query that finds
pictures whose words were never read, or read before their file changed) and `known_by_hash()` on a
real SQLite index holding N pictures, every one already through the words pass (2% read, 98% skipped by
the text test: the case of a re-run with nothing new).

Rows are written straight into the index's tables (items, vectors, item_words; the FTS5 triggers
run), so N = 1,000,000 builds in about a minute; the vectors are 4-byte stand-ins (pending() only
asks whether one exists).

    python bench/bench_words_pending.py --n 1000000
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.store.library import DB_NAME, Library


def build(folder: Path, n: int, settings: str) -> None:
    with Library(folder) as library:
        library.words.pending(settings)  # makes the tables (and the FTS5 index) as an index run does
    db = sqlite3.connect(folder / DB_NAME)
    now = time.time()
    with db:
        db.executemany("INSERT INTO items (id, path, modality, size, mtime, content_hash, indexed_at, seen_run) "
                       "VALUES (?, ?, 'image', 1000, ?, ?, ?, 0)",
                       ((i, f"/photos/{i // 1000:04d}/img-{i:07d}.jpg", now, f"{i:032x}", now) for i in range(1, n + 1)))
        db.executemany("INSERT INTO vectors (item_id, encoder, vector) VALUES (?, 'image', x'00000000')",
                       ((i,) for i in range(1, n + 1)))
        db.executemany("INSERT INTO item_words (item_id, content_hash, settings, status, text, seconds, read_at) "
                       "VALUES (?, ?, ?, ?, ?, 0, ?)",
                       ((i, f"{i:032x}", settings, "read" if i % 50 == 0 else "skipped",
                         f"receipt {i}" if i % 50 == 0 else "", now) for i in range(1, n + 1)))
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="mms-pending-"))
    settings = "eng"
    if not (folder / DB_NAME).exists():
        started = time.perf_counter()
        build(folder, args.n, settings)
        print(f"built {args.n:,} pictures in {time.perf_counter() - started:.1f} s at {folder}")
    ten = [f"{i:032x}" for i in range(50, 550, 50)] + ["f" * 32]  # ten read, one unknown
    many = [f"{i:032x}" for i in range(1, 10_001)]
    with Library(folder, create=False) as library:
        for label, run in (("pending()", lambda: library.words.pending(settings)),
                           ("pending(retry=True)", lambda: library.words.pending(settings, retry=True)),
                           ("known_by_hash()", lambda: library.words.known_by_hash(settings)),
                           ("known_by_hash(11 hashes)", lambda: library.words.known_by_hash(settings, ten)),
                           ("known_by_hash(10,000)", lambda: library.words.known_by_hash(settings, many))):
            spent, size = [], 0
            for _ in range(args.rounds):
                started = time.perf_counter()
                size = len(run())
                spent.append(time.perf_counter() - started)
            print(f"{label:22s} {statistics.median(spent) * 1000:9.1f} ms median of {args.rounds} "
                  f"(runs {', '.join(f'{s * 1000:.0f}' for s in spent)}), {size:,} rows")


if __name__ == "__main__":
    main()
