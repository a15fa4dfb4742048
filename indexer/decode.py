"""Decode one media file into model input: EXIF orientation, draft mode, a pixel budget.

Pure apart from reading the file; raises DecodeError with a reason a person can act on.
"""
from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from retrieval.errors import DecodeError
from retrieval.preprocess import PreprocessConfig, to_model_input

log = logging.getLogger(__name__)

DEFAULT_MAX_MEGAPIXELS = 100.0
DRAFT_OVERSAMPLE = 2  # draft-decode JPEGs to at least twice the model's input size
_heif_registered = False


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


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


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
    _register_heif()
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DecodeError(f"cannot read image header: {exc}") from None
    image_format = image.format
    width, height = image.size
    if width <= 0 or height <= 0:
        raise DecodeError(f"image has no pixels ({width}x{height})")
    megapixels = width * height / 1e6
    if megapixels > options.max_megapixels:
        raise DecodeError(f"image is {megapixels:.0f} megapixels, over the {options.max_megapixels:g} MP limit")
    try:
        orientation = image.getexif().get(0x0112, 1)
        if getattr(image, "is_animated", False):
            image.seek(0)
        if options.draft and image_format == "JPEG":
            scale = min(width, height) / (target_size * DRAFT_OVERSAMPLE)
            if scale >= 2:
                image.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as exc:
        raise DecodeError(f"cannot decode image: {exc}") from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return image, image_format, (width, height)


def decode_image(data: bytes, preprocess: PreprocessConfig, options: DecodeOptions = DecodeOptions()) -> Decoded:
    """Bytes of an image file -> model-ready pixels plus its displayed size and format."""
    image, image_format, (width, height) = open_image(data, options, preprocess.image_size)
    try:
        pixels = to_model_input(image, preprocess)
    except (OSError, ValueError) as exc:
        raise DecodeError(f"cannot convert image: {exc}") from None
    return Decoded(pixels=pixels, width=width, height=height, format=image_format)


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
    if not data:
        raise DecodeError("empty file (0 bytes)")
    return data
