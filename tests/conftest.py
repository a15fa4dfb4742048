"""Shared fixtures: a tiny random-weight model config, generated images, a database folder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 6, "width": 256, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 6},
    "seed": 0,
}


@pytest.fixture(scope="session")
def tiny_model_config(tmp_path_factory) -> Path:
    """A JSON architecture config: random weights, seeded, 64-d embeddings."""
    path = tmp_path_factory.mktemp("models") / "tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_model_config):
    from retrieval.encoders import load_model

    return load_model(str(tiny_model_config), device="cpu")


def write_image(path: Path, seed: int, size=(96, 72), fmt=None) -> Path:
    """A reproducible noisy colour image; different seeds give different pictures."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    pixels = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path
