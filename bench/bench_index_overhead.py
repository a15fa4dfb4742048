"""What `mmsearch index` costs besides the model: the CPU side of the GPU (deferred-JPEG) path.

1. `pipeline`: index_folders on N distinct 640x480 JPEG files with JPEGs deferred as on a CUDA
   machine, but the GPU embedder replaced by a stand-in that returns random unit vectors at once:
   reading, hashing, header parsing, rows, SQLite writes, the FAISS file. Files/s.
2. `write`: MetaStore.write_batch alone, 40 batches of 256 new rows with 512-d vectors. ms/row.

    .venv/bin/python bench/bench_index_overhead.py pipeline --files 4000 --workers 2
    .venv/bin/python bench/bench_index_overhead.py write
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL_CONFIG = {"embed_dim": 512,
                "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
                "seed": 0}


def bench_pipeline(work: Path, files: int, workers: int, batch: int) -> dict:
    from gpu_check import make_jpegs, unique_copies
    from indexer import sync
    from indexer.gpu_decode import JpegOutcome
    from indexer.library import Library
    from indexer.pipeline import PipelineConfig
    from retrieval.encoders import load_model

    folder = work / "jpegs"
    unique_copies(make_jpegs(16, (640, 480)), files, folder, "x")
    config_path = work / "small.json"
    config_path.write_text(json.dumps(SMALL_CONFIG))
    model = load_model(str(config_path), device="cpu")
    rng = np.random.default_rng(0)

    def stand_in(items):
        vectors = rng.standard_normal((len(items), 512)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return [JpegOutcome(vector) for vector in vectors]

    sync._gpu_jpeg_setup = lambda _model, pipeline: (dataclasses.replace(pipeline, defer_jpeg=True), stand_in)
    config = sync.IndexConfig(roots=(str(folder),), pipeline=PipelineConfig(batch_size=batch, workers=workers))
    started = time.perf_counter()
    with Library(work / "db") as library, library.lock():
        report = sync.index_folders(library, model, config)
    wall = time.perf_counter() - started
    return {"files": report.embedded, "seconds": round(wall, 2), "files_per_s": round(report.embedded / wall, 1),
            "workers": workers, "batch": batch}


def bench_write(work: Path, batches: int = 40, rows: int = 256) -> dict:
    from indexer.store_meta import MetaStore, NewItem
    from retrieval.encoders import ModelInfo

    store = MetaStore(work / "write.db")
    store.bind_model(ModelInfo("bench", "random", 512, "bench"))
    run_id = store.start_run("index", [str(work)])
    rng = np.random.default_rng(0)
    prepared = []
    for b in range(batches):
        vectors = rng.standard_normal((rows, 512)).astype(np.float32)
        prepared.append([NewItem(path=f"{work}/{b}_{i}.jpg", size=1000 + i, mtime=1.0, content_hash=f"{b:06d}{i:06d}",
                                 width=640, height=480, format="JPEG", vector=vectors[i], reuse_from=None, error=None,
                                 taken_at=None) for i in range(rows)])
    started = time.perf_counter()
    for batch in prepared:
        store.hashes_for(store.write_batch(batch, run_id))
    seconds = time.perf_counter() - started
    return {"rows": batches * rows, "seconds": round(seconds, 3), "ms_per_row": round(seconds / (batches * rows) * 1e3, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("pipeline", "write"))
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mms-index-overhead"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    result = bench_pipeline(args.work, args.files, args.workers, args.batch) if args.what == "pipeline" \
        else bench_write(args.work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
