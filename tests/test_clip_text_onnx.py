"""The CLIP text tower written to ONNX without the tracer (retrieval.models.clip_text_onnx)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.models.clip_text_onnx import clip_text_graph, unsupported

TEXTS = ["a cat", "a photo of a small red dog running on a sunny beach", "x", "word " * 40]


def _run(graph, tokens: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["features"], {"tokens": tokens})[0]


@pytest.mark.parametrize("pool_type", ["argmax", "first"])
def test_the_written_graph_gives_the_torch_towers_vectors_at_every_length(tiny_model, pool_type, monkeypatch):
    tower = tiny_model.text.tower.eval()
    monkeypatch.setattr(tower, "pool_type", pool_type)
    tokens = tiny_model.text.tokenizer(TEXTS)
    with torch.inference_mode():
        expected = tower(tokens).float().numpy()
    graph = clip_text_graph(tower)
    assert np.abs(_run(graph, tokens.numpy()) - expected).max() < 1e-4  # the full context length
    for row, text in enumerate(TEXTS):  # each text cut after its end-of-text token (causal: same vector)
        length = int(tokens[row].argmax()) + 1
        alone = _run(graph, np.ascontiguousarray(tokens[row:row + 1, :length].numpy()))
        assert np.abs(alone[0] - expected[row]).max() < 1e-4, text


def test_other_towers_are_left_to_the_tracer(tiny_model):
    assert unsupported(tiny_model.text.tower.eval()) is None
    assert "TextTransformer" in unsupported(torch.nn.Linear(2, 2))
    assert "training" in unsupported(tiny_model.text.tower.train())
    tiny_model.text.tower.eval()


def test_the_text_export_records_its_writer(tmp_path, tiny_model):
    import json

    from retrieval.models.onnx_text import META_NAME, export_text_encoder

    export_text_encoder(tiny_model, tmp_path / "text")
    meta = json.loads((tmp_path / "text" / META_NAME).read_text())
    assert meta["writer"] == "clip_text_onnx" and meta["sequence"] == "trimmed"


TEXT_BASE = {"context_length": 16, "vocab_size": 300, "width": 32, "heads": 4, "layers": 2}
TEXT_VARIANTS = {
    "plain": {},
    "quick-gelu": {"quick_gelu": True},
    "gelu-tanh": {"act_kwargs": {"approximate": "tanh"}},
    "layer-scale": {"ls_init_value": 0.3},
    "projection-with-bias": {"proj_bias": True},
    "no-projection": {"proj_type": "none"},
    "eos-pool": {"pool_type": "eos", "eos_id": 7},
    "first-pool": {"pool_type": "first"},
    "norm-eps": {"norm_kwargs": {"eps": 1e-6}},
    "narrow-mlp": {"mlp_ratio": 2.0},
}


def _text_cfg(**overrides) -> dict:
    quick_gelu = overrides.pop("quick_gelu", False)
    return {"embed_dim": 24, "quick_gelu": quick_gelu, "text_cfg": {**TEXT_BASE, **overrides}}


@pytest.mark.parametrize("variant", list(TEXT_VARIANTS))
def test_the_recipe_read_from_the_config_writes_what_the_torch_tower_computes(variant):
    from open_clip.model import _build_text_tower

    from retrieval.models.clip_text_onnx import text_graph, text_recipe, text_recipe_from_cfg
    from retrieval.models.vit_onnx import _weights

    cfg = _text_cfg(**TEXT_VARIANTS[variant])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tower = _build_text_tower(cfg["embed_dim"], cfg["text_cfg"], cfg["quick_gelu"], None).eval()
        for parameter in tower.parameters():  # LayerNorms at 1/0 and zero biases would hide mistakes
            parameter.data += 0.05 * torch.randn_like(parameter)
    recipe = text_recipe_from_cfg(cfg)
    assert recipe == text_recipe(tower)
    assert recipe.weight_shapes() == {key: tuple(value.shape) for key, value in tower.state_dict().items()}
    assert np.array_equal(recipe.causal_mask(), tower.attn_mask.numpy())
    rng = np.random.default_rng(1)
    tokens = rng.integers(1, 250, (3, 16))
    tokens[0, 5], tokens[1, 15], tokens[2, 9] = 299, 299, 299  # the end-of-text tokens argmax pooling finds
    tokens[:, 3] = 7  # an eos token for eos pooling
    with torch.inference_mode():
        expected = tower(torch.from_numpy(tokens)).numpy()
    assert np.abs(_run(text_graph(recipe, _weights(tower)), tokens) - expected).max() < 1e-4


@pytest.mark.parametrize("overrides, reason", [
    ({"hf_model_name": "bert-base-uncased"}, "hf_model_name"),
    ({"embed_cls": True}, "embed_cls"),
    ({"no_causal_mask": True}, "no_causal_mask"),
    ({"pool_type": "last"}, "pool_type"),
    ({"tokenizer_kwargs": {"clean": "canonicalize"}}, "tokenizer_kwargs"),
    ({"scale_fc": True}, "scale_fc"),
    ({"width": 30}, "multiple"),
])
def test_text_configs_it_does_not_know_are_refused(overrides, reason):
    from retrieval.models.clip_text_onnx import text_recipe_from_cfg

    with pytest.raises(ValueError, match=reason):
        text_recipe_from_cfg(_text_cfg(**overrides))
