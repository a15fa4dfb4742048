"""open_clip's CLIP text tower as an ONNX graph for tokens of any length, written from its weights.

The text export traced `retrieval.models.trimmed_text.TrimmedClipText` with `torch.onnx.export`:
seconds of one core holding the GIL, the largest part of the text export in a first index run
(docs/BENCHMARKS.md, issue 22). The CLIP text tower is a fixed recipe (token embedding, positions
sliced to the length, N x pre-norm causal attention blocks, final norm, the vector read at the
end-of-text token, projection), so `clip_text_graph` writes it directly, as
`retrieval.models.vit_onnx` does the image tower, with the same block writer (plus the causal
mask, sliced to the length like the positions). Input "tokens" (batch, length) int64, output
"features" (batch, dim). Only the configurations `unsupported` accepts are written; anything else
goes through the tracer as before, and every graph is still checked against the torch tower
(`retrieval.models.onnx_text._check_trimmed`) before it is kept.
"""
from __future__ import annotations

import numpy as np

from retrieval.models.vit_onnx import MS_DOMAIN, OPSET, _block, _Graph, _layer_norm, _weights, unsupported_block

POOLS = ("argmax", "eos", "first")


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
    """The ONNX ModelProto of a supported TextTransformer (see the module docstring); ValueError otherwise."""
    from onnx import TensorProto, helper
    from torch import nn

    reason = unsupported(tower)
    if reason:
        raise ValueError(f"not a plain CLIP text tower: {reason}")
    weights = _weights(tower)
    graph = _Graph()
    x = graph.op("Gather", [graph.constant(weights["token_embedding.weight"], "token_embedding"), "tokens"],
                 "embedded", axis=0)  # (batch, length, width)
    length = graph.op("Shape", ["tokens"], "length", start=1, end=2)
    zero = graph.constant(np.array([0], np.int64), "zero")
    positions = graph.op("Slice", [graph.constant(weights["positional_embedding"], "positional_embedding"), zero, length,
                                   zero], "positions")
    x = graph.op("Add", [x, positions], "positioned")
    square = graph.op("Concat", [length, length], "square", axis=0)
    mask = graph.op("Slice", [graph.constant(tower.attn_mask.detach().float().cpu().numpy(), "causal_mask"),
                              graph.constant(np.array([0, 0], np.int64), "start"), square,
                              graph.constant(np.array([0, 1], np.int64), "axes")], "mask")  # (length, length)
    for index, block in enumerate(tower.transformer.resblocks):
        x = _block(graph, x, block, f"transformer.resblocks.{index}", weights, mask=mask)
    if tower.pool_type == "first":
        pooled = graph.op("Gather", [x, graph.constant(np.array(0, np.int64), "index")], "pooled", axis=1)
    else:  # the first position of the largest token (argmax: CLIP's end-of-text) or of the eos token
        keys = "tokens" if tower.pool_type == "argmax" else graph.op(
            "Cast", [graph.op("Equal", ["tokens", graph.constant(np.array(int(tower.eos_id), np.int64), "eos")], "is_eos")],
            "is_eos_int", to=TensorProto.INT32)
        where = graph.op("ArgMax", [keys], "pool_at", axis=-1, keepdims=1)  # (batch, 1)
        pooled = graph.op("GatherND", [x, where], "pooled", batch_dims=1)  # (batch, width)
    # the final norm is per token: on the pooled token only, the same numbers
    pooled = _layer_norm(graph, pooled, tower.ln_final, "ln_final", weights)
    projection, output_dim = tower.text_projection, int(tower.transformer.width)
    if isinstance(projection, nn.Linear):
        features = graph.op("MatMul", [pooled, graph.constant(weights["text_projection.weight"].T, "text_projection")],
                            "projected")
        if projection.bias is not None:
            features = graph.op("Add", [features, graph.constant(weights["text_projection.bias"], "bias")], "features")
        output_dim = int(projection.out_features)
    elif projection is not None:
        features = graph.op("MatMul", [pooled, graph.constant(weights["text_projection"], "text_projection")], "projected")
        output_dim = int(projection.shape[1])
    else:
        features = pooled
    graph.nodes.append(helper.make_node("Identity", [features], ["features"], name="output"))
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "length"])]
    outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", output_dim])]
    model = helper.make_model(
        helper.make_graph(graph.nodes, "open_clip_text", inputs, outputs),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)], producer_name="mmsearch")
    model.ir_version = 8  # what onnxruntime >= 1.17 reads
    graph.fill(model.graph)  # the weights last: make_graph/make_model would copy them
    return model
