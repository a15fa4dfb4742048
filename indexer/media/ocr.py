"""Words read from a picture with Tesseract, after a cheap test says it holds text.

`read_words` decodes a picture small enough for Tesseract to be quick (long side `OcrOptions.side`),
asks the text test (indexer.media.text_gate) whether it holds text (mode "auto"), and reads it.
A picture with few lines or few letters (a sign on a photo, turned a few degrees) is read by the
lines the text test found, each cut out, scaled, turned dark-on-light and read as one line (`line_crops`,
`tesseract.read_lines`): cheaper than having Tesseract search a whole photo,
and it read signs the page modes missed. Receipts, screenshots and slides are read whole, in
sparse mode where the lines cover little of the picture, else in automatic page mode
(docs/BENCHMARKS.md, "Words in pictures", compares the modes on signs). Under auto, a picture
whose lines cover a fifth of it or more (where wood grain, gravel and leaves the test passes by
mistake land; generated receipts, screenshots and slides stayed under 17%) is confirmed before the
whole read: its three lines of most marks are read one by one, and the picture is read whole only
if a word of three letters or more comes back with a confidence of 70 or more (`confirms_words`),
else it is skipped: medians of 26-56 ms with tesserocr, against seconds for a photo read whole.
Tesseract is called through indexer.media.tesseract (tesserocr in this process where installed,
else pytesseract). Every failure (no Tesseract, a timeout, a picture it cannot take) is a `WordsOutcome`
with an error: it costs the words, never the picture's vector or the run.
"""
from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

from indexer.errors import MmsearchError
from indexer.media import tesseract

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
    # auto, before a whole read of a picture whose lines cover at least `confirm_above` of it (the
    # texture the test passes by mistake, wood grain, gravel, leaves, chains marks all over a photo;
    # text lines leave gaps): its `confirm_lines` lines of most marks read first (medians 26-56 ms
    # with tesserocr, 200-245 ms through pytesseract's process), the picture read whole only if a
    # word of three letters or more came back with at least `confirm_conf` confidence, else
    # skipped. 0 lines: no confirmation
    confirm_above: float = 0.2
    confirm_lines: int = 3
    confirm_conf: float = 70.0

    @property
    def key(self) -> str:
        """What a stored reading depends on: a picture read with other settings is read again."""
        return f"{self.lang}"


@dataclass(frozen=True)
class WordsOutcome:
    status: str  # READ, SKIPPED (the text test saw no text, or its lines gave no sure word) or FAILED
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
    return tesseract.problem(lang)


def _small(data: bytes, side: int):
    """The picture as RGB, its long side at most `side` (JPEGs decoded at a reduced scale)."""
    from PIL import Image, ImageOps

    from indexer.media.image import to_8bit

    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":  # decoded at the smallest DCT scale still at least the wanted size
        scale = min(1.0, side / max(image.size))
        image.draft("RGB", (max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    ImageOps.exif_transpose(image, in_place=True)  # upright as the text test saw it; no copy when it already is
    image = to_8bit(image)  # a 16-bit scan scaled, not clipped to white by convert()
    if image.mode != "RGB":
        image = image.convert("RGB")  # only then a copy (bench/ocr_decode.py: 16.4 -> 5.8 ms a photo)
    if max(image.size) > side:
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return image


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


def confirms_words(words: list[tuple[str, float]], min_conf: float, min_letters: int = 3) -> bool:
    """Some word Tesseract is sure of (confidence at least `min_conf`) holding at least
    `min_letters` letters or digits: what a textured photo's line boxes do not give."""
    return any(conf >= min_conf and sum(char.isalnum() for char in word) >= min_letters for word, conf in words)


# scripts written without spaces (and vertical text): Tesseract returns one character a word there,
# and its confidences run lower; a page in them is read whole without a confirmation
UNSPACED = ("chi_sim", "chi_tra", "jpn", "kor", "tha", "lao", "khm", "mya", "bod", "dzo")


def confirmable(lang: str) -> bool:
    """Whether `confirms_words` can judge Tesseract's words in `lang` (spaced words only)."""
    return not any(name in UNSPACED or name.endswith("_vert") for name in lang.split("+"))


def clean_text(text: str) -> str:
    """Tesseract's output with its empty lines and runs of spaces dropped (lines kept: snippets are lines)."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def reads_by_lines(screen, options: OcrOptions) -> bool:
    """A picture of few lines or few letter marks (a sign, a label) is read by its lines, else whole."""
    return len(screen.lines) <= options.few_lines or screen.marks < options.few_marks


def confirms_first(screen, options: OcrOptions) -> bool:
    """Whether a whole read waits for the confirmation (see the module docstring)."""
    return (options.mode != "on" and options.confirm_lines > 0 and screen.coverage >= options.confirm_above
            and confirmable(options.lang))


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
        crops = line_crops(image, screen.lines) if reads_by_lines(screen, options) else []
        if crops:  # a sign, a label: its few lines, one by one
            text = tesseract.read_lines(crops, options.lang, options.timeout_s)
        else:  # sparse mode finds words scattered over a picture; automatic mode reads a full page
            if confirms_first(screen, options):
                probe = line_crops(image, screen.longest_lines(options.confirm_lines))
                words = tesseract.read_line_words(probe, options.lang, options.timeout_s)
                if not confirms_words(words, options.confirm_conf):
                    return WordsOutcome(SKIPPED, seconds=time.perf_counter() - started)
            left = options.timeout_s - (time.perf_counter() - started)  # the confirmation's time counts
            text = tesseract.read_page(image, options.lang, 11 if screen.coverage < options.sparse_below else 3, left)
    except tesseract.OcrTimeout as exc:
        return WordsOutcome(FAILED, error=f"OCR took longer than {options.timeout_s:g} s: {exc}",
                            seconds=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - OCR failing costs the words, never the run
        return WordsOutcome(FAILED, error=f"OCR failed: {exc}", seconds=time.perf_counter() - started)
    return WordsOutcome(READ, clean_text(text), seconds=time.perf_counter() - started)

