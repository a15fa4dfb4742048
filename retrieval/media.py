"""What a model reads and embeds in an index run: its readers and encoders (indexer.media.kinds).

One function per modality turns a loaded model into its reader and encoder; `media_for` joins the
ones the model has towers for. A new modality adds a function here and a reader module in
indexer.media; the pipeline stays as it is. Sounds come from an audio model of their own
(retrieval.models.audio), chosen per index by `choose_audio_model`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cache

from indexer.errors import MmsearchError
from indexer.media.audio_reader import AUDIO, AudioEncoder, AudioReader
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
    screen_text: bool = False  # the text test on each decoded picture (the run reads words: --ocr auto|on)
    # (folder, keyframes | dense): the video frames each indexed folder asked for (--video-frames,
    # remembered per folder); a video under none of them is read with video_options.frames
    video_frames_by_root: tuple[tuple[str, str], ...] = ()


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
                                                            assist_megapixels=options.assist_megapixels,
                                                            screen_text=options.screen_text))
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


def video_reader(model, options: MediaOptions, soundtrack: AudioReader | None = None):
    """Videos' frames go to the image tower (indexer.media.video_reader), where PyAV is installed;
    their soundtracks to the audio tower, through `soundtrack` (the run's audio reader), when given."""
    from indexer.media import video_reader

    if not options.video or not video_reader.available():
        return None
    return video_reader.VideoReader(model.preprocess, options.video_options, options.video_frames_by_root,
                                    soundtrack=soundtrack)


def audio_media(audio_model) -> tuple[AudioReader, AudioEncoder]:
    """Sound files cut into the audio model's windows, each embedded by its audio tower."""
    reader = AudioReader(audio_model.windowing, audio_model.features)
    encoder = AudioEncoder(audio_model.info, audio_model.embed_windows, warm=lambda: audio_model.embed_windows)
    return reader, encoder


NO_AUDIO = ("none", "off", "no")
DEFAULT_AUDIO_MODEL = "bundled"  # offline, aligned to the bundled text space (held-out R@10 0.664, docs/BENCHMARKS.md)
AUDIO_CHOICE_KEY = "audio_model_choice"  # an index's remembered "none": sounds stay out of it


def choose_audio_model(library, explicit: str | None = None, configured: str | None = None) -> str | None:
    """The audio model of an index run: --audio-model (or MMSEARCH_AUDIO_MODEL), else the one the
    index records (or its remembered "none"), else the config file's, else the bundled tower. None:
    sounds are left out ("none", "off", "no"). An explicit choice is remembered by the index
    (`remember_audio_choice`), so `--audio-model none` once keeps sounds out of later runs too."""
    recorded = library.model(AUDIO) if library is not None else None
    remembered = library.get_info(AUDIO_CHOICE_KEY) if library is not None else None
    for name in (explicit, recorded.name if recorded else None, remembered, configured, DEFAULT_AUDIO_MODEL):
        if name:
            return None if name.lower() in NO_AUDIO else name
    return None


def remember_audio_choice(library, explicit: str | None) -> None:
    """Keep an explicit --audio-model of this run ("none" included) for the index's later runs."""
    if explicit and library.get_info(AUDIO_CHOICE_KEY) != explicit.lower():
        library.set_info(AUDIO_CHOICE_KEY, explicit.lower() if explicit.lower() in NO_AUDIO else explicit)


def open_audio_model(name: str | None, model=None, device: str = "cpu"):
    """The audio model called `name` (None: none); the bundled one borrows `model`'s text tower when
    `model` is the bundled model."""
    if name is None:
        return None
    from retrieval.models.audio import load_audio_model
    from retrieval.models.registry import BUNDLED_NAME

    lend = model if model is not None and getattr(model, "info", None) is not None and model.info.name == BUNDLED_NAME else None
    return load_audio_model(name, device=device, text_model=lend)


def media_for(model, options: MediaOptions = MediaOptions(), audio=None) -> Media:
    """The readers and encoders of `model`'s towers (pictures, and video frames through the image
    tower), and of `audio` (an audio model) when given."""
    reader, encoder = image_media(model, options)
    readers, encoders = [reader], {IMAGE: encoder}
    audio_reader = None
    if audio is not None:
        audio_reader, encoders[AUDIO] = audio_media(audio)
    videos = video_reader(model, options, soundtrack=audio_reader)
    if videos is not None:
        readers.append(videos)
    if audio_reader is not None:
        readers.append(audio_reader)
    return Media(readers=tuple(readers), encoders=encoders)


def index_audio_model(db) -> str | None:
    """The audio model recorded by the index at `db` (None without `db` or without sounds): for
    commands that embed sounds outside an index run (eval)."""
    if db is None:
        return None
    from indexer.store.library import Library

    with Library(db, create=False, read_only=True) as library:
        info = library.model(AUDIO)
    return info.name if info is not None else None
