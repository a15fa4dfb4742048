"""Tesseract, called from this process: in it through tesserocr where installed, else one
`tesseract` process per call through pytesseract.

Each `tesseract` process loads its model first: about 0.1 s, most of the cost of reading one line
of a sign, and of a photo the text test passed by mistake. tesserocr keeps one loaded Tesseract
per thread and language (`_api`), so a line costs milliseconds and a page loses that 0.1 s
(docs/BENCHMARKS.md, "Words in pictures"); it releases the GIL while it reads. Its wheel brings
its own libtesseract, and reads the language data Debian's tesseract-ocr-LANG packages install
(`tessdata_dir`). `MMSEARCH_OCR_ENGINE=pytesseract` (or `tesserocr`) picks one.

The functions here read: `read_page` (a picture in one page segmentation mode), `read_lines`
(crops each read as one line, psm 7) and `read_line_words` (the same, as words with Tesseract's
confidence). After `timeout_s` they raise `OcrTimeout` (tesserocr checks its deadline while it
recognises, not while it finds the lines: a read stops a little after it).

tesserocr runs Tesseract inside this process: a crash in Tesseract (none seen on the benchmark
sets) would end the run, where pytesseract's process would cost one picture's words;
`MMSEARCH_OCR_ENGINE=pytesseract` is the choice where that matters more than speed.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import os
import shutil
import threading
import time

ENGINE_ENV = "MMSEARCH_OCR_ENGINE"
ENGINES = ("tesserocr", "pytesseract")
LINE = 7  # psm: the picture is one line of text


class OcrTimeout(RuntimeError):
    """Tesseract took longer than it was given."""


def _tesserocr():
    try:
        import tesserocr
    except ImportError:
        return None
    return tesserocr


def tessdata_dir() -> str | None:
    """Where the language data lies: TESSDATA_PREFIX, else tesserocr's own default when it holds
    languages, else the folders Debian and Homebrew install to; None when none is found."""
    return os.environ.get("TESSDATA_PREFIX") or _installed_tessdata()


@functools.lru_cache(maxsize=1)
def _installed_tessdata() -> str | None:
    tesserocr = _tesserocr()
    if tesserocr is not None:
        path, languages = tesserocr.get_languages()
        if languages and os.path.isabs(path):  # not "./": the working folder's data, by chance
            return path
    for pattern in ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata", "/usr/local/share/tessdata",
                    "/opt/homebrew/share/tessdata"):
        for folder in sorted(glob.glob(pattern), reverse=True):  # the newest Tesseract's first
            if glob.glob(os.path.join(folder, "*.traineddata")):
                return folder
    return None


def engine() -> str:
    """The engine this process reads with (see the module docstring)."""
    asked = os.environ.get(ENGINE_ENV, "").strip().lower()
    if asked in ENGINES:
        return asked
    return "tesserocr" if _tesserocr() is not None and tessdata_dir() is not None else "pytesseract"


def languages() -> set[str]:
    """The languages installed for the engine (raises where it cannot tell)."""
    if engine() == "tesserocr":
        folder = tessdata_dir()
        return set(_tesserocr().get_languages(folder.rstrip("/") + "/")[1]) if folder else set()
    import pytesseract

    return set(pytesseract.get_languages(config=""))


def problem(lang: str) -> str | None:
    """Why words in `lang` cannot be read here (one line), or None."""
    if engine() == "pytesseract":
        try:
            import pytesseract
        except ImportError:
            return "pytesseract is not installed (pip install 'mmsearch[ocr]')"
        if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
            return "Tesseract is not installed (Debian/Ubuntu: apt install tesseract-ocr tesseract-ocr-eng)"
    elif _tesserocr() is None:
        return "tesserocr is not installed (pip install tesserocr, or MMSEARCH_OCR_ENGINE=pytesseract)"
    try:
        installed = languages()
    except Exception as exc:  # noqa: BLE001 - a broken install: say so, never fail the run
        return f"Tesseract does not answer ({exc})"
    missing = [name for name in lang.split("+") if name not in installed]
    if missing:
        packages = " ".join(f"tesseract-ocr-{name.lower()}" for name in missing)
        return f"Tesseract has no {'+'.join(missing)} language data (apt install {packages})"
    return None


# --- tesserocr: one Tesseract per thread and language ---------------------------------------------

_local = threading.local()


@functools.lru_cache(maxsize=1)
def _quiet_leptonica() -> None:
    """Leptonica's messages ("Error in boxClipToRectangle" on a box it clips) off stderr: the
    tesseract program's went to pytesseract's pipe, not the user's terminal."""
    import ctypes

    folder = os.path.join(os.path.dirname(_tesserocr().__file__), os.pardir, "tesserocr.libs")
    for library in glob.glob(os.path.join(folder, "libleptonica*.so*")) or ["libleptonica.so.6"]:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(library).setMsgSeverity(6)  # L_SEVERITY_NONE


def _api(lang: str):
    apis = getattr(_local, "apis", None)
    if apis is None:
        apis = _local.apis = {}
    if lang not in apis:  # freed with its thread
        tesserocr = _tesserocr()
        _quiet_leptonica()
        apis[lang] = tesserocr.PyTessBaseAPI(path=tessdata_dir().rstrip("/") + "/", lang=lang)
    return apis[lang]


def _recognize(api, image, psm: int, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise OcrTimeout("no time left")
    api.SetPageSegMode(psm)
    api.SetImage(image)
    if not api.Recognize(timeout=max(1, int(left * 1000))):
        raise OcrTimeout("Tesseract stopped at its deadline")
    if time.monotonic() > deadline:  # it checks its deadline between words: late all the same
        raise OcrTimeout("Tesseract answered past its deadline")


def _words_here(api) -> list[tuple[str, float]]:
    from tesserocr import RIL, iterate_level

    if not api.GetUTF8Text().strip():
        return []
    words = []
    try:
        for word in iterate_level(api.GetIterator(), RIL.WORD):
            if word.Empty(RIL.WORD):
                continue
            text = word.GetUTF8Text(RIL.WORD)
            if text and text.strip():
                words.append((text.strip(), float(word.Confidence(RIL.WORD))))
    except RuntimeError:  # tesserocr: "no text" where the iterator stands
        pass
    return words


# --- pytesseract: one process per call ------------------------------------------------------------

@contextlib.contextmanager
def _line_list(crops: list):
    """A list file naming each crop saved as a PNG: Tesseract reads them all as pages of one run."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mmsearch-ocr-") as folder:
        names = []
        for index, crop in enumerate(crops):
            names.append(os.path.join(folder, f"line{index:02d}.png"))
            crop.save(names[-1])
        listing = os.path.join(folder, "lines.txt")
        with open(listing, "w", encoding="utf-8") as handle:
            handle.write("\n".join(names) + "\n")
        yield listing


def _tsv_words(table: str) -> list[tuple[str, float]]:
    words = []
    for row in table.splitlines()[1:]:  # level page block par line word left top width height conf text
        fields = row.split("\t")
        if len(fields) == 12 and fields[11].strip():
            with contextlib.suppress(ValueError):
                words.append((fields[11].strip(), float(fields[10])))
    return words


@contextlib.contextmanager
def _process_timeout():
    """pytesseract's timeout (a RuntimeError saying so, the process killed) as OcrTimeout."""
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one thread per process: a run reads several at once
    try:
        yield
    except RuntimeError as exc:
        if "timeout" in str(exc).lower():
            raise OcrTimeout(str(exc)) from exc
        raise


# --- what the rest of mmsearch calls --------------------------------------------------------------

def read_page(image, lang: str, psm: int, timeout_s: float) -> str:
    """Tesseract's text of a PIL image in page segmentation mode `psm`, on one thread."""
    if timeout_s <= 0:  # pytesseract reads 0 as "no limit"
        raise OcrTimeout("no time left")
    if engine() == "tesserocr":
        api = _api(lang)
        _recognize(api, image, psm, time.monotonic() + timeout_s)
        return api.GetUTF8Text()
    import pytesseract

    with _process_timeout():
        return pytesseract.image_to_string(image, lang=lang, config=f"--psm {psm}", timeout=timeout_s)


def read_lines(crops: list, lang: str, timeout_s: float) -> str:
    """Each crop read as one line of text, one line of output each (one Tesseract process for all
    under pytesseract: a list file of pages)."""
    if not crops:
        return ""
    if engine() == "tesserocr":
        api, deadline, lines = _api(lang), time.monotonic() + timeout_s, []
        for crop in crops:
            _recognize(api, crop, LINE, deadline)
            lines.append(api.GetUTF8Text())
        return "\n".join(lines)
    import pytesseract

    with _process_timeout(), _line_list(crops) as listing:
        text = pytesseract.image_to_string(listing, lang=lang, config=f"--psm {LINE}", timeout=timeout_s)
    return text.replace("\x0c", "\n")


def read_line_words(crops: list, lang: str, timeout_s: float) -> list[tuple[str, float]]:
    """Each crop read as one line, as its words with Tesseract's confidence in them (0-100)."""
    if not crops:
        return []
    if engine() == "tesserocr":
        api, deadline, words = _api(lang), time.monotonic() + timeout_s, []
        for crop in crops:
            _recognize(api, crop, LINE, deadline)
            words.extend(_words_here(api))
        return words
    import pytesseract

    with _process_timeout(), _line_list(crops) as listing:
        return _tsv_words(pytesseract.image_to_data(listing, lang=lang, config=f"--psm {LINE}", timeout=timeout_s))
