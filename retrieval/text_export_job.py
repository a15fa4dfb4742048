"""The text tower's one-time ONNX export on a thread of its own, beside an index run's images (issue 22).

A first index run makes two one-time exports: the image tower's, which the first batch waits for,
and the text tower's (for torch-free text searches), which no picture needs. Run after the images,
the text export was a fifth of a first run. `TextExportJob` starts it on a thread when the
run reaches its model set-up: it then overlaps the image tower's export (mostly one core's work:
imports, graph writing, quantising) and the embedding, and the run waits for what is left of it at
the end, as a step of its own ("exporting the text tower", shown from its start).

The vectors never depend on it: the run writes them before it waits, and a failed export is
reported (`TextExportResult.error`, a note in the run's summary), never
raised; text searches then use the torch text tower, and `mmsearch repair` writes the export again.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextExportResult:
    ok: bool  # a current export of the model is in the folder afterwards
    seconds: float  # the export's own seconds (on its thread)
    waited: float  # of those, the seconds the run waited for it after its images
    error: str | None = None  # why it failed (logged too)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "seconds": round(self.seconds, 3), "waited_seconds": round(self.waited, 3),
                "error": self.error}


class TextExportJob:
    """`model`'s text export into `folder` (`write_text_export`), once.

    `start()` begins it on a thread (again: nothing); `finish()` waits for it and returns its
    result; a job never started runs in the caller's thread. A thread, not a process: a process
    pays the imports of torch, open_clip and onnx again (about 10 CPU-seconds here, more than the
    export), and the CLIP text tower's graph is written without the tracer
    (`retrieval.models.clip_text_onnx`), so the export holds the GIL only briefly; the rest
    (building the tower, checking the graph, optimising it) runs in torch and onnxruntime, which
    let the image side's threads run. A tower that still needs the tracer (Hugging Face text
    towers) holds the GIL longer and slows the image side meanwhile, never its results.
    """

    def __init__(self, folder: Path, model):
        self.folder, self.model = Path(folder), model
        self._thread: threading.Thread | None = None
        self._result: tuple[bool, str | None, float] | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mmsearch-text-export", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        self._result = _export(self.folder, self.model)

    def finish(self) -> TextExportResult:
        waiting = time.perf_counter()
        if self._thread is None:
            self._run()
        else:
            self._thread.join()
        ok, error, seconds = self._result or (False, "the export thread ended without a result", 0.0)
        if not ok:
            log.warning("text tower export into %s failed: %s", self.folder, error)
        return TextExportResult(ok, seconds, time.perf_counter() - waiting, error)


def _export(folder: Path, model) -> tuple[bool, str | None, float]:
    started = time.perf_counter()
    try:
        ok = write_text_export(folder, model)
        error = None if ok else "the export failed (see the log)"
    except BaseException as exc:  # noqa: BLE001 - reported by finish(); the run's vectors do not need it
        ok, error = False, f"{type(exc).__name__}: {exc}"
    return ok, error, time.perf_counter() - started


def write_text_export(folder: Path, model) -> bool:
    """`model`'s text export in `folder` when missing or stale, optimised to open fast. True when a
    usable export is there afterwards (a failure is logged: text searches then use torch)."""
    from retrieval.models.fast_text import add_bpe_tables, optimise_text_export
    from retrieval.models.onnx_text import ensure_exported

    usable = ensure_exported(model, folder)
    if folder.is_dir():  # pre-optimised, weights mapped: opens in a third of the time
        optimise_text_export(folder)
        add_bpe_tables(folder)  # an older CLIP export: its tokenizer opens in ms (retrieval.models.clip_bpe)
    return usable


def text_export_needed(folder: Path, fingerprint: str) -> bool:
    """True when `folder` holds no current, optimised text export of the model `fingerprint` (with its
    tokenizer tables, for a CLIP tokenizer)."""
    from retrieval.models.fast_text import has_bpe_tables, is_optimised
    from retrieval.models.onnx_text import export_sequence, exported_fingerprint

    return not (exported_fingerprint(Path(folder)) == fingerprint and export_sequence(Path(folder)) is not None
                and is_optimised(Path(folder)) and has_bpe_tables(Path(folder)))
