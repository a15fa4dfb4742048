"""What a model reads and embeds in an index run: its readers and encoders (indexer.media.kinds).

One function per modality turns a loaded model into its reader and encoder; `media_for` joins the
ones the model has towers for. A new modality adds a function here and a reader module in
indexer.media; the pipeline stays as it is.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cache

from indexer.errors import MmsearchError
from indexer.media.image import DecodeOptions
from indexer.media.image_reader import ImageReader, ImageReadOptions, PixelEncoder
from indexer.media.kinds import Media
from indexer.media.video_reader import VideoReadOptions
from indexer.store.records import IMAGE

log = logging.getLogger(__name__)

GPU_DECODE_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class MediaOptions:
    """How files are decoded for the towers (the index command's decoding flags)."""

    decode: DecodeOptions = DecodeOptions()
    gpu_decode: str = "auto"  # auto | on | off: JPEGs decoded on the GPU when the image tower runs on CUDA
    assist_megapixels: float | None = 4.0  # with GPU decoding: see ImageReadOptions
    video: bool = True  # index videos too (their frames; needs PyAV: the `video` extra)
    video_options: VideoReadOptions = field(default_factory=VideoReadOptions)


def check_gpu_decode(mode: str) -> str:
    if mode not in GPU_DECODE_MODES:
        raise MmsearchError(f"--gpu-decode {mode!r}: choose one of {', '.join(GPU_DECODE_MODES)}")
    return mode


def _gpu_jpegs(model, options: MediaOptions) -> bool:
    """True when JPEGs should be decoded on the GPU: the image tower runs on CUDA and `gpu_decode`
    allows it (auto: whenever it can)."""
    if check_gpu_decode(options.gpu_decode) == "off":
        return False
    from indexer.media.gpu_jpeg import gpu_decode_available

    requested = str(model.requested_device)
    device = model.device if requested.startswith(("cuda", "auto")) else requested  # "cpu": no torch import
    if gpu_decode_available(device):
        log.info("JPEGs are decoded on %s (nvJPEG)", device)
        return True
    if options.gpu_decode == "on":
        raise MmsearchError(f"--gpu-decode on needs a CUDA device and torchvision's GPU JPEG decoder "
                            f"(the image tower runs on {device})")
    return False


def image_media(model, options: MediaOptions) -> tuple[ImageReader, PixelEncoder]:
    gpu = _gpu_jpegs(model, options)
    reader = ImageReader(model.preprocess, ImageReadOptions(decode=options.decode, defer_jpeg=gpu,
                                                            assist_megapixels=options.assist_megapixels))
    embed_jpegs = None
    if gpu:
        from indexer.media.gpu_jpeg import GpuJpegEmbedder

        @cache
        def embedder() -> GpuJpegEmbedder:
            return GpuJpegEmbedder(model.image, model.preprocess, options.decode)

        def embed_jpegs(items):
            return embedder().embed(items)
    encoder = PixelEncoder(model.info, lambda pixels: model.image.embed_pixels(pixels), embed_jpegs,
                           warm=lambda: model.image, preprocess=model.preprocess)
    return reader, encoder


def video_reader(model, options: MediaOptions):
    """Videos' frames go to the image tower (indexer.media.video_reader), where PyAV is installed."""
    from indexer.media import video_reader

    if not options.video or not video_reader.available():
        return None
    return video_reader.VideoReader(model.preprocess, options.video_options)


def media_for(model, options: MediaOptions = MediaOptions()) -> Media:
    """The readers and encoders of `model`'s towers: pictures, and video frames through the image tower."""
    reader, encoder = image_media(model, options)
    readers = [reader]
    videos = video_reader(model, options)
    if videos is not None:
        readers.append(videos)
    return Media(readers=tuple(readers), encoders={IMAGE: encoder})
