"""Images as the pipeline sees them: a reader (bytes -> pixels, or a JPEG left for the GPU) and an encoder.

`ImageReader` decodes on the worker threads (indexer.media.image), or, when the image tower runs on
a GPU that decodes JPEGs, reads only a JPEG's header and leaves its pixels to the GPU
(indexer.media.gpu_jpeg). While a full batch of such JPEGs already waits (`busy()`), a worker
decodes the next big one itself, so the CPU and the GPU share a folder of camera photos.
`PixelEncoder` embeds both kinds of payload through the model's image tower.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from indexer.media.gpu_jpeg import DeferredJpeg, is_jpeg, jpeg_header
from indexer.media.image import DecodeOptions, decode_image
from indexer.media.kinds import DecodedItem, Segment
from indexer.media.preprocess import PreprocessConfig, normalise_uint8
from indexer.media.scan import image_extensions
from indexer.store.records import IMAGE, ModelInfo


@dataclass(frozen=True)
class ImageReadOptions:
    decode: DecodeOptions = DecodeOptions()
    defer_jpeg: bool = False  # JPEGs: read the header only, the GPU decodes the pixels
    # with defer_jpeg: JPEGs of at least this many megapixels are decoded here while the GPU has a
    # full batch waiting; None: the GPU decodes every JPEG (nvJPEG caps 12-MP photos at ~570/s on an
    # H200 while its 16 cores sit idle: docs/BENCHMARKS.md)
    assist_megapixels: float | None = 4.0
    screen_text: bool = False  # run the text test on the decoded pixels (the run reads words)


class ImageReader:
    modality = IMAGE
    encoders = (IMAGE,)  # the encoders its segments go to

    def __init__(self, preprocess: PreprocessConfig, options: ImageReadOptions = ImageReadOptions(),
                 extensions: frozenset[str] | None = None):
        self.preprocess = preprocess
        self.options = options
        self.extensions = extensions if extensions is not None else image_extensions()
        self.defers = options.defer_jpeg
        self.streams = False  # a picture is read whole: its bytes are its hash and its decoder's input
        assist = options.assist_megapixels
        self._assist_pixels = None if assist is None else assist * 1e6

    def read(self, data: bytes, busy: Callable[[], bool]) -> DecodedItem:
        options = self.options
        if options.defer_jpeg and is_jpeg(data):
            header = jpeg_header(data, options.decode)
            if header is not None and not (self._assist_pixels is not None
                                           and header.width * header.height >= self._assist_pixels and busy()):
                return DecodedItem([Segment(IMAGE, None, header)], header.width, header.height, header.format,
                                   header.taken_at, deferred=True)
        decoded = decode_image(data, self.preprocess, options.decode, screen_text=options.screen_text)
        return DecodedItem([Segment(IMAGE, None, decoded.pixels)], decoded.width, decoded.height, decoded.format,
                           decoded.taken_at, text_screen=decoded.text_screen)


class PixelEncoder:
    """Image payloads -> unit vectors: arrays through `embed_pixels` (one stacked call; uint8 ones,
    such as video frames, are normalised first with `preprocess`), deferred JPEGs through
    `embed_jpegs` (indexer.media.gpu_jpeg.GpuJpegEmbedder.embed)."""

    def __init__(self, info: ModelInfo, embed_pixels: Callable[[np.ndarray], np.ndarray],
                 embed_jpegs: Callable[[Sequence[DeferredJpeg]], list] | None = None,
                 warm: Callable[[], object] | None = None, preprocess: PreprocessConfig | None = None):
        self.info = info
        self.embed_pixels = embed_pixels
        self.embed_jpegs = embed_jpegs
        self._warm = warm
        self.preprocess = preprocess

    def warm(self) -> None:
        if self._warm is not None:
            self._warm()

    def _float(self, payload: np.ndarray) -> np.ndarray:
        if payload.dtype != np.uint8:
            return payload
        if self.preprocess is None:
            raise ValueError("uint8 pixels need the encoder's preprocessing to be normalised")
        return normalise_uint8(payload[None], self.preprocess)[0]

    def embed(self, payloads: Sequence[object]) -> list[np.ndarray | str]:
        out: list = [None] * len(payloads)
        arrays = [index for index, payload in enumerate(payloads) if not isinstance(payload, DeferredJpeg)]
        if arrays:
            stacked = np.stack([self._float(payloads[index]) for index in arrays])
            vectors = self.embed_pixels(stacked)
            for index, vector in zip(arrays, vectors):
                out[index] = vector
        if len(arrays) < len(payloads):
            if self.embed_jpegs is None:
                raise ValueError("deferred JPEGs (ImageReadOptions.defer_jpeg) need embed_jpegs")
            deferred = [index for index, payload in enumerate(payloads) if isinstance(payload, DeferredJpeg)]
            for index, outcome in zip(deferred, self.embed_jpegs([payloads[index] for index in deferred])):
                out[index] = outcome.vector if outcome.error is None else outcome.error
        return out
