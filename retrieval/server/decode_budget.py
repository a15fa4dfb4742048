"""How much memory decoding an uploaded image will take, read from its header before any pixel is decoded.

The figures are the peak bytes per decoded pixel of `indexer.media.image.decode_image` (Pillow's
decode, 16-bit scaling, RGB conversion, resizing), measured on Pillow 13 at 3000x3000 and
6000x6000 and rounded up: 8-bit RGB 4.1, greyscale/palette 5.1, CMYK 8.4, with alpha 13.0, 32-bit
integer 13.3, float 17.3, 16-bit 19.0, WebP 16.3 (21.3 with alpha). A JPEG decodes at its draft size
(1/2 to 1/8 of each side), as decode_image asks for it. Unknown modes and formats count 24 bytes.
"""
from __future__ import annotations

from indexer.errors import DecodeError
from indexer.media.image import DRAFT_OVERSAMPLE, DecodeOptions, open_header
from retrieval.server.errors import UploadTooLargeError

MODE_BYTES = {"1": 6, "L": 6, "P": 6, "RGB": 5, "YCbCr": 5, "LAB": 5, "HSV": 5, "CMYK": 9,
              "LA": 14, "La": 14, "PA": 14, "RGBA": 14, "RGBa": 14, "RGBX": 14, "I": 14, "F": 18,
              "I;16": 20, "I;16L": 20, "I;16B": 20, "I;16N": 20}
FORMAT_BYTES = {"WEBP": 22, "HEIF": 24, "AVIF": 24}  # their decoders allocate more than the mode says
UNKNOWN_BYTES = 24


def decode_bytes(data: bytes, target_size: int, options: DecodeOptions = DecodeOptions()) -> tuple[int, str]:
    """(estimated peak bytes to decode `data` for a model of input size `target_size`, "WxH MODE")."""
    image = open_header(data, options)  # DecodeError for garbage or a header over the pixel limit
    try:
        width, height = image.size
        if options.draft and image.format == "JPEG":
            scale = min(width, height) / (target_size * DRAFT_OVERSAMPLE)
            if scale >= 2:  # as decode_image: Pillow then decodes at 1/2, 1/4 or 1/8 scale
                image.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
                width, height = image.size
        per_pixel = FORMAT_BYTES.get(image.format or "", MODE_BYTES.get(image.mode, UNKNOWN_BYTES))
        return width * height * per_pixel, f"{width}x{height} {image.mode}"
    finally:
        image.close()


def check_decode_budget(data: bytes, target_size: int, budget_bytes: int,
                        options: DecodeOptions = DecodeOptions()) -> None:
    """Refuse (UploadTooLargeError) an upload whose decoding would take more than `budget_bytes`."""
    try:
        needed, shape = decode_bytes(data, target_size, options)
    except DecodeError:
        return  # decode_image reports it, in its own words
    if needed > budget_bytes:
        raise UploadTooLargeError(f"decoding this {shape} image would take about {needed / 2**20:.0f} MB; "
                                  f"the limit is {budget_bytes / 2**20:.0f} MB per upload")
