"""JPEGs decoded on the GPU (nvJPEG through torchvision), resized and normalised there, then embedded.

On a CUDA machine, decoding 12-megapixel JPEGs on the CPU is what limits indexing (PIL: tens of
images/s per core even with draft mode), not the model. So when the image tower runs on CUDA, the
decode workers only read, hash and parse each JPEG's header (size, pixel budget, EXIF orientation
and date: no pixels), and this module turns a batch of JPEG bytes into model input on the GPU:
`torchvision.io.decode_jpeg(device="cuda")` (batched nvJPEG), EXIF orientation as flips and
transposes, the same shortest-side resize + centre crop as `indexer.media.preprocess` (bicubic with
antialiasing, which torch implements to match PIL's filter), normalisation, the tower.

Anything nvJPEG refuses (CMYK, arithmetic coding, a truncated file) is decoded on the CPU by
`indexer.media.image.decode_image` and embedded by the same tower: one odd file never costs a batch.

`pixels_from_decoded` is device-agnostic and is tested on the CPU against the PIL path.
"""
from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from indexer.errors import DecodeError
from indexer.media import jpeg_markers
from indexer.media.image import DRAFT_OVERSAMPLE, DecodeOptions, decode_image
from indexer.media.preprocess import PreprocessConfig

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8\xff"
# PIL modes of JPEGs that nvJPEG decodes to RGB; CMYK and friends go through the CPU path
GPU_JPEG_MODES = ("RGB", "L")
GROUP_ELEMENTS = 64 << 20  # float values resized in one call (256 MB of float32)
# decode_jpeg only reads its input: the file's bytes are wrapped, not copied (4 MB per 12-MP photo)
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)


def is_jpeg(data: bytes) -> bool:
    return data[:3] == JPEG_MAGIC


@dataclass(frozen=True)
class DeferredJpeg:
    """A JPEG whose header was read (on a decode worker) and whose pixels the GPU will decode."""

    data: bytes
    width: int  # displayed size, after EXIF orientation
    height: int
    orientation: int = 1
    taken_at: float | None = None
    format: str = "JPEG"


def ends_with_eoi(data: bytes) -> bool:
    """True when the JPEG ends with its EOI marker (padding aside). nvJPEG decodes a truncated file
    without complaint (grey where the data stops), where PIL refuses it: a file without EOI, or
    with data after it (some cameras append a trailer), is left to the CPU decoder."""
    return data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9"


def jpeg_header(data: bytes, options: DecodeOptions) -> DeferredJpeg | None:
    """A JPEG's displayed size, orientation and date from its header alone, for the GPU to decode;
    None when this JPEG should be decoded on the CPU (not baseline RGB/greyscale, say).

    Read by indexer.media.jpeg_markers where it can (6-15x faster than Pillow's header parsing, which held
    the GIL for 27-220 us per photo on the decode threads of a GPU run: `bench_index_overhead.py
    header`), else by Pillow; the same answer either way (tests/test_jpeg_markers.py). Raises
    DecodeError for what the CPU path would refuse too (unreadable header, over the pixel budget).
    """
    facts = jpeg_markers.read_jpeg_facts(data) if marker_reader_matches_pillow() else None
    if facts is None:
        return pillow_jpeg_header(data, options)
    pixels = facts.width * facts.height
    if pixels / 1e6 > options.max_megapixels or pixels > jpeg_markers.PILLOW_MAX_IMAGE_PIXELS:
        return pillow_jpeg_header(data, options)  # Pillow raises or warns as it should
    if not ends_with_eoi(data):
        return None
    width, height = facts.width, facts.height
    if facts.orientation in (5, 6, 7, 8):
        width, height = height, width
    return DeferredJpeg(data, width, height, facts.orientation, facts.taken_at)


@functools.cache
def marker_reader_matches_pillow() -> bool:
    """indexer.media.jpeg_markers copies what Pillow 13 reads from a JPEG header (XMP orientation, joined
    EXIF segments, its DPI checks); older Pillows differ in places, so they read every header."""
    from PIL import __version__

    return int(__version__.split(".")[0]) >= 13


def pillow_jpeg_header(data: bytes, options: DecodeOptions) -> DeferredJpeg | None:
    """jpeg_header through Pillow: every JPEG, however unusual."""
    from indexer.media.image import EXIF_ORIENTATION, _read_exif, _taken_at, open_header

    image = open_header(data, options)  # raises DecodeError as the CPU path would
    if image.format != "JPEG" or image.mode not in GPU_JPEG_MODES or not ends_with_eoi(data):
        return None
    width, height = image.size
    exif = _read_exif(image)
    orientation = exif.get(EXIF_ORIENTATION, 1) if exif is not None else 1
    if orientation not in range(1, 9):
        orientation = 1
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return DeferredJpeg(data, width, height, orientation, _taken_at(exif))


def orient(image, orientation: int):
    """A (C, H, W) tensor turned as EXIF orientation 1-8 says (what PIL's exif_transpose does)."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1).flip(-2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return image.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return image.transpose(-1, -2).flip(-2)
    return image


def resize_batch(images, cfg: PreprocessConfig):
    """(N, 3, H, W) float tensor in 0..255 -> (N, 3, S, S), by the rules of indexer.media.preprocess.resize_for_model."""
    import torch
    import torch.nn.functional as F

    size = cfg.image_size
    mode = cfg.interpolation if cfg.interpolation in ("bicubic", "bilinear") else "nearest"
    aa = mode != "nearest"

    def resize(tensor, new_h: int, new_w: int):
        if (new_h, new_w) == tuple(tensor.shape[-2:]):
            return tensor
        out = F.interpolate(tensor, size=(new_h, new_w), mode=mode, antialias=aa,
                            **({} if mode == "nearest" else {"align_corners": False}))
        return out.clamp_(0, 255)

    height, width = int(images.shape[-2]), int(images.shape[-1])
    if cfg.resize_mode == "squash":
        return resize(images, size, size)
    if cfg.resize_mode == "longest":
        scale = size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = torch.full((len(images), 3, size, size), float(cfg.fill_color), dtype=images.dtype, device=images.device)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        canvas[:, :, top:top + new_h, left:left + new_w] = resize(images, new_h, new_w)
        return canvas
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    images = resize(images, new_h, new_w)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return images[:, :, top:top + size, left:left + size]


def draft_factor(height: int, width: int, target_size: int) -> int:
    """The power-of-two reduction PIL's JPEG draft mode applies before the resize (indexer.media.image):
    1, 2, 4 or 8, keeping at least DRAFT_OVERSAMPLE times the model's input size."""
    scale = min(width, height) / (target_size * DRAFT_OVERSAMPLE)
    factor = 1
    while factor < 8 and factor * 2 <= scale:
        factor *= 2
    return factor


def pixels_from_decoded(images: Sequence, orientations: Sequence[int], cfg: PreprocessConfig, draft: bool = False):
    """Decoded (3, H, W) uint8 tensors -> one normalised float32 (B, 3, S, S) batch on their device.

    `draft`: first average power-of-two blocks as PIL's JPEG draft mode does (DecodeOptions.draft,
    the default): a 12-MP photo is then resized from 1/8 of its pixels, not all of them.
    """
    import torch
    import torch.nn.functional as F

    if not images:
        raise ValueError("no images")
    device = images[0].device
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    oriented = [orient(image.expand(3, -1, -1) if image.shape[0] == 1 else image, orientation)
                for image, orientation in zip(images, orientations)]
    # images of one shape are resized together (one kernel launch instead of one per image: a batch
    # of 256 phone-sized JPEGs was launch-bound), in groups of at most GROUP_ELEMENTS float values,
    # and each group lands in the batch with one indexed copy (not one tensor view per image)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for position, image in enumerate(oriented):
        by_shape.setdefault(tuple(image.shape), []).append(position)
    batch = None
    for shape, positions in by_shape.items():
        per_group = max(1, GROUP_ELEMENTS // (shape[0] * shape[1] * shape[2]))
        for start in range(0, len(positions), per_group):
            group = positions[start:start + per_group]
            stacked = torch.stack([oriented[i] for i in group]).float()
            factor = draft_factor(shape[1], shape[2], cfg.image_size) if draft else 1
            if factor > 1:
                stacked = F.avg_pool2d(stacked, factor, ceil_mode=True)
            resized = resize_batch(stacked, cfg)
            if len(group) == len(oriented):
                batch = resized
            else:
                if batch is None:
                    batch = torch.empty((len(oriented), *resized.shape[1:]), dtype=resized.dtype, device=device)
                batch[torch.tensor(group, device=device)] = resized
    # PIL hands the CPU path 8-bit pixels after its resize: round the same way
    batch = batch.round_().div_(255.0)
    return (batch - mean) / std


def gpu_decode_available(device: str) -> bool:
    """True when `device` is CUDA and this torchvision decodes JPEGs there."""
    if not str(device).startswith("cuda"):
        return False
    try:
        import torch
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@dataclass
class JpegOutcome:
    vector: np.ndarray | None
    error: str | None = None
    cpu_fallback: bool = False


class GpuJpegEmbedder:
    """JPEG bytes -> unit vectors: nvJPEG decode, resize, normalise and the tower, all on `encoder.device`."""

    def __init__(self, encoder, preprocess: PreprocessConfig, options: DecodeOptions = DecodeOptions()):
        self.encoder = encoder  # retrieval.models.encoders.ImageEncoder (torch tower on a CUDA device)
        self.preprocess = preprocess
        self.options = options
        self.fallbacks = 0

    def _decode(self, blobs: list[bytes]) -> list:
        """Decoded tensors (None where nvJPEG refused the file); one batched call when all succeed."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.frombuffer(blob, dtype=torch.uint8) for blob in blobs]
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.encoder.device))
        except RuntimeError as exc:
            log.info("batched GPU JPEG decode failed (%s); decoding one by one", exc)
        out = []
        for tensor in tensors:
            try:
                out.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=self.encoder.device))
            except RuntimeError:
                out.append(None)
        return out

    def embed(self, items: Sequence[DeferredJpeg]) -> list[JpegOutcome]:
        """One outcome per item, in order."""
        import torch

        outcomes: list[JpegOutcome | None] = [None] * len(items)
        decoded = self._decode([item.data for item in items])
        gpu_rows = [i for i, image in enumerate(decoded) if image is not None]
        cpu_pixels, cpu_rows = [], []
        for i, image in enumerate(decoded):
            if image is None:
                self.fallbacks += 1
                try:
                    cpu_pixels.append(decode_image(items[i].data, self.preprocess, self.options).pixels)
                    cpu_rows.append(i)
                except DecodeError as exc:
                    outcomes[i] = JpegOutcome(None, str(exc), cpu_fallback=True)
        parts, rows = [], []
        if gpu_rows:
            parts.append(pixels_from_decoded([decoded[i] for i in gpu_rows], [items[i].orientation for i in gpu_rows],
                                             self.preprocess, draft=self.options.draft))
            rows.extend(gpu_rows)
        if cpu_pixels:
            parts.append(torch.from_numpy(np.stack(cpu_pixels)).to(self.encoder.device))
            rows.extend(cpu_rows)
        if parts:
            vectors = self.encoder.embed_tensor(torch.cat(parts))
            on_cpu = set(cpu_rows)
            for row, vector in zip(rows, vectors):
                outcomes[row] = JpegOutcome(vector, cpu_fallback=row in on_cpu)
        return outcomes  # type: ignore[return-value]
