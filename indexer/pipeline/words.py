"""The words pass of an index run: read the words in the pictures that still need it (OCR).

After the vectors are written, every picture whose words were not read with these settings (new,
changed, or read with another language) is tested for text and, when it passes, read by Tesseract
(indexer.media.ocr) on `workers` threads (tesserocr and pytesseract's processes both leave the
GIL while Tesseract reads). The decode threads of the run already tested the pictures they
decoded: those the test found no text in are recorded as skipped without a second read, and the
others are read with the lines it found. `WordsAhead` takes those answers as each batch is written
(indexer.pipeline.sync's `on_written`) and starts Tesseract on the pictures with text at once,
beside the embedding, on cores the model leaves idle; the pass then waits for those. A copy of a
picture already read takes its words without reading. What was read is written in batches, each
one transaction, so a run stopped half-way keeps what it read. A picture whose OCR fails or times
out is recorded as failed (not retried until it changes, or `--ocr on`): it keeps its vector, and
the run goes on.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Mapping

from indexer.media.files import read_file
from indexer.media.ocr import FAILED, READ, SKIPPED, OcrOptions, WordsOutcome, read_words
from indexer.media.text_gate import TextScreen
from indexer.pipeline.workers import usable_cores
from indexer.store.library import Library
from indexer.store.records import NewItem, WriteResult
from indexer.store.words import PendingPicture, WordsRow

log = logging.getLogger(__name__)

WRITE_EVERY = 32  # pictures per transaction


@dataclass
class WordsReport:
    read: int = 0  # pictures Tesseract read
    skipped: int = 0  # pictures the text test said hold no text
    failed: int = 0  # OCR failed or timed out (the picture keeps its vector)
    copied: int = 0  # copies of pictures read before: their words, not read again
    seconds: float = 0.0  # the whole pass
    ocr_seconds: float = 0.0  # Tesseract's share (summed over threads)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"read": self.read, "skipped": self.skipped, "failed": self.failed, "copied": self.copied,
                "seconds": round(self.seconds, 3), "ocr_seconds": round(self.ocr_seconds, 3)}


def _read_one(picture: PendingPicture, options: OcrOptions, screen=None) -> WordsOutcome:
    try:
        data = read_file(picture.path)
    except Exception as exc:  # noqa: BLE001 - gone or unreadable since its vector was made: no words this time
        return WordsOutcome(FAILED, error=f"cannot read the file for OCR: {exc}")
    try:
        return read_words(data, options, screen)
    except Exception as exc:  # a bug in a reader costs the words, never the run
        log.exception("unexpected OCR error on %s", picture.path)
        return WordsOutcome(FAILED, error=f"unexpected OCR error: {exc!r}")


class WordsAhead:
    """The decode threads' text test answers of an index run, by item id, and Tesseract started on
    the pictures it passed (every picture with `--ocr on`) as soon as their rows are written."""

    def __init__(self, options: OcrOptions, workers: int | None = None):
        self.options = options
        self.screens: dict[int, TextScreen] = {}
        self.reading: dict[int, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers or max(1, usable_cores() // 2),
                                        thread_name_prefix="ocr-ahead")

    def written(self, rows: list[NewItem], written: WriteResult) -> None:
        tested = {row.content_hash: row for row in rows if row.text_screen is not None and row.content_hash}
        for item_id, digest in written.hashes.items():
            row = tested.get(digest)
            if row is None:
                continue
            self.screens[item_id] = row.text_screen
            if self.options.mode == "on" or row.text_screen.has_text():
                picture = PendingPicture(item_id, row.path, digest)
                self.reading[item_id] = self._pool.submit(_read_one, picture, self.options, row.text_screen)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


def read_pictures(library: Library, options: OcrOptions, *, workers: int | None = None,
                  ahead: WordsAhead | None = None,
                  on_progress: Callable[[int, int], None] | None = None,
                  on_failure: Callable[[str, str], None] | None = None) -> WordsReport:
    """Read the words of every picture that needs it (see the module docstring)."""
    screens: Mapping[int, TextScreen] = ahead.screens if ahead is not None else {}
    reading: Mapping[int, Future] = ahead.reading if ahead is not None else {}
    started = time.perf_counter()
    report = WordsReport()
    pending = library.words.pending(options.key, retry=options.mode == "on")
    if not pending:
        report.seconds = time.perf_counter() - started
        return report
    known = library.words.known_by_hash(options.key, [picture.content_hash for picture in pending
                                                      if picture.content_hash])
    to_read = []
    twins: dict[str, list[PendingPicture]] = {}
    rows: list[WordsRow] = []
    done = 0
    for picture in pending:
        copy = known.get(picture.content_hash) if picture.content_hash else None
        if copy is not None and (copy[0] == READ or options.mode != "on"):
            rows.append(WordsRow(picture.item_id, picture.content_hash, options.key, copy[0], copy[1]))
            report.copied += 1
            done += 1
        elif picture.content_hash and picture.content_hash in twins:
            twins[picture.content_hash].append(picture)  # a copy of one read in this pass: its words then
        elif (options.mode != "on" and (screen := screens.get(picture.item_id)) is not None
              and not screen.has_text()):
            rows.append(WordsRow(picture.item_id, picture.content_hash, options.key, SKIPPED, ""))  # no read
            report.skipped += 1
            done += 1
        else:
            to_read.append(picture)
            if picture.content_hash:
                twins[picture.content_hash] = []
    library.words.write(rows)
    rows = []
    if on_progress is not None:
        on_progress(done, len(pending))
    with ThreadPoolExecutor(max_workers=workers or usable_cores(), thread_name_prefix="ocr") as pool:
        futures = [reading.get(item.item_id) or pool.submit(_read_one, item, options, screens.get(item.item_id))
                   for item in to_read]
        for picture, future in zip(to_read, futures):
            outcome = future.result()
            rows.append(WordsRow(picture.item_id, picture.content_hash, options.key, outcome.status, outcome.text,
                                 outcome.error, round(outcome.seconds, 4)))
            report.ocr_seconds += outcome.seconds
            if outcome.status == READ:
                report.read += 1
            elif outcome.status == SKIPPED:
                report.skipped += 1
            else:
                report.failed += 1
                report.failures.append((picture.path, outcome.error or "OCR failed"))
                if on_failure is not None:
                    on_failure(picture.path, outcome.error or "OCR failed")
            done += 1
            for twin in twins.get(picture.content_hash, []) if picture.content_hash else []:
                rows.append(WordsRow(twin.item_id, twin.content_hash, options.key, outcome.status, outcome.text,
                                     outcome.error))
                report.copied += 1
                done += 1
            if len(rows) >= WRITE_EVERY:
                library.words.write(rows)
                rows = []
            if on_progress is not None:
                on_progress(done, len(pending))
    library.words.write(rows)
    report.seconds = time.perf_counter() - started
    return report
