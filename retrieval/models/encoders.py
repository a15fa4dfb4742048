"""Encoders: one per modality, built lazily, each returning L2-normalised float32 vectors.

`load_model(name)` is the one factory: it returns a `Model` that carries the preprocessing, a
lazily built image encoder, a lazily built text encoder and its tokenizer. Asking for
`model.text` never builds the image tower, and the other way round.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.errors import MmsearchError
from indexer.media.preprocess import PreprocessConfig, to_model_input
from indexer.store.records import ModelInfo
from retrieval.errors import QueryError
from retrieval.models.registry import ModelCard, ModelSpec, describe_model, resolve_model

log = logging.getLogger(__name__)


# a Linux machine without these has no GPU torch could use as "cuda" (NVIDIA, NVIDIA under WSL2, ROCm)
GPU_DEVICE_FILES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def gpu_possible() -> bool:
    """False when this machine certainly has no CUDA/ROCm GPU, found without importing torch (2 s)."""
    if sys.platform.startswith("linux"):
        return any(os.path.exists(path) for path in GPU_DEVICE_FILES)
    return True


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        if not gpu_possible():
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class DeviceError(MmsearchError):
    """A device was asked for that this machine does not have."""


def cuda_usable() -> bool:
    if not gpu_possible():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_device(device: str, *, fallback: bool = False) -> tuple[str, str | None]:
    """(the device to use, a note for the person): `auto` picks CUDA when usable; `cuda...` on a
    machine without a usable CUDA GPU is a DeviceError, or with `fallback` the CPU and a note."""
    if device == "auto":
        return pick_device(device), None
    if str(device).startswith("cuda") and not cuda_usable():
        if fallback:
            return "cpu", f"--device {device}: no CUDA GPU is usable on this machine; using the CPU"
        raise DeviceError(f"--device {device}: no CUDA GPU is usable on this machine (no NVIDIA driver or device, "
                          f"or a CPU-only torch); use --device cpu or auto")
    if device not in ("cpu",) and not str(device).startswith(("cuda", "mps", "xpu")):
        raise DeviceError(f"--device {device!r}: give auto, cpu, cuda or cuda:N")
    return device, None


def _cuda_dtype():
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: str):
    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=_cuda_dtype())
    return contextlib.nullcontext()


def _normalise(features) -> np.ndarray:
    import torch

    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy().astype(np.float32, copy=False)


class ImageEncoder:
    """Image tower: normalised pixel arrays (B, 3, S, S) -> unit vectors (B, dim)."""

    def __init__(self, tower, preprocess: PreprocessConfig, device: str):
        self.tower = tower.to(device)
        if device.startswith("cuda"):
            # inference in bf16 (fp16 without bf16): the weights cast once, not by autocast on every call
            self.tower = self.tower.to(_cuda_dtype())
        self.preprocess = preprocess
        self.device = device

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        if self.device.startswith("cuda"):
            batch = batch.pin_memory()
        return self.embed_tensor(batch)

    def embed_tensor(self, batch) -> np.ndarray:
        """A normalised (B, 3, S, S) float torch tensor (on this encoder's device, or pinned) -> unit vectors."""
        import torch

        with torch.inference_mode():
            if self.device.startswith("cuda"):
                return _normalise(self.tower(batch.to(self.device, _cuda_dtype(), non_blocking=True)))
            return _normalise(self.tower(batch))

    def embed_images(self, images: Sequence) -> np.ndarray:
        """PIL images -> unit vectors."""
        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        return self.embed_pixels(np.stack([to_model_input(image, self.preprocess) for image in images]))


class TextEncoder:
    """Text tower plus its tokenizer: strings -> unit vectors (B, dim)."""

    def __init__(self, tower, tokenizer, device: str, batch_size: int = 256):
        self.tower = tower.to(device)
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size

    @cached_property
    def trimmed(self):
        """(module, pad id) running the tower on trimmed tokens, or None when trimming would change vectors."""
        from retrieval.models.trimmed_text import pad_id, trimmable_tower

        module = trimmable_tower(self.tower)
        return None if module is None else (module, pad_id(self.tower))

    def unknown_share(self, text: str) -> float | None:
        """The share of `text`'s tokens the vocabulary does not know (None: CLIP's byte-level BPE,
        which knows every character)."""
        hf = getattr(self.tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers one
        if hf is None or getattr(hf, "unk_token_id", None) is None:
            return None
        ids = hf(text, add_special_tokens=False)["input_ids"]
        return sum(token == hf.unk_token_id for token in ids) / len(ids) if ids else None

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        from retrieval.models.token_length import needed_length

        if any(not text.strip() for text in texts):
            raise QueryError("empty text query")
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start:start + self.batch_size]))
            tower = self.tower
            if self.trimmed is not None:  # only the real tokens, same vectors: see retrieval.models.trimmed_text
                tower, pad = self.trimmed
                tokens = tokens[:, :needed_length(tokens, pad)]
            with torch.inference_mode(), _autocast(self.device):
                chunks.append(_normalise(tower(tokens.to(self.device))))
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


@dataclass(frozen=True)
class ModelSettings:
    """How a model's towers run, fixed when the model is made (never changed afterwards)."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    image_precision: str = "fp32"  # the CPU image tower's variant: retrieval.models.fast_image.PRECISIONS
    image_export_dir: Path | None = None  # where its ONNX export is kept (an index's image_encoder/)


class Model:
    """A model's towers, built on first use, as `settings` say."""

    def __init__(self, card: ModelCard, settings: ModelSettings = ModelSettings()):
        self.card = card
        self.settings = settings
        self.on_image_step = None  # hears each step of a one-time image export (retrieval.models.fast_image)

    @property
    def requested_device(self) -> str:
        return self.settings.device

    @cached_property
    def device(self) -> str:
        """Resolved on first use: importing torch costs seconds, and a run with nothing to embed needs none."""
        return pick_device(self.settings.device)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.card.spec.name, self.card.weights, self.card.dim, self.card.fingerprint)

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.card.preprocess

    @property
    def image_precision(self) -> str:
        """The precision the image tower runs at: the setting on a CPU, the plain tower on a GPU."""
        return self.settings.image_precision if self.device == "cpu" else "fp32"

    @cached_property
    def image(self) -> ImageEncoder:
        log.info("building image tower of %s on %s", self.card.spec.name, self.device)
        if self.image_precision != "fp32":
            from retrieval.models.fast_image import build_image_encoder  # no torch import when its ONNX export is current

            return build_image_encoder(self, self.image_precision, self.settings.image_export_dir,
                                       on_step=self.on_image_step)
        from retrieval.models.towers import IMAGE, load_tower  # imports torch (seconds)

        return ImageEncoder(load_tower(self.card, IMAGE), self.card.preprocess, self.device)

    @cached_property
    def text(self) -> TextEncoder:
        from retrieval.models.towers import TEXT, build_tokenizer, load_tower

        log.info("building text tower of %s on %s", self.card.spec.name, self.device)
        return TextEncoder(load_tower(self.card, TEXT), build_tokenizer(self.card), self.device)

    @property
    def image_built(self) -> bool:
        return "image" in self.__dict__

    @property
    def image_precision_ran(self) -> str:
        """What the built image tower runs at (fp32 ONNX where the int8 graph failed its check, a torch
        tower after a fallback); before it is built, the precision asked for."""
        return getattr(self.image, "precision", "fp32") if self.image_built else self.image_precision

    @property
    def text_built(self) -> bool:
        return "text" in self.__dict__


def load_model(name: str | ModelSpec, device: str = "auto", *, image_precision: str = "fp32",
               image_export_dir: Path | None = None) -> Model:
    """The factory: resolve a name, read its card, return a Model whose towers build on demand."""
    from retrieval.models.fast_image import check_precision

    spec = name if isinstance(name, ModelSpec) else resolve_model(name)
    settings = ModelSettings(device=device, image_precision=check_precision(image_precision),
                             image_export_dir=Path(image_export_dir) if image_export_dir is not None else None)
    return Model(describe_model(spec), settings)
