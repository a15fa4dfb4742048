"""The ViT graph writer (retrieval.models.vit_onnx) against the torch tower it writes, per configuration."""
from __future__ import annotations

import numpy as np
import pytest

BASE = {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8}
VARIANTS = {
    "gelu": {},
    "quick-gelu": {"quick_gelu": True},
    "gelu-tanh": {"act_kwargs": {"approximate": "tanh"}},
    "layer-scale": {"ls_init_value": 0.3},
    "avg-pool": {"pool_type": "avg"},
    "avg-pool-ln-after": {"pool_type": "avg", "final_ln_after_pool": True},
    "tok-ln-after": {"final_ln_after_pool": True},
    "no-ln-pre": {"no_ln_pre": True},
    "wide-mlp": {"mlp_ratio": 2.5, "image_size": 48, "patch_size": 16},
}


def _model_cfg(**overrides) -> dict:
    """An open_clip architecture config (only its image side matters here)."""
    quick_gelu = overrides.pop("quick_gelu", False)
    return {"embed_dim": 24, "quick_gelu": quick_gelu, "vision_cfg": {**BASE, **overrides}}


def _tower(seed: int = 0, **overrides):
    import torch
    from open_clip.model import _build_vision_tower

    cfg = _model_cfg(**overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tower = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], cfg["quick_gelu"], None).eval()
        for parameter in tower.parameters():  # init leaves LayerNorm at 1/0 and biases at 0: make them matter
            parameter.data += 0.05 * torch.randn_like(parameter)
    return tower


def _run(graph, pixels: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["features"], {"pixels": pixels})[0]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_written_graph_computes_what_the_torch_tower_does(variant):
    import torch

    from retrieval.models.vit_onnx import _weights, tower_graph, unsupported, vit_graph, vit_recipe, vit_recipe_from_cfg

    tower = _tower(**VARIANTS[variant])
    assert unsupported(tower) is None
    size = int(tower.image_size[0])
    pixels = np.random.default_rng(1).normal(0, 1, (3, 3, size, size)).astype(np.float32)
    with torch.inference_mode():
        expected = tower(torch.from_numpy(pixels)).numpy()
    # the recipe read from the config alone (no torch tower: a first run's path) is the built tower's
    recipe = vit_recipe_from_cfg(_model_cfg(**VARIANTS[variant]))
    assert recipe == vit_recipe(tower)
    assert recipe.weight_shapes() == {key: tuple(value.shape) for key, value in tower.state_dict().items()}
    for graph in (tower_graph(tower), vit_graph(recipe, _weights(tower))):
        np.testing.assert_allclose(_run(graph, pixels), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(_run(graph, pixels[:1]), expected[:1], rtol=1e-4, atol=1e-5)  # any batch size


def test_towers_it_does_not_know_are_left_to_the_tracer():
    import torch
    from open_clip.model import _build_vision_tower

    from retrieval.models.vit_onnx import tower_graph, unsupported

    resnet = _build_vision_tower(24, {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16}, False, None).eval()
    assert "ModifiedResNet" in unsupported(resnet)
    pooled = _build_vision_tower(24, {**BASE, "attentional_pool": True, "attn_pooler_heads": 2,
                                      "attn_pooler_queries": 4}, False, None).eval()
    assert "attentional pooling" in unsupported(pooled)
    with pytest.raises(ValueError, match="not a plain ViT"):
        tower_graph(pooled)
    training = _tower().train()
    assert "training" in unsupported(training)
    assert unsupported(torch.nn.Linear(2, 2)) is not None


@pytest.mark.parametrize("overrides, reason", [
    ({"layers": [1, 1, 1, 1]}, "ResNet"),
    ({"attentional_pool": True}, "attentional_pool"),
    ({"timm_model_name": "vit_base_patch16_224"}, "timm_model_name"),
    ({"qk_norm": True}, "qk_norm"),
    ({"block_type": "custom"}, "block_type"),
    ({"pool_type": "none"}, "pool_type"),
    ({"norm_kwargs": {"elementwise_affine": False}}, "norm_kwargs"),
    ({"act_kwargs": {"approximate": "sigmoid"}}, "act_kwargs"),
    ({"a_field_from_a_later_open_clip": 1}, "does not know"),
    ({"width": 60}, "multiple of head_width"),
])
def test_configs_it_does_not_know_are_refused_before_any_weight_is_read(overrides, reason):
    from retrieval.models.vit_onnx import vit_recipe_from_cfg

    with pytest.raises(ValueError, match=reason):
        vit_recipe_from_cfg(_model_cfg(**overrides))


def test_weights_that_do_not_fit_the_recipe_are_refused():
    from retrieval.models.vit_onnx import _weights, vit_graph, vit_recipe_from_cfg

    weights = _weights(_tower())
    recipe = vit_recipe_from_cfg(_model_cfg(layers=3))  # one block more than the weights hold
    with pytest.raises(ValueError, match="missing"):
        vit_graph(recipe, weights)
    with pytest.raises(ValueError, match="unexpected"):
        vit_graph(vit_recipe_from_cfg(_model_cfg()), {**weights, "ln_pre.extra": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="positional_embedding"):  # another image size, same keys
        vit_graph(vit_recipe_from_cfg(_model_cfg(image_size=48)), weights)
    wider = vit_recipe_from_cfg({**_model_cfg(), "embed_dim": 40})  # the config's embed_dim, not the weights', rules
    with pytest.raises(ValueError, match="proj"):
        vit_graph(wider, weights)
