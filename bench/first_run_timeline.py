"""One first index run's timeline: each progress phase and export step with its second, in one
fresh process (library call, words off), and with --text-export-alone the text tower's one-time
export by itself, profiled (docs/BENCHMARKS.md "A quiet machine, 2026-12-02").

    HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/perf-hf python bench/first_run_timeline.py /tmp/perf-jpegs /tmp/new-index
    HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/perf-hf python bench/first_run_timeline.py --text-export-alone /tmp/text-export
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

T0 = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
MODEL = "ViT-B-32-256:datacomp_s34b_b86k"


def stamp(message: str) -> None:
    print(f"{time.perf_counter() - T0:7.2f} [{threading.current_thread().name}] {message}", flush=True)


def timeline(folder: str, db: str) -> None:
    from indexer.media.ocr import OcrOptions
    from retrieval.indexing import Callbacks, IndexRequest, index_library

    stamp("imported")

    def progress(event) -> None:
        if event.done in (0, event.total):
            stamp(f"progress {event.phase} {event.done}/{event.total}")

    outcome = index_library(IndexRequest(db=db, roots=(folder,), model=MODEL, precision="onnx-int8",
                                         ocr=OcrOptions(mode="off")),
                            Callbacks(on_progress=progress, on_step=lambda text: stamp(f"step {text}")))
    stamp(f"done: {outcome.report.seconds:.1f} s, prepare {outcome.report.prepare_seconds:.1f} s")


def text_export_alone(folder: str) -> None:
    import cProfile
    import pstats
    import shutil

    from retrieval.models.encoders import load_model
    from retrieval.text_export_job import write_text_export

    model = load_model(MODEL, device="cpu")
    shutil.rmtree(folder, ignore_errors=True)
    profile = cProfile.Profile()
    profile.runcall(write_text_export, Path(folder), model)
    stamp("text export done")
    pstats.Stats(profile).sort_stats("cumtime").print_stats(30)


if __name__ == "__main__":
    if sys.argv[1] == "--text-export-alone":
        text_export_alone(sys.argv[2])
    else:
        timeline(sys.argv[1], sys.argv[2])
