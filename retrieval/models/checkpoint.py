"""Write a model folder that `resolve_model(folder)` loads: manifest + one safetensors per tower.

The folder is written beside its destination and swapped in with `os.replace`, so a crash never
leaves a half-written model where a good one was.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from indexer.media.preprocess import PreprocessConfig
from retrieval.models.registry import MANIFEST_FORMAT, MANIFEST_NAME

WEIGHT_FILES = {"image": "image.safetensors", "text": "text.safetensors"}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _contiguous(state: dict, dtype=None) -> dict:
    out = {}
    for key, value in state.items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous()
    return out


def save_model_folder(
    folder: Path,
    *,
    model_cfg: dict,
    preprocess: PreprocessConfig,
    image_state: dict,
    text_state: dict,
    text_weights: str = "full",
    logit_scale: float | None = None,
    extra: dict | None = None,
    dtype=None,
) -> Path:
    """Write the model folder atomically and return its path.

    text_weights="delta" means text_state holds only the trained part of a text tower whose
    base weights come from the pretrained model its config names (a frozen packaged tower).
    `dtype` (e.g. torch.float16) stores floating weights smaller; they load back as float32.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    save_file(_contiguous(image_state, dtype), str(staging / WEIGHT_FILES["image"]))
    save_file(_contiguous(text_state, dtype), str(staging / WEIGHT_FILES["text"]))
    digest = hashlib.sha256()
    for which in ("image", "text"):
        digest.update(_file_sha256(staging / WEIGHT_FILES[which]).encode())
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "model_cfg": model_cfg,
        "preprocess": preprocess.to_dict(),
        "weights": dict(WEIGHT_FILES),
        "text_weights": text_weights,
        "logit_scale": logit_scale,
        "fingerprint": digest.hexdigest(),
        "saved_at": time.time(),
        **(extra or {}),
    }
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if folder.exists():
        retired = folder.parent / f".{folder.name}.old-{os.getpid()}"
        os.replace(folder, retired)
        os.replace(staging, folder)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, folder)
    return folder
