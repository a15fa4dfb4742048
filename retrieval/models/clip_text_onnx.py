"""open_clip's CLIP text tower as an ONNX graph for tokens of any length, written from its weights.

The text export traced `retrieval.models.trimmed_text.TrimmedClipText` with `torch.onnx.export`:
seconds of one core holding the GIL, the largest part of the text export in a first index run
(docs/BENCHMARKS.md, issue 22). The CLIP text tower is a fixed recipe (token embedding, positions
sliced to the length, N x pre-norm causal attention blocks, final norm, the vector read at the
end-of-text token, projection), so `clip_text_graph` writes it directly, as
`retrieval.models.vit_onnx` does the image tower, with the same block writer (plus the causal
mask, sliced to the length like the positions). Input "tokens" (batch, length) int64, output
"features" (batch, dim). Only the configurations `unsupported` accepts are written; anything else
goes through the tracer as before. As for the ViT, the recipe (`ClipText`) is read from a built
tower (`text_recipe`) or, with neither torch nor open_clip, from the architecture's config
(`text_recipe_from_cfg`), and every graph is checked before it is kept
(`retrieval.models.onnx_text`): against the torch tower when there is one, else trimmed against
itself at full length.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.models.vit_onnx import (
    _PLAIN_BLOCK,
    MS_DOMAIN,
    OPSET,
    Block,
    _block,
    _Graph,
    _layer_norm,
    _weights,
    block_recipe,
    block_shapes,
    cfg_activation,
    cfg_eps,
    check_weights,
    plain_cfg_problem,
    transposed,
    unsupported_block,
)

POOLS = ("argmax", "eos", "first")
PROJECTIONS = ("parameter", "linear", "linear_bias", "none")  # open_clip: nn.Parameter, nn.Linear (+bias), None


@dataclass(frozen=True)
class ClipText:
    """A plain CLIP text tower's shape: what `text_graph` needs beyond the weights."""

    context_length: int
    vocab_size: int
    width: int
    blocks: tuple[Block, ...]
    ln_final_eps: float
    pool: str  # one of POOLS
    eos_id: int | None  # the token "eos" pooling reads at
    projection: str  # one of PROJECTIONS
    output_dim: int  # the width when there is no projection

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key of the tower's state_dict with its shape (the causal mask is not persistent)."""
        width = self.width
        shapes = {"token_embedding.weight": (self.vocab_size, width), "positional_embedding": (self.context_length, width)}
        for index, block in enumerate(self.blocks):
            shapes.update(block_shapes(f"transformer.resblocks.{index}", width, block))
        shapes.update({"ln_final.weight": (width,), "ln_final.bias": (width,)})
        if self.projection == "parameter":
            shapes["text_projection"] = (width, self.output_dim)
        elif self.projection != "none":
            shapes["text_projection.weight"] = (self.output_dim, width)
            if self.projection == "linear_bias":
                shapes["text_projection.bias"] = (self.output_dim,)
        return shapes

    def causal_mask(self) -> np.ndarray:
        """open_clip's build_causal_mask: -inf above the diagonal, 0 elsewhere."""
        return np.triu(np.full((self.context_length, self.context_length), -np.inf, np.float32), 1)


_TEXT_FIXED = {**_PLAIN_BLOCK, "embed_cls": (False,), "no_causal_mask": (False,), "output_tokens": (False,),
               "pool_type": POOLS, "hf_model_name": (None, ""), "hf_tokenizer_name": (None, ""),
               "tokenizer_mode": (None,), "tokenizer_kwargs": (None, {})}
_TEXT_FREE = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "ls_init_value", "pad_id",
              "eos_id", "final_ln_after_pool", "proj_bias", "proj_type", "act_kwargs", "norm_kwargs",
              "hf_model_pretrained", "hf_proj_type", "hf_pooler_type"}


def text_recipe_from_cfg(model_cfg: dict) -> ClipText:
    """The recipe open_clip builds from `model_cfg` (text_cfg, embed_dim, quick_gelu), read without
    open_clip; ValueError when it is not a plain CLIP text tower this module writes."""
    cfg = model_cfg.get("text_cfg") or {}
    problem = plain_cfg_problem(cfg, _TEXT_FIXED, _TEXT_FREE)
    if problem:
        raise ValueError(f"not a plain CLIP text tower: {problem}")
    width, heads = int(cfg.get("width", 512)), int(cfg.get("heads", 8))
    if width % heads:
        raise ValueError(f"not a plain CLIP text tower: width {width} is not a multiple of {heads} heads")
    eps = cfg_eps(cfg)
    block = Block(heads=heads, eps=(eps, eps), activation=cfg_activation(cfg, bool(model_cfg.get("quick_gelu", False))),
                  layer_scale=cfg.get("ls_init_value") is not None,
                  mlp_width=int(width * float(cfg.get("mlp_ratio", 4.0))))
    embed_dim = int(model_cfg.get("embed_dim") or 0)
    if cfg.get("proj_type", "linear") == "none" or not embed_dim:
        projection, output_dim = "none", width
    else:
        projection, output_dim = ("linear_bias" if cfg.get("proj_bias", False) else "parameter"), embed_dim
    pool = cfg.get("pool_type", "argmax")
    return ClipText(context_length=int(cfg.get("context_length", 77)), vocab_size=int(cfg.get("vocab_size", 49408)),
                    width=width, blocks=(block,) * int(cfg.get("layers", 12)), ln_final_eps=eps, pool=pool,
                    eos_id=int(cfg.get("eos_id", 2)) if pool == "eos" else None, projection=projection,
                    output_dim=output_dim)


def text_recipe(tower) -> ClipText:
    """The recipe of a built open_clip TextTransformer; ValueError when it is not one this module writes."""
    from torch import nn

    reason = unsupported(tower)
    if reason:
        raise ValueError(f"not a plain CLIP text tower: {reason}")
    projection, width = tower.text_projection, int(tower.transformer.width)
    if isinstance(projection, nn.Linear):
        kind, output_dim = ("linear" if projection.bias is None else "linear_bias"), int(projection.out_features)
    elif projection is not None:
        kind, output_dim = "parameter", int(projection.shape[1])
    else:
        kind, output_dim = "none", width
    return ClipText(context_length=int(tower.positional_embedding.shape[0]),
                    vocab_size=int(tower.token_embedding.num_embeddings), width=width,
                    blocks=tuple(block_recipe(block) for block in tower.transformer.resblocks),
                    ln_final_eps=float(tower.ln_final.eps), pool=tower.pool_type,
                    eos_id=int(tower.eos_id) if tower.pool_type == "eos" else None, projection=kind,
                    output_dim=output_dim)


def unsupported(tower) -> str | None:
    """Why `tower` is not a CLIP text tower this module writes (None when it is)."""
    from open_clip.transformer import LayerNorm, LayerNormFp32, TextTransformer, Transformer
    from torch import nn

    if type(tower) is not TextTransformer:
        return f"{type(tower).__name__} is not open_clip's TextTransformer"
    if tower.training:
        return "the tower is in training mode"
    if getattr(tower, "attn_mask", None) is None or tower.cls_emb is not None or getattr(tower, "use_pad_mask", False):
        return "no causal mask, a class token or a padding mask"
    if tower.pool_type not in POOLS or tower.output_tokens:
        return f"pool_type {tower.pool_type} or token outputs"
    if tower.pool_type == "eos" and getattr(tower, "eos_id", None) is None:
        return "eos pooling without an eos id"
    if type(tower.transformer) is not Transformer or not tower.transformer.batch_first:
        return "a transformer stack of another kind"
    if type(tower.token_embedding) is not nn.Embedding or type(tower.ln_final) not in (LayerNorm, LayerNormFp32):
        return "another token embedding or final norm"
    projection = tower.text_projection
    if projection is not None and not isinstance(projection, (nn.Parameter, nn.Linear)):
        return f"a {type(projection).__name__} projection"
    for block in tower.transformer.resblocks:
        reason = unsupported_block(block)
        if reason:
            return reason
    return None


def clip_text_graph(tower):
    """`text_graph` of a built torch tower (ValueError when it is not a plain CLIP text tower)."""
    return text_graph(text_recipe(tower), _weights(tower))


def text_graph(recipe: ClipText, weights: dict):
    """The ONNX ModelProto of a plain CLIP text tower (`recipe`) with `weights` (float32 arrays keyed as
    its state_dict; ValueError unless exactly those). See the module docstring."""
    model, _ = held_text_graph(recipe, weights, held=False)
    return model


def held_text_graph(recipe: ClipText, weights: dict, *, held: bool = True):
    """`text_graph` as (ModelProto, arrays): with `held`, its large weights stay outside the protobuf as
    `arrays` (retrieval.models.held_weights); without, `arrays` is empty."""
    from onnx import TensorProto, helper

    check_weights(recipe.weight_shapes(), weights)
    graph = _Graph()
    x = graph.op("Gather", [graph.constant(weights["token_embedding.weight"], "token_embedding"), "tokens"],
                 "embedded", axis=0)  # (batch, length, width)
    length = graph.op("Shape", ["tokens"], "length", start=1, end=2)
    zero = graph.constant(np.array([0], np.int64), "zero")
    positions = graph.op("Slice", [graph.constant(weights["positional_embedding"], "positional_embedding"), zero, length,
                                   zero], "positions")
    x = graph.op("Add", [x, positions], "positioned")
    square = graph.op("Concat", [length, length], "square", axis=0)
    mask = graph.op("Slice", [graph.constant(recipe.causal_mask(), "causal_mask"),
                              graph.constant(np.array([0, 0], np.int64), "start"), square,
                              graph.constant(np.array([0, 1], np.int64), "axes")], "mask")  # (length, length)
    for index, block in enumerate(recipe.blocks):
        x = _block(graph, x, block, f"transformer.resblocks.{index}", weights, mask=mask)
    if recipe.pool == "first":
        pooled = graph.op("Gather", [x, graph.constant(np.array(0, np.int64), "index")], "pooled", axis=1)
    else:  # the first position of the largest token (argmax: CLIP's end-of-text) or of the eos token
        # ArgMax on int32: onnxruntime's CPU kernels before 1.20 have none for int64 (token ids fit in 31 bits)
        keys = graph.op("Cast", ["tokens"], "tokens_int", to=TensorProto.INT32) if recipe.pool == "argmax" else graph.op(
            "Cast", [graph.op("Equal", ["tokens", graph.constant(np.array(int(recipe.eos_id), np.int64), "eos")], "is_eos")],
            "is_eos_int", to=TensorProto.INT32)
        where = graph.op("ArgMax", [keys], "pool_at", axis=-1, keepdims=1)  # (batch, 1)
        pooled = graph.op("GatherND", [x, where], "pooled", batch_dims=1)  # (batch, width)
    # the final norm is per token: on the pooled token only, the same numbers
    pooled = _layer_norm(graph, pooled, recipe.ln_final_eps, "ln_final", weights)
    if recipe.projection == "parameter":
        features = graph.op("MatMul", [pooled, graph.constant(weights["text_projection"], "text_projection")], "projected")
    elif recipe.projection != "none":
        features = graph.op("MatMul", [pooled, graph.constant(transposed(weights["text_projection.weight"]), "text_projection")],
                            "projected")
        if recipe.projection == "linear_bias":
            features = graph.op("Add", [features, graph.constant(weights["text_projection.bias"], "bias")], "features")
    else:
        features = pooled
    graph.nodes.append(helper.make_node("Identity", [features], ["features"], name="output"))
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "length"])]
    outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", recipe.output_dim])]
    model = helper.make_model(
        helper.make_graph(graph.nodes, "open_clip_text", inputs, outputs),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)], producer_name="mmsearch")
    model.ir_version = 8  # what onnxruntime >= 1.17 reads
    arrays = graph.fill(model.graph, held)  # the weights last: make_graph/make_model would copy them
    return model, arrays
