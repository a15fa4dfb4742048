"""The model factory: lazy towers, tower-only loading equal to open_clip's whole model."""
import json

import numpy as np
import pytest
import torch

from conftest import TINY_CONFIG
from retrieval.errors import ModelNotFoundError, QueryError
from retrieval.models.encoders import load_model
from retrieval.models.registry import resolve_model


def test_text_query_builds_no_image_tower(tiny_model_config):
    model = load_model(str(tiny_model_config), device="cpu")
    vectors = model.text.embed_texts(["a dog", "a cat"])
    assert vectors.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert model.text_built and not model.image_built


def test_random_config_is_deterministic_across_loads(tiny_model_config):
    first = load_model(str(tiny_model_config), device="cpu").text.embed_texts(["same words"])
    second = load_model(str(tiny_model_config), device="cpu").text.embed_texts(["same words"])
    np.testing.assert_array_equal(first, second)


def test_open_clip_checkpoint_towers_match_whole_model(tmp_path):
    """ARCH:checkpoint loads each tower alone; embeddings equal open_clip's full CLIP model."""
    import open_clip

    config = {k: v for k, v in TINY_CONFIG.items() if k != "seed"}
    (tmp_path / "tiny-test-arch.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tiny-test-arch.json")
    torch.manual_seed(3)
    full = open_clip.create_model("tiny-test-arch").eval()
    checkpoint = tmp_path / "tiny.pt"
    torch.save(full.state_dict(), checkpoint)

    model = load_model(f"tiny-test-arch:{checkpoint}", device="cpu")
    tokens = open_clip.get_tokenizer("tiny-test-arch")(["a red circle", "two dogs"])
    with torch.no_grad():
        expected_text = torch.nn.functional.normalize(full.encode_text(tokens), dim=-1).numpy()
        pixels = torch.randn(2, 3, 64, 64)
        expected_image = torch.nn.functional.normalize(full.encode_image(pixels), dim=-1).numpy()
    np.testing.assert_allclose(model.text.embed_texts(["a red circle", "two dogs"]), expected_text, atol=1e-5)
    np.testing.assert_allclose(model.image.embed_pixels(pixels.numpy()), expected_image, atol=1e-5)


def test_checkpoint_folder_round_trip(tmp_path, tiny_model):
    from retrieval.models.checkpoint import save_model_folder

    folder = save_model_folder(
        tmp_path / "saved", model_cfg=tiny_model.card.model_cfg, preprocess=tiny_model.preprocess,
        image_state=tiny_model.image.tower.state_dict(), text_state=tiny_model.text.tower.state_dict(),
    )
    loaded = load_model(str(folder), device="cpu")
    texts = ["one", "two words"]
    np.testing.assert_allclose(loaded.text.embed_texts(texts), tiny_model.text.embed_texts(texts), atol=1e-6)
    pixels = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(loaded.image.embed_pixels(pixels), tiny_model.image.embed_pixels(pixels), atol=1e-6)
    assert loaded.info.fingerprint != tiny_model.info.fingerprint


@pytest.mark.parametrize("name, message", [
    ("", "no model"),
    ("nonsense", "unknown model"),
    ("/no/such/config.json", "does not exist"),
    ("ViT-B-32:", "ARCH:TAG"),
])
def test_bad_model_names(name, message):
    with pytest.raises(ModelNotFoundError, match=message):
        resolve_model(name)


def test_unknown_open_clip_tag_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="no weights"):
        load_model("ViT-B-32:no_such_tag")


def test_empty_text_is_refused(tiny_model):
    with pytest.raises(QueryError):
        tiny_model.text.embed_texts(["  "])


def test_auto_device_on_a_machine_without_gpu_files_skips_torch(monkeypatch):
    from retrieval.models import encoders

    monkeypatch.setattr(encoders, "GPU_DEVICE_FILES", ("/nonexistent/gpu",))
    monkeypatch.setattr(encoders.sys, "platform", "linux")
    assert encoders.gpu_possible() is False
    assert encoders.pick_device("auto") == "cpu"
    assert encoders.pick_device("cuda:1") == "cuda:1"
