"""Decode one image file's bytes into model input: EXIF orientation, draft mode, a pixel budget.

Pure; raises DecodeError with a reason a person can act on. Hostile input costs that file only:
a header claiming more pixels than the budget is refused before any pixel is decoded, truncated or
garbage data and broken EXIF are reported, 16-bit images are scaled (not clipped) to 8 bits, and
animations give their first frame. Reading files safely: indexer.media.files; the time budget
lives in the pipeline.
"""
from __future__ import annotations

import functools
import io
import logging
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from indexer.errors import DecodeError
from indexer.media.preprocess import PreprocessConfig, to_model_input

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_MAX_MEGAPIXELS = 100.0
DRAFT_OVERSAMPLE = 2  # draft-decode JPEGs to at least twice the model's input size
EXIF_IFD = 0x8769
EXIF_ORIENTATION = 0x0112
EXIF_DATETIME = 0x0132
EXIF_DATETIME_ORIGINAL = 0x9003
EXIF_OFFSET_TIME_ORIGINAL = 0x9011
_heif_registered = False

# Our own --max-megapixels budget decides, and broken EXIF only costs the rotation: Pillow's warnings
# about either would print Python warning lines in the middle of a run. Set without importing Pillow
# (a text search never needs it); _pil() adds the filter by class when Pillow is first used.
warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
warnings.filterwarnings("ignore", message=r"(Possibly )?[Cc]orrupt EXIF", category=UserWarning)


@functools.cache
def _pil():
    """PIL.Image, imported on the first decode rather than with this module."""
    from PIL import Image

    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    return Image


@dataclass(frozen=True)
class DecodeOptions:
    draft: bool = True
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # (3, S, S) float32, normalised for the model
    width: int
    height: int
    format: str | None
    taken_at: float | None = None  # EXIF DateTimeOriginal as unix seconds (local time unless tagged)
    text_screen: object | None = None  # with screen_text: indexer.media.text_gate.TextScreen (None: it failed)


def _register_heif() -> None:
    global _heif_registered
    if _heif_registered:
        return
    _heif_registered = True
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


def open_image(data: bytes, options: DecodeOptions, target_size: int) -> tuple[Image.Image, str | None, tuple[int, int]]:
    """Bytes -> (oriented PIL image at full or draft resolution, format, displayed full size)."""
    image, image_format, size, _ = _open_oriented(data, options, target_size)
    return image, image_format, size


def open_header(data: bytes, options: DecodeOptions):
    """Bytes -> a PIL image whose header is read and whose size is within the pixel budget (no pixels decoded)."""
    Image = _pil()
    from PIL import UnidentifiedImageError

    _register_heif()
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:  # Pillow's own guard, at twice its default limit
        raise DecodeError(f"image header claims too many pixels ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DecodeError(f"cannot read image header: {exc}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise DecodeError(f"image has no pixels ({width}x{height})")
    megapixels = width * height / 1e6
    if megapixels > options.max_megapixels:
        raise DecodeError(f"image is {megapixels:.0f} megapixels, over the {options.max_megapixels:g} MP limit")
    return image


def _open_oriented(data: bytes, options: DecodeOptions, target_size: int, long_side: int = 0):
    """... decoded at least `target_size` * DRAFT_OVERSAMPLE on its short side and, with
    `long_side`, at least that long (the text test's size) on its long side."""
    Image = _pil()
    from PIL import ImageOps

    image = open_header(data, options)
    image_format = image.format
    width, height = image.size
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)
        if options.draft and image_format == "JPEG":
            scale = min(width, height) / (target_size * DRAFT_OVERSAMPLE)
            if long_side:
                scale = min(scale, max(width, height) / long_side)
            if scale >= 2:
                image.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as exc:
        raise DecodeError(f"cannot decode image: {exc}") from None
    exif = _read_exif(image)  # after load(): a PNG may carry its eXIf chunk after the pixels
    orientation = exif.get(EXIF_ORIENTATION, 1) if exif is not None else 1
    if orientation in range(2, 9):
        try:
            image = ImageOps.exif_transpose(image)
        except Exception as exc:  # noqa: BLE001 - a broken EXIF block costs the rotation, not the image
            log.info("cannot apply EXIF orientation %r: %s", orientation, exc)
            orientation = 1
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return image, image_format, (width, height), _taken_at(exif)


def _read_exif(image: Image.Image):
    try:
        return image.getexif()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on malformed EXIF
        log.info("ignoring unreadable EXIF data: %s", exc)
        return None


def _taken_at(exif) -> float | None:
    """EXIF DateTimeOriginal (else DateTime) as unix seconds; its offset tag when present, else local time."""
    if exif is None:
        return None
    try:
        sub = exif.get_ifd(EXIF_IFD)
        raw = sub.get(EXIF_DATETIME_ORIGINAL) or exif.get(EXIF_DATETIME)
        offset = sub.get(EXIF_OFFSET_TIME_ORIGINAL)
    except Exception:  # noqa: BLE001 - malformed EXIF: no date
        return None
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
        if isinstance(offset, str) and offset.strip("\x00 "):
            moment = datetime.fromisoformat(moment.isoformat() + offset.strip("\x00 "))
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale scaled to 8 bits (Pillow's convert() would clip them to white)."""
    if image.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return image
    Image = _pil()
    array = np.asarray(image)
    if image.mode == "F":
        peak = float(np.nanmax(array)) if array.size else 0.0
        array = np.nan_to_num(array) * (255.0 if peak <= 1.0 else 1.0)
    elif array.size and int(array.max()) > 255:
        array = array.astype(np.float64) / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")


def decode_image(data: bytes, preprocess: PreprocessConfig, options: DecodeOptions = DecodeOptions(), *,
                 screen_text: bool = False) -> Decoded:
    """Bytes of an image file -> model-ready pixels plus its displayed size, format and capture time.

    With `screen_text`, the text test (indexer.media.text_gate) also looks at the decoded pixels
    (a JPEG is then decoded at least GATE_SIDE long): the words pass needs no second read and
    decode, and skips the pictures it finds no text in. The test failing costs only its answer."""
    from indexer.media.text_gate import GATE_SIDE, screen_image

    image, image_format, (width, height), taken_at = _open_oriented(data, options, preprocess.image_size,
                                                                    GATE_SIDE if screen_text else 0)
    screen = None
    try:
        image = to_8bit(image)
        if screen_text:
            try:
                screen = screen_image(image)
            except Exception:  # the words pass tests the picture itself; never the vector
                log.exception("the text test failed on a picture")
        pixels = to_model_input(image, preprocess)
    except (OSError, ValueError) as exc:
        raise DecodeError(f"cannot convert image: {exc}") from None
    return Decoded(pixels=pixels, width=width, height=height, format=image_format, taken_at=taken_at,
                   text_screen=screen)
