"""open_clip's VisionTransformer as an ONNX graph, written from its weights instead of traced.

`torch.onnx.export` traces the tower op by op and runs shape inference and graph passes over the
result: about 5 CPU-seconds of a ViT-B-32 export, most of the one-time cost of a first index run
(docs/BENCHMARKS.md). The plain ViT is a fixed recipe (patch convolution, class token, positions,
pre-norm, N x [LayerNorm, multi-head attention, LayerNorm, MLP], post-norm, pooling, projection),
so `vit_graph` writes that recipe directly with the tower's weights in a fraction of a second. It
takes only the configurations it knows (`unsupported` says why not): anything else, and every
other architecture, goes through the tracer as before. The export check in
`retrieval.models.fast_image` compares the graph's int8 version with the torch tower.
"""
from __future__ import annotations

import math

import numpy as np

OPSET = 17
MS_DOMAIN = "com.microsoft"


def unsupported(tower) -> str | None:
    """Why `tower` is not a ViT this module writes (None when it is)."""
    from open_clip.transformer import LayerNorm, LayerNormFp32, Transformer, VisionTransformer
    from torch import nn

    if type(tower) is not VisionTransformer:
        return f"{type(tower).__name__} is not open_clip's VisionTransformer"
    if tower.training:
        return "the tower is in training mode"
    if tower.attn_pool is not None or tower.pool_type not in ("tok", "avg") or tower.output_tokens:
        return "attentional pooling, pool_type none or token outputs"
    if tower.proj is None or type(tower.transformer) is not Transformer or not tower.transformer.batch_first:
        return "no projection, or a transformer stack of another kind"
    if not isinstance(tower.ln_pre, nn.Identity) and type(tower.ln_pre) not in (LayerNorm, LayerNormFp32):
        return f"ln_pre is {type(tower.ln_pre).__name__}"
    if type(tower.ln_post) not in (LayerNorm, LayerNormFp32):
        return f"ln_post is {type(tower.ln_post).__name__}"
    for block in tower.transformer.resblocks:
        reason = unsupported_block(block)
        if reason:
            return reason
    return None


def unsupported_block(block) -> str | None:
    """Why `block` is not a residual attention block `_block` writes (None when it is)."""
    from open_clip.transformer import LayerNorm, LayerNormFp32, LayerScale, QuickGELU, ResidualAttentionBlock
    from torch import nn

    attn = block.attn
    if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
        return f"block {type(block).__name__}"
    if type(attn) is not nn.MultiheadAttention or not attn.batch_first or not attn._qkv_same_embed_dim \
            or attn.in_proj_bias is None or attn.bias_k is not None or attn.add_zero_attn:
        return "an attention layer of another shape"
    for norm in (block.ln_1, block.ln_2):
        if type(norm) not in (LayerNorm, LayerNormFp32) or norm.weight is None:
            return f"a {type(norm).__name__} norm"
    for scale in (block.ls_1, block.ls_2):
        if not isinstance(scale, nn.Identity) and type(scale) is not LayerScale:
            return f"layer scale {type(scale).__name__}"
    activation = block.mlp.gelu
    if not (type(activation) is QuickGELU or (type(activation) is nn.GELU and activation.approximate in ("none", "tanh"))):
        return f"activation {type(activation).__name__}"
    if [name for name, _ in block.mlp.named_children()] != ["c_fc", "gelu", "c_proj"]:
        return "an MLP of another shape"
    return None


class _Graph:
    """A small ONNX graph writer: named constants, nodes, unique names."""

    def __init__(self):
        self.nodes, self.constants, self._count = [], [], 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, value, hint: str) -> str:
        name = self.name(hint)
        self.constants.append((name, np.asarray(value)))  # 0-d stays 0-d
        return name

    def fill(self, graph) -> None:
        """Write the constants into `graph` (a GraphProto) as initializers, each array copied once."""
        from onnx import helper

        for name, value in self.constants:
            tensor = graph.initializer.add()
            tensor.name = name
            tensor.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
            tensor.dims.extend(value.shape)
            tensor.raw_data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()

    def op(self, op_type: str, inputs: list[str], hint: str = "", domain: str = "", **attributes) -> str:
        from onnx import helper

        output = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, domain=domain or None, **attributes))
        return output


def _weights(module) -> dict:
    return {key: value.detach().float().cpu().numpy() for key, value in module.state_dict().items()}


def _layer_norm(graph: _Graph, x: str, norm, prefix: str, weights: dict) -> str:
    return graph.op("LayerNormalization", [x, graph.constant(weights[f"{prefix}.weight"], f"{prefix}.weight"),
                                           graph.constant(weights[f"{prefix}.bias"], f"{prefix}.bias")],
                    prefix, axis=-1, epsilon=float(norm.eps))


def _linear(graph: _Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, prefix: str) -> str:
    """x @ weight.T (+ bias): MatMul with a (in, out) constant, then Add (int8_graph folds the Add)."""
    out = graph.op("MatMul", [x, graph.constant(weight.T, f"{prefix}.weight_t")], f"{prefix}.matmul")
    return out if bias is None else graph.op("Add", [out, graph.constant(bias, f"{prefix}.bias")], f"{prefix}.add")


def _activation(graph: _Graph, x: str, activation, prefix: str) -> str:
    from torch import nn

    if type(activation) is nn.GELU:
        return graph.op("Gelu" if activation.approximate == "none" else "FastGelu", [x], f"{prefix}.gelu", domain=MS_DOMAIN)
    scaled = graph.op("Mul", [x, graph.constant(np.float32(1.702), f"{prefix}.alpha")], f"{prefix}.scaled")
    return graph.op("Mul", [x, graph.op("Sigmoid", [scaled], f"{prefix}.sigmoid")], f"{prefix}.quick_gelu")


def _block(graph: _Graph, x: str, block, prefix: str, weights: dict, mask: str | None = None) -> str:
    """One pre-norm residual attention block; `mask` (when given) is added to the attention scores."""
    from torch import nn

    attn = block.attn
    width, heads = attn.embed_dim, attn.num_heads
    head_dim = width // heads
    h = _layer_norm(graph, x, block.ln_1, f"{prefix}.ln_1", weights)
    qkv = _linear(graph, h, weights[f"{prefix}.attn.in_proj_weight"], weights[f"{prefix}.attn.in_proj_bias"],
                  f"{prefix}.attn.in_proj")
    qkv = graph.op("Reshape", [qkv, graph.constant(np.array([0, 0, 3, heads, head_dim], np.int64), "shape")], f"{prefix}.qkv")
    qkv = graph.op("Transpose", [qkv], f"{prefix}.qkv_t", perm=[2, 0, 3, 1, 4])  # (3, batch, heads, tokens, head_dim)
    q, k, v = (graph.op("Gather", [qkv, graph.constant(np.array(index, np.int64), "index")], f"{prefix}.{part}", axis=0)
               for index, part in enumerate("qkv"))
    q = graph.op("Mul", [q, graph.constant(np.float32(1 / math.sqrt(head_dim)), "scale")], f"{prefix}.q_scaled")
    scores = graph.op("MatMul", [q, graph.op("Transpose", [k], f"{prefix}.k_t", perm=[0, 1, 3, 2])], f"{prefix}.scores")
    if mask is not None:
        scores = graph.op("Add", [scores, mask], f"{prefix}.masked")
    attended = graph.op("MatMul", [graph.op("Softmax", [scores], f"{prefix}.softmax", axis=-1), v], f"{prefix}.attended")
    attended = graph.op("Transpose", [attended], f"{prefix}.attended_t", perm=[0, 2, 1, 3])
    attended = graph.op("Reshape", [attended, graph.constant(np.array([0, 0, width], np.int64), "shape")], f"{prefix}.merged")
    out = _linear(graph, attended, weights[f"{prefix}.attn.out_proj.weight"], weights[f"{prefix}.attn.out_proj.bias"],
                  f"{prefix}.attn.out_proj")
    if not isinstance(block.ls_1, nn.Identity):
        out = graph.op("Mul", [out, graph.constant(weights[f"{prefix}.ls_1.gamma"], "gamma")], f"{prefix}.ls_1")
    x = graph.op("Add", [x, out], f"{prefix}.residual_1")
    h = _layer_norm(graph, x, block.ln_2, f"{prefix}.ln_2", weights)
    h = _linear(graph, h, weights[f"{prefix}.mlp.c_fc.weight"], weights[f"{prefix}.mlp.c_fc.bias"], f"{prefix}.mlp.c_fc")
    h = _activation(graph, h, block.mlp.gelu, f"{prefix}.mlp")
    h = _linear(graph, h, weights[f"{prefix}.mlp.c_proj.weight"], weights[f"{prefix}.mlp.c_proj.bias"], f"{prefix}.mlp.c_proj")
    if not isinstance(block.ls_2, nn.Identity):
        h = graph.op("Mul", [h, graph.constant(weights[f"{prefix}.ls_2.gamma"], "gamma")], f"{prefix}.ls_2")
    return graph.op("Add", [x, h], f"{prefix}.residual_2")


def vit_graph(tower):
    """The ONNX ModelProto of a supported VisionTransformer: input "pixels" (batch, 3, S, S) float,
    output "features" (batch, output_dim), the batch dimension free. Raises ValueError otherwise."""
    from onnx import TensorProto, helper
    from torch import nn

    reason = unsupported(tower)
    if reason:
        raise ValueError(f"not a plain ViT: {reason}")
    weights = _weights(tower)
    width = tower.conv1.out_channels
    graph = _Graph()
    conv_inputs = ["pixels", graph.constant(weights["conv1.weight"], "conv1.weight")]
    if tower.conv1.bias is not None:
        conv_inputs.append(graph.constant(weights["conv1.bias"], "conv1.bias"))
    x = graph.op("Conv", conv_inputs, "conv1", kernel_shape=list(tower.conv1.kernel_size), strides=list(tower.conv1.stride))
    x = graph.op("Reshape", [x, graph.constant(np.array([0, width, -1], np.int64), "shape")], "patches")
    x = graph.op("Transpose", [x], "patches_t", perm=[0, 2, 1])  # (batch, patches, width)
    batch = graph.op("Shape", ["pixels"], "batch", start=0, end=1)
    token_shape = graph.op("Concat", [batch, graph.constant(np.array([1, width], np.int64), "shape")], "token_shape", axis=0)
    token = graph.op("Expand", [graph.constant(weights["class_embedding"].reshape(1, 1, width), "class_embedding"),
                                token_shape], "class_token")
    x = graph.op("Concat", [token, x], "tokens", axis=1)
    x = graph.op("Add", [x, graph.constant(weights["positional_embedding"], "positional_embedding")], "positioned")
    if not isinstance(tower.ln_pre, nn.Identity):
        x = _layer_norm(graph, x, tower.ln_pre, "ln_pre", weights)
    for index, block in enumerate(tower.transformer.resblocks):
        x = _block(graph, x, block, f"transformer.resblocks.{index}", weights)
    if tower.pool_type == "tok":  # the post-norm is per token: pooling first gives the same numbers
        pooled = graph.op("Gather", [x, graph.constant(np.array(0, np.int64), "index")], "pooled", axis=1)
        pooled = _layer_norm(graph, pooled, tower.ln_post, "ln_post", weights)
    else:
        if not tower.final_ln_after_pool:
            x = _layer_norm(graph, x, tower.ln_post, "ln_post", weights)
        patches = graph.op("Slice", [x, graph.constant(np.array([1], np.int64), "start"),
                                     graph.constant(np.array([2**62], np.int64), "end"),
                                     graph.constant(np.array([1], np.int64), "axis")], "patch_tokens")
        pooled = graph.op("ReduceMean", [patches], "pooled", axes=[1], keepdims=0)
        if tower.final_ln_after_pool:
            pooled = _layer_norm(graph, pooled, tower.ln_post, "ln_post", weights)
    features = graph.op("MatMul", [pooled, graph.constant(weights["proj"], "proj")], "features")
    graph.nodes.append(helper.make_node("Identity", [features], ["features"], name="output"))
    size = list(tower.image_size)
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, *size])]
    outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", int(weights["proj"].shape[1])])]
    model = helper.make_model(
        helper.make_graph(graph.nodes, "open_clip_vit", inputs, outputs),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)], producer_name="mmsearch")
    model.ir_version = 8  # what onnxruntime >= 1.17 reads
    graph.fill(model.graph)  # the weights last: make_graph/make_model would copy them
    return model
