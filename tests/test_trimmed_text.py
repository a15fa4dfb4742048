"""Text towers run on only the tokens a batch uses: the same vectors as at full length, in torch and ONNX.

Real exports in tmp_path from tiny random-weight models: the tests' CLIP-style tower (causal mask,
end-of-text pooling) and a MiniLM-architecture Hugging Face tower (padding masked, mean pooling).
"""
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from conftest import MINILM_CONFIG
from retrieval.models.onnx_text import (
    FULL,
    META_NAME,
    TRIMMED,
    OnnxTextEncoder,
    ensure_exported,
    export_sequence,
    export_text_encoder,
    exported_fingerprint,
    needed_length,
)

# one word, a phrase, punctuation and accents, and one longer than either context (cut as before)
TEXTS = ["cat", "a photo of a small red dog on a sunny beach", "Beach + SUNSET!!", "the café's crème brûlée",
         "word " * 60]


@pytest.fixture(scope="module")
def minilm_model(tmp_path_factory):
    from retrieval.models.encoders import load_model

    path = tmp_path_factory.mktemp("minilm") / "minilm.json"
    path.write_text(json.dumps(MINILM_CONFIG))
    return load_model(str(path), device="cpu")


@pytest.fixture(params=["clip", "hf"])
def model(request, tiny_model, minilm_model):
    return tiny_model if request.param == "clip" else minilm_model


def _pad_id(model) -> int:
    hf = getattr(model.text.tokenizer, "tokenizer", None)
    return int(getattr(hf, "pad_token_id", 0) or 0)


def _torch_full(model, texts) -> np.ndarray:
    """The torch tower on the full-length tokens: what every trimmed path must reproduce."""
    import torch

    with torch.inference_mode():
        features = model.text.tower(model.text.tokenizer(list(texts))).numpy()
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def test_needed_length():
    tokens = np.array([[5, 7, 9, 0, 0, 0], [5, 9, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    assert needed_length(tokens) == 3
    assert needed_length(tokens[1:]) == 2
    assert needed_length(tokens[2:]) == 1  # nothing real: still one column
    assert needed_length(np.array([[1, 4, 1, 1]]), pad_id=1) == 2


def test_torch_tower_trimmed_equals_full_length(model):
    import torch

    from retrieval.models.trimmed_text import trimmable_tower

    tower = model.text.tower
    trimmed = trimmable_tower(tower)
    assert trimmed is not None
    tokens = model.text.tokenizer(TEXTS)
    with torch.inference_mode():
        full = tower(tokens).numpy()
        short = tokens[:2, :needed_length(tokens[:2], _pad_id(model))]
        assert short.shape[1] < tokens.shape[1]
        np.testing.assert_allclose(trimmed(short).numpy(), full[:2], atol=1e-5)  # mixed lengths in one batch
        for row in range(len(TEXTS)):  # each text alone, at its own length
            alone = tokens[row:row + 1, :needed_length(tokens[row:row + 1], _pad_id(model))]
            np.testing.assert_allclose(trimmed(alone).numpy(), full[row:row + 1], atol=1e-5)


def test_torch_text_encoder_trims_and_gives_full_length_vectors(model):
    assert model.text.trimmed is not None
    expected = _torch_full(model, TEXTS)
    np.testing.assert_allclose(model.text.embed_texts(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(model.text.embed_texts(TEXTS[:2]), expected[:2], atol=1e-5)
    np.testing.assert_allclose(model.text.embed_texts(["cat"]), expected[:1], atol=1e-5)


def test_onnx_export_trims_and_matches_torch(tmp_path, model):
    folder = export_text_encoder(model, tmp_path / "text")
    assert export_sequence(folder) == TRIMMED and exported_fingerprint(folder) == model.info.fingerprint
    fast = OnnxTextEncoder(folder, threads=1)
    assert fast.trims
    np.testing.assert_array_equal(fast.tokenize(TEXTS), model.text.tokenizer(TEXTS).numpy())
    assert fast.model_input(["cat"]).shape[1] <= 4  # [sot] cat [eot] / [CLS] cat [SEP], not the context
    assert fast.model_input(TEXTS).shape[1] == fast.context_length  # the over-long text keeps it whole
    expected = _torch_full(model, TEXTS)
    np.testing.assert_allclose(fast.embed_texts(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(fast.embed_texts(TEXTS[:4]), expected[:4], atol=1e-5)  # no long text in the batch
    alone = np.concatenate([fast.embed_texts([text]) for text in TEXTS])
    np.testing.assert_allclose(alone, expected, atol=1e-5)


def test_optimised_trimmed_export_still_takes_any_length(tmp_path, tiny_model):
    from retrieval.models.fast_text import is_optimised, optimise_text_export

    folder = export_text_encoder(tiny_model, tmp_path / "text")
    assert optimise_text_export(folder) and is_optimised(folder)
    fast = OnnxTextEncoder(folder)
    assert fast.trims and export_sequence(folder) == TRIMMED
    np.testing.assert_allclose(np.concatenate([fast.embed_texts([text]) for text in TEXTS]),
                               _torch_full(tiny_model, TEXTS), atol=1e-5)


def test_old_fixed_length_export_still_works_and_is_replaced_when_the_index_is_written(tmp_path, tiny_model):
    folder = export_text_encoder(tiny_model, tmp_path / "text", trim=False)  # what versions before trimming wrote
    assert "sequence" not in json.loads((folder / META_NAME).read_text())
    old = OnnxTextEncoder(folder)
    assert not old.trims and old.model_input(["cat"]).shape[1] == old.context_length
    np.testing.assert_allclose(old.embed_texts(TEXTS), _torch_full(tiny_model, TEXTS), atol=1e-5)
    assert ensure_exported(tiny_model, folder)
    assert export_sequence(folder) == TRIMMED and OnnxTextEncoder(folder).trims
    assert ensure_exported(tiny_model, folder)  # current now: not exported again
    assert export_sequence(folder) == TRIMMED


def test_failed_re_export_keeps_the_old_export(tmp_path, tiny_model, monkeypatch):
    import retrieval.models.onnx_text as onnx_text

    folder = export_text_encoder(tiny_model, tmp_path / "text", trim=False)

    def broken(*args, **kwargs):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(onnx_text, "export_text_encoder", broken)
    assert ensure_exported(tiny_model, folder)
    assert exported_fingerprint(folder) == tiny_model.info.fingerprint and export_sequence(folder) is None
    assert not list(tmp_path.glob("text.tmp-*"))


def test_export_falls_back_to_full_length_when_the_check_fails(tmp_path, tiny_model, monkeypatch):
    import retrieval.models.onnx_text as onnx_text

    monkeypatch.setattr(onnx_text, "CHECK_ATOL", -1.0)  # no trimmed graph can pass
    folder = export_text_encoder(tiny_model, tmp_path / "text")
    assert export_sequence(folder) == FULL
    fast = OnnxTextEncoder(folder)
    assert not fast.trims and fast.model_input(["cat"]).shape[1] == fast.context_length
    np.testing.assert_allclose(fast.embed_texts(TEXTS), _torch_full(tiny_model, TEXTS), atol=1e-5)
    assert ensure_exported(tiny_model, folder)  # a FULL export is current: not redone on every run
    assert export_sequence(folder) == FULL


def test_tower_that_cannot_be_trimmed_is_exported_at_full_length(tmp_path, tiny_model_config):
    from conftest import TINY_CONFIG
    from retrieval.models.encoders import load_model
    from retrieval.models.trimmed_text import trimmable_tower

    config = {**TINY_CONFIG, "text_cfg": {**TINY_CONFIG["text_cfg"], "pool_type": "last"}}  # reads the last pad
    path = tmp_path / "last.json"
    path.write_text(json.dumps(config))
    model = load_model(str(path), device="cpu")
    assert trimmable_tower(model.text.tower) is None and model.text.trimmed is None
    folder = export_text_encoder(model, tmp_path / "text")
    assert export_sequence(folder) == FULL
    np.testing.assert_allclose(OnnxTextEncoder(folder).embed_texts(TEXTS), _torch_full(model, TEXTS), atol=1e-5)


def test_prepack_off_gives_the_same_vectors(tmp_path, tiny_model):
    folder = export_text_encoder(tiny_model, tmp_path / "text")
    packed = OnnxTextEncoder(folder).embed_texts(TEXTS)
    unpacked = OnnxTextEncoder(folder, prepack=False)
    assert unpacked.session.get_session_options().get_session_config_entry("session.disable_prepacking") == "1"
    np.testing.assert_allclose(unpacked.embed_texts(TEXTS), packed, atol=1e-6)


def test_int8_graph_is_kept_when_close_to_torch(tmp_path, tiny_model):
    from retrieval.models.onnx_text import INT8_NAME, MIN_INT8_COSINE

    folder = export_text_encoder(tiny_model, tmp_path / "text", int8=True)
    entry = json.loads((folder / META_NAME).read_text())["int8"]
    assert entry["file"] == INT8_NAME and (folder / INT8_NAME).is_file() and entry["min_cosine"] >= MIN_INT8_COSINE
    fast = OnnxTextEncoder(folder, threads=1, precision="int8")
    assert fast.precision == "int8" and fast.trims
    cosines = (fast.embed_texts(TEXTS) * _torch_full(tiny_model, TEXTS)).sum(axis=1)
    assert cosines.min() >= MIN_INT8_COSINE
    assert OnnxTextEncoder(folder).precision == "fp32"  # fp32 unless asked


def test_int8_graph_is_dropped_when_it_drifts(tmp_path, tiny_model, monkeypatch):
    import retrieval.models.onnx_text as onnx_text

    monkeypatch.setattr(onnx_text, "MIN_INT8_COSINE", 1.01)  # no int8 graph can pass
    folder = export_text_encoder(tiny_model, tmp_path / "text", int8=True)
    entry = json.loads((folder / META_NAME).read_text())["int8"]
    assert entry["file"] is None and entry["min_cosine"] < 1.01 and not (folder / onnx_text.INT8_NAME).exists()
    fast = OnnxTextEncoder(folder, precision="int8")
    assert fast.precision == "fp32"
    np.testing.assert_allclose(fast.embed_texts(TEXTS), _torch_full(tiny_model, TEXTS), atol=1e-5)


def test_ensure_exported_adds_the_int8_graph_when_asked(tmp_path, tiny_model):
    from retrieval.models.onnx_text import INT8_NAME

    folder = export_text_encoder(tiny_model, tmp_path / "text")
    assert ensure_exported(tiny_model, folder) and "int8" not in json.loads((folder / META_NAME).read_text())
    assert ensure_exported(tiny_model, folder, int8=True)
    assert (folder / INT8_NAME).is_file() and export_sequence(folder) == TRIMMED
    written = (folder / META_NAME).stat().st_mtime_ns
    assert ensure_exported(tiny_model, folder, int8=True) and ensure_exported(tiny_model, folder)  # current now
    assert (folder / META_NAME).stat().st_mtime_ns == written
