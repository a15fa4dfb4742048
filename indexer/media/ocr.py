"""Words read from a picture with Tesseract (through pytesseract), after a cheap test says it holds text.

`read_words` decodes a picture small enough for Tesseract to be quick (long side `OcrOptions.side`),
asks the text test (indexer.media.text_gate) whether it holds text (mode "auto"), and reads it.
A picture with few lines or few letters (a sign on a photo, turned a few degrees) is read by the
lines the text test found, each cut out, scaled, turned dark-on-light and read as one line (`line_crops`,
`tesseract_lines`, one Tesseract process): cheaper than having Tesseract search a whole photo,
and it read signs the page modes missed. Receipts, screenshots and slides are read whole, in
sparse mode where the lines cover little of the picture, else in automatic page mode
(docs/BENCHMARKS.md, "Words in pictures", compares the modes on signs). Every failure (no
Tesseract, a timeout, a picture it cannot take) is a `WordsOutcome` with an error: it costs the
words, never the picture's vector or the run.
"""
from __future__ import annotations

import io
import logging
import os
import re
import shutil
from dataclasses import dataclass

from indexer.errors import MmsearchError

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
READ, SKIPPED, FAILED = "read", "skipped", "failed"  # what became of a picture's words


class OcrUnavailableError(MmsearchError):
    """Tesseract (or pytesseract, or the asked language) is not installed."""


@dataclass(frozen=True)
class OcrOptions:
    # auto: read the pictures the text test passes (a one-line note, not an error, where Tesseract
    # is missing); on: read every picture (an error without Tesseract); off: none. None (an index
    # run's default): what the index remembers, else auto for a new index (`chosen_mode`)
    mode: str | None = "auto"
    lang: str = "eng"  # Tesseract languages, "eng+deu" style (Debian: tesseract-ocr-LANG)
    timeout_s: float = 20.0  # per picture; past it the picture keeps its vector and gets no words
    side: int = 2000  # long side the picture is read at (camera photos are scaled down first)
    few_lines: int = 5  # the text test found at most this many lines: read them one by one (a sign)
    # ... or fewer letter marks than this (a sign, or a photo the test passed by mistake: its
    # line boxes cost a quarter of a search of the whole photo)
    few_marks: int = 30
    sparse_below: float = 0.08  # else, lines covering less of the picture than this: sparse mode

    @property
    def key(self) -> str:
        """What a stored reading depends on: a picture read with other settings is read again."""
        return f"{self.lang}"


@dataclass(frozen=True)
class WordsOutcome:
    status: str  # READ, SKIPPED (the text test saw no text) or FAILED
    text: str = ""
    error: str | None = None
    seconds: float = 0.0  # Tesseract's time (0 when it did not run)


CHOICE_KEY = "ocr_mode"  # an index's remembered --ocr (schema_info)


def chosen_mode(explicit: str | None, remembered: str | None, *, new_index: bool, has_words: bool) -> str:
    """The --ocr mode of an index run: the run's own, else what the index remembers, else auto for a
    new index (or one that already holds words), else off: an index made before auto was the default
    is not read through on the first run after an upgrade (hours on a large library); `--ocr auto`
    once asks for that, and is remembered."""
    if explicit:
        return check_mode(explicit)
    if remembered in MODES:
        return remembered
    return "auto" if new_index or has_words else "off"


def check_mode(mode: str) -> str:
    mode = mode.lower()
    if mode not in MODES:
        raise MmsearchError(f"--ocr must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def _check_lang(lang: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*", lang):
        raise MmsearchError(f"--ocr-lang {lang!r}: give Tesseract language codes such as eng or eng+deu")


def tesseract_problem(lang: str = "eng") -> str | None:
    """Why words cannot be read here (one line), or None when Tesseract and `lang` are installed."""
    _check_lang(lang)
    try:
        import pytesseract
    except ImportError:
        return "pytesseract is not installed (pip install 'mmsearch[ocr]')"
    if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        return "Tesseract is not installed (Debian/Ubuntu: apt install tesseract-ocr tesseract-ocr-eng)"
    try:
        installed = set(pytesseract.get_languages(config=""))
    except Exception as exc:  # noqa: BLE001 - a broken install: say so, never fail the run
        return f"Tesseract does not answer ({exc})"
    missing = [name for name in lang.split("+") if name not in installed]
    if missing:
        packages = " ".join(f"tesseract-ocr-{name.lower()}" for name in missing)
        return f"Tesseract has no {'+'.join(missing)} language data (apt install {packages})"
    return None


def _small(data: bytes, side: int):
    """The picture as RGB, its long side at most `side` (JPEGs decoded at a reduced scale)."""
    from PIL import Image, ImageOps

    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":  # decoded at the smallest DCT scale still at least the wanted size
        scale = min(1.0, side / max(image.size))
        image.draft("RGB", (max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    image = ImageOps.exif_transpose(image)
    image = image.convert("RGB")
    if max(image.size) > side:
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return image


def tesseract_text(image, lang: str, psm: int, timeout_s: float) -> str:
    """Tesseract's text of a PIL image in page segmentation mode `psm` (one thread per process: the
    run reads several pictures at once)."""
    import pytesseract

    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    return pytesseract.image_to_string(image, lang=lang, config=f"--psm {psm}", timeout=timeout_s)


STRIP_LINES = 12  # line boxes read from a sparse picture, largest first
STRIP_HEIGHT = 56  # px each line box is scaled to (letters then stand about 40 px high)


def _light_letters(line) -> bool:
    """Letters are the smaller part of a line's box: lighter than its mean there, they are light."""
    import numpy as np

    pixels = np.asarray(line, dtype=np.float32)
    return pixels.size > 0 and float((pixels > pixels.mean()).mean()) < 0.5


def line_crops(image, lines) -> list:
    """The text test's line boxes cut from `image` (fractions of it; padded), each scaled to
    STRIP_HEIGHT, turned dark-on-light and contrast stretched."""
    from PIL import Image, ImageOps

    width, height = image.size
    gray = image.convert("L")
    crops = []
    for x0, y0, x1, y1 in lines[:STRIP_LINES]:
        pad = (y1 - y0) * height * 0.35
        box = (int(max(0, x0 * width - pad)), int(max(0, y0 * height - pad)),
               int(min(width, x1 * width + pad)), int(min(height, y1 * height + pad)))
        if box[2] - box[0] < 4 or box[3] - box[1] < 4:
            continue
        crop = gray.crop(box)
        crop = crop.resize((max(1, round(crop.width * STRIP_HEIGHT / crop.height)), STRIP_HEIGHT),
                           Image.Resampling.LANCZOS)
        if _light_letters(gray.crop((int(x0 * width), int(y0 * height), int(x1 * width) + 1, int(y1 * height) + 1))):
            crop = ImageOps.invert(crop)  # light letters on a dark board: dark on light for Tesseract
        crops.append(ImageOps.autocontrast(crop, cutoff=1))
    return crops


def tesseract_lines(crops: list, lang: str, timeout_s: float) -> str:
    """Each crop read as one line of text (psm 7), all in one Tesseract process (a list file of
    pages: one start-up, not one per line)."""
    import tempfile

    import pytesseract

    if not crops:
        return ""
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    with tempfile.TemporaryDirectory(prefix="mmsearch-ocr-") as folder:
        names = []
        for index, crop in enumerate(crops):
            names.append(os.path.join(folder, f"line{index:02d}.png"))
            crop.save(names[-1])
        listing = os.path.join(folder, "lines.txt")
        with open(listing, "w", encoding="utf-8") as handle:
            handle.write("\n".join(names) + "\n")
        text = pytesseract.image_to_string(listing, lang=lang, config="--psm 7", timeout=timeout_s)
    return text.replace("\x0c", "\n")


def clean_text(text: str) -> str:
    """Tesseract's output with its empty lines and runs of spaces dropped (lines kept: snippets are lines)."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def read_words(data: bytes, options: OcrOptions, screen=None) -> WordsOutcome:
    """The words of one picture's bytes (see the module docstring). Never raises for a bad picture.
    `screen`: the text test's answer when the decode threads already gave it (not tested again)."""
    import time

    from indexer.media.text_gate import GATE_SIDE, screen_image

    try:
        if screen is None:
            screen = screen_image(_small(data, GATE_SIDE))  # a JPEG decoded at 1/2-1/8 scale: milliseconds
        if options.mode != "on" and not screen.has_text():
            return WordsOutcome(SKIPPED)
        image = _small(data, options.side)
    except Exception as exc:  # noqa: BLE001 - the vector path already decoded it; a reader quirk costs only the words
        return WordsOutcome(FAILED, error=f"cannot decode for OCR: {exc}")
    started = time.perf_counter()
    try:
        few = len(screen.lines) <= options.few_lines or screen.marks < options.few_marks
        crops = line_crops(image, screen.lines) if few else []
        if crops:  # a sign, a label: its few lines, one by one
            text = tesseract_lines(crops, options.lang, options.timeout_s)
        else:  # sparse mode finds words scattered over a picture; automatic mode reads a full page
            text = tesseract_text(image, options.lang, 11 if screen.coverage < options.sparse_below else 3,
                                  options.timeout_s)
    except RuntimeError as exc:  # pytesseract's timeout
        return WordsOutcome(FAILED, error=f"OCR took longer than {options.timeout_s:g} s: {exc}",
                            seconds=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - OCR failing costs the words, never the run
        return WordsOutcome(FAILED, error=f"OCR failed: {exc}", seconds=time.perf_counter() - started)
    return WordsOutcome(READ, clean_text(text), seconds=time.perf_counter() - started)
