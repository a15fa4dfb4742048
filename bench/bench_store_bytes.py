"""Bytes the SQLite database takes per item (its row and its vector), for N pictures with one 512-d
vector each, and the memory a re-run's change check holds per item (`known_files` of the root:
every row under it, in a dict; measured with tracemalloc); docs/SCALE.md scales these up (the
vector index's bytes are bench_ondisk's).

Rows are written through the product's `ItemStore.write_batch` with paths shaped like a photo
library's (`/photos/2024/07/IMG_001234.jpg`, 1,000 to a folder); the database is checkpointed
(WAL folded in) before it is measured. Vectors: random unit vectors (their bytes do not depend on
their values: float32 blobs in SQLite, fp16/PQ codes in FAISS).

    python bench/bench_store_bytes.py --n 50000 --work /tmp/mms-bytes
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mms-bytes"))
    args = parser.parse_args()
    from indexer.store.library import Library
    from indexer.store.records import IMAGE, ModelInfo, NewItem, single_vector

    shutil.rmtree(args.work, ignore_errors=True)
    db = args.work / "db"
    rng = np.random.default_rng(0)
    with Library(db) as library:
        library.bind_encoder(IMAGE, ModelInfo("ViT-B-32", "w", args.dim, "f"))
        run_id = library.runs.start("index", ["/photos"])
        for start in range(0, args.n, 5000):
            vectors = rng.standard_normal((min(5000, args.n - start), args.dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            batch = [NewItem(path=f"/photos/{2000 + n // 100_000}/{n // 1000 % 100:02d}/IMG_{n:07d}.jpg",
                             size=3_000_000 + n, mtime=1.7e9 + n, content_hash=f"{n:040x}", width=4032, height=3024,
                             format="JPEG", vectors=single_vector(vector)) for n, vector in zip(range(start, args.n), vectors)]
            library.items.write_batch(batch, run_id)
        library.runs.finish(run_id)
    with sqlite3.connect(db / "mmsearch.db") as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    database = sum(path.stat().st_size for path in db.glob("mmsearch.db*"))
    with Library(db) as library:
        tracemalloc.start()
        known = library.items.known_files("/photos")
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(known) == args.n
    report = {"n": args.n, "dim": args.dim, "database_bytes": database,
              "database_bytes_per_item": round(database / args.n, 1),
              "vector_blob_bytes": args.dim * 4, "known_files_bytes_per_item": round(held / args.n, 1),
              "code": benchlib.code_version(("indexer/store/items.py",)),
              "machine": benchlib.machine_line(), "date": benchlib.today()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
