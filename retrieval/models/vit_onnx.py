"""open_clip's VisionTransformer as an ONNX graph, written from its weights instead of traced.

`torch.onnx.export` traces the tower op by op and runs shape inference and graph passes over the
result: about 5 CPU-seconds of a ViT-B-32 export, most of the one-time cost of a first index run
(docs/BENCHMARKS.md). The plain ViT is a fixed recipe (patch convolution, class token, positions,
pre-norm, N x [LayerNorm, multi-head attention, LayerNorm, MLP], post-norm, pooling, projection),
so `vit_graph` writes that recipe directly from the tower's weights in a fraction of a second.

The recipe (`Vit`: sizes, norms, activation, pooling) is read either from a built torch tower
(`vit_recipe`) or, without importing torch or open_clip, from the architecture's open_clip config
(`vit_recipe_from_cfg`, for weights read by `retrieval.models.tower_weights`); tests check that
both readings agree and that the graph computes what the torch tower does. Only configurations
these readers know are written (ValueError says why not): anything else, and every other
architecture, goes through the tracer as before. The export check in
`retrieval.models.fast_image` compares the graph's int8 version with its fp32 vectors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OPSET = 17
MS_DOMAIN = "com.microsoft"
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu")
DEFAULT_EPS = 1e-5  # open_clip's LayerNorm (torch's) unless norm_kwargs say otherwise


@dataclass(frozen=True)
class Block:
    """What `_block` needs of one residual attention block beyond its weights."""

    heads: int
    eps: tuple[float, float]  # ln_1, ln_2
    activation: str  # one of ACTIVATIONS
    layer_scale: bool  # ls_1/ls_2 gammas present
    mlp_width: int


@dataclass(frozen=True)
class Vit:
    """A plain VisionTransformer's shape: what `vit_graph` needs beyond the weights."""

    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    width: int
    ln_pre_eps: float | None  # None: no pre-norm
    blocks: tuple[Block, ...]
    ln_post_eps: float
    pool: str  # "tok" | "avg"
    final_ln_after_pool: bool
    output_dim: int  # the projection's width: the model's embed_dim

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key of the tower's state_dict with its shape (what a strict load expects)."""
        (height, width_px), (patch_h, patch_w) = self.image_size, self.patch_size
        grid = (height // patch_h) * (width_px // patch_w)
        width = self.width
        shapes = {"conv1.weight": (width, 3, patch_h, patch_w), "class_embedding": (width,),
                  "positional_embedding": (grid + 1, width)}
        if self.ln_pre_eps is not None:
            shapes.update({"ln_pre.weight": (width,), "ln_pre.bias": (width,)})
        for index, block in enumerate(self.blocks):
            shapes.update(block_shapes(f"transformer.resblocks.{index}", width, block))
        shapes.update({"ln_post.weight": (width,), "ln_post.bias": (width,), "proj": (width, self.output_dim)})
        return shapes


def block_shapes(prefix: str, width: int, block: Block) -> dict[str, tuple[int, ...]]:
    """The state_dict keys and shapes of one block."""
    mlp_width = block.mlp_width
    shapes = {f"{prefix}.ln_1.weight": (width,), f"{prefix}.ln_1.bias": (width,),
              f"{prefix}.attn.in_proj_weight": (3 * width, width), f"{prefix}.attn.in_proj_bias": (3 * width,),
              f"{prefix}.attn.out_proj.weight": (width, width), f"{prefix}.attn.out_proj.bias": (width,),
              f"{prefix}.ln_2.weight": (width,), f"{prefix}.ln_2.bias": (width,),
              f"{prefix}.mlp.c_fc.weight": (mlp_width, width), f"{prefix}.mlp.c_fc.bias": (mlp_width,),
              f"{prefix}.mlp.c_proj.weight": (width, mlp_width), f"{prefix}.mlp.c_proj.bias": (width,)}
    if block.layer_scale:
        shapes.update({f"{prefix}.ls_1.gamma": (width,), f"{prefix}.ls_2.gamma": (width,)})
    return shapes


def check_weights(expected: dict[str, tuple[int, ...]], weights: dict) -> None:
    """ValueError unless `weights` has exactly the `expected` keys and shapes (as a strict load)."""
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(f"weights do not fit the config: missing {missing[:3]}, unexpected {extra[:3]}")
    for key, shape in expected.items():
        if tuple(weights[key].shape) != shape:
            raise ValueError(f"{key} is {tuple(weights[key].shape)}, the config gives {shape}")


# fields of open_clip's CLIPVisionCfg / CLIPTextCfg that a plain tower leaves at these values
# (block_type None or "default" and no custom-attention feature: open_clip's ResidualAttentionBlock)
_PLAIN_BLOCK = {"block_type": (None, "default"), "qk_norm": (False,), "scaled_cosine_attn": (False,),
                "scale_heads": (False,), "scale_attn_inner": (False,), "scale_attn": (False,), "scale_fc": (False,)}
_VISION_FIXED = {**_PLAIN_BLOCK, "attentional_pool": (False,), "output_tokens": (False,), "timm_model_name": (None, ""),
                 "pool_type": ("tok", "avg"), "pos_embed_type": ("learnable", "sin_cos_2d")}
_VISION_FREE = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "ls_init_value",
                "patch_dropout", "attn_pooler_queries", "attn_pooler_heads", "no_ln_pre", "final_ln_after_pool",
                "act_kwargs", "norm_kwargs", "timm_model_pretrained", "timm_pool", "timm_proj", "timm_proj_bias",
                "timm_drop", "timm_drop_path"}


def plain_cfg_problem(cfg: dict, fixed: dict, free: set) -> str | None:
    """Why an open_clip tower config is not one of the plain towers these writers read (None: it is)."""
    for key, value in cfg.items():
        if key in fixed:
            if value not in fixed[key]:
                return f"{key}={value!r}"
        elif key not in free:
            return f"a config field this writer does not know: {key}"
    return None


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


def cfg_eps(cfg: dict) -> float:
    """The LayerNorm eps a tower config gives (ValueError for other norm options)."""
    norm_kwargs = cfg.get("norm_kwargs") or {}
    if set(norm_kwargs) - {"eps"}:
        raise ValueError(f"norm_kwargs {norm_kwargs}")
    return float(norm_kwargs.get("eps", DEFAULT_EPS))


def cfg_activation(cfg: dict, quick_gelu: bool) -> str:
    """The MLP activation a tower config gives (ValueError for others), as open_clip builds it."""
    act_kwargs = cfg.get("act_kwargs") or {}
    if quick_gelu:
        if act_kwargs:
            raise ValueError(f"QuickGELU with act_kwargs {act_kwargs}")
        return "quick_gelu"
    approximate = act_kwargs.get("approximate", "none")
    if set(act_kwargs) - {"approximate"} or approximate not in ("none", "tanh"):
        raise ValueError(f"act_kwargs {act_kwargs}")
    return "gelu" if approximate == "none" else "gelu_tanh"


def vit_recipe_from_cfg(model_cfg: dict) -> Vit:
    """The recipe open_clip builds from `model_cfg` (an architecture config: vision_cfg, quick_gelu),
    read without open_clip; ValueError when it is not a plain ViT this module writes."""
    cfg = model_cfg.get("vision_cfg") or {}
    problem = plain_cfg_problem(cfg, _VISION_FIXED, _VISION_FREE)
    if problem:
        raise ValueError(f"not a plain ViT: {problem}")
    if isinstance(cfg.get("layers", 12), (list, tuple)):
        raise ValueError("not a plain ViT: a ResNet (layers is a list)")
    width, head_width = int(cfg.get("width", 768)), int(cfg.get("head_width", 64))
    if width % head_width:
        raise ValueError(f"not a plain ViT: width {width} is not a multiple of head_width {head_width}")
    eps = cfg_eps(cfg)
    block = Block(heads=width // head_width, eps=(eps, eps),
                  activation=cfg_activation(cfg, bool(model_cfg.get("quick_gelu", False))),
                  layer_scale=cfg.get("ls_init_value") is not None,
                  mlp_width=int(width * float(cfg.get("mlp_ratio", 4.0))))
    return Vit(image_size=_pair(cfg.get("image_size", 224)), patch_size=_pair(cfg.get("patch_size", 16)), width=width,
               ln_pre_eps=None if cfg.get("no_ln_pre", False) else eps, blocks=(block,) * int(cfg.get("layers", 12)),
               ln_post_eps=eps, pool=cfg.get("pool_type", "tok"),
               final_ln_after_pool=bool(cfg.get("final_ln_after_pool", False)),
               output_dim=int(model_cfg.get("embed_dim") or 0))


def vit_recipe(tower) -> Vit:
    """The recipe of a built open_clip VisionTransformer; ValueError when it is not one this module writes."""
    from torch import nn

    reason = unsupported(tower)
    if reason:
        raise ValueError(f"not a plain ViT: {reason}")
    return Vit(image_size=_pair(tower.image_size), patch_size=_pair(tower.conv1.kernel_size),
               width=int(tower.conv1.out_channels),
               ln_pre_eps=None if isinstance(tower.ln_pre, nn.Identity) else float(tower.ln_pre.eps),
               blocks=tuple(block_recipe(block) for block in tower.transformer.resblocks),
               ln_post_eps=float(tower.ln_post.eps), pool=tower.pool_type,
               final_ln_after_pool=bool(tower.final_ln_after_pool), output_dim=int(tower.proj.shape[1]))


def block_recipe(block) -> Block:
    """The recipe of a block `unsupported_block` accepts."""
    from torch import nn

    activation = block.mlp.gelu
    kind = "gelu" if type(activation) is nn.GELU and activation.approximate == "none" else \
        "gelu_tanh" if type(activation) is nn.GELU else "quick_gelu"
    return Block(heads=int(block.attn.num_heads), eps=(float(block.ln_1.eps), float(block.ln_2.eps)), activation=kind,
                 layer_scale=not isinstance(block.ls_1, nn.Identity), mlp_width=int(block.mlp.c_fc.out_features))


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
    if tower.conv1.bias is not None or any(norm.weight is None for norm in (tower.ln_pre, tower.ln_post)
                                           if not isinstance(norm, nn.Identity)):
        return "a patch convolution with a bias, or a norm without weights"
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
    if isinstance(block.ls_1, nn.Identity) != isinstance(block.ls_2, nn.Identity):
        return "layer scale on one half of the block only"
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

    def fill(self, graph, held: bool = False) -> dict[str, np.ndarray]:
        """Write the constants into `graph` (a GraphProto) as initializers, each array copied once. With
        `held`, the large ones are declared held outside the protobuf instead (retrieval.models.held_weights)
        and returned as contiguous little-endian arrays, by name."""
        from onnx import helper

        from retrieval.models.held_weights import MIN_BYTES, hold

        arrays = {}
        for name, value in self.constants:
            tensor = graph.initializer.add()
            tensor.name = name
            tensor.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
            tensor.dims.extend(value.shape)
            data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
            if held and data.nbytes >= MIN_BYTES:
                arrays[name] = data
                hold(tensor)
            else:
                tensor.raw_data = data.tobytes()
        return arrays

    def op(self, op_type: str, inputs: list[str], hint: str = "", domain: str = "", **attributes) -> str:
        from onnx import helper

        output = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, domain=domain or None, **attributes))
        return output


def _weights(module) -> dict:
    return {key: value.detach().float().cpu().numpy() for key, value in module.state_dict().items()}


def _layer_norm(graph: _Graph, x: str, eps: float, prefix: str, weights: dict) -> str:
    return graph.op("LayerNormalization", [x, graph.constant(weights[f"{prefix}.weight"], f"{prefix}.weight"),
                                           graph.constant(weights[f"{prefix}.bias"], f"{prefix}.bias")],
                    prefix, axis=-1, epsilon=float(eps))


def transposed(array: np.ndarray, rows: int = 64) -> np.ndarray:
    """A contiguous copy of the 2-D `array`'s transpose, strip by strip: 4-5x faster than numpy's
    `ascontiguousarray(array.T)`, whose strided reads miss the cache (3.5 vs 16 ms on a 3072 x 768
    weight; 0.10 vs 0.47 s over a ViT-B-32's 12 blocks: bench/bench_transpose.py)."""
    out = np.empty((array.shape[1], array.shape[0]), array.dtype)
    for start in range(0, array.shape[0], rows):
        out[:, start:start + rows] = array[start:start + rows].T
    return out


def _linear(graph: _Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, prefix: str) -> str:
    """x @ weight.T (+ bias): MatMul with a (in, out) constant, then Add (int8_graph folds the Add)."""
    out = graph.op("MatMul", [x, graph.constant(transposed(weight), f"{prefix}.weight_t")], f"{prefix}.matmul")
    return out if bias is None else graph.op("Add", [out, graph.constant(bias, f"{prefix}.bias")], f"{prefix}.add")


def _activation(graph: _Graph, x: str, kind: str, prefix: str) -> str:
    if kind in ("gelu", "gelu_tanh"):
        return graph.op("Gelu" if kind == "gelu" else "FastGelu", [x], f"{prefix}.gelu", domain=MS_DOMAIN)
    scaled = graph.op("Mul", [x, graph.constant(np.float32(1.702), f"{prefix}.alpha")], f"{prefix}.scaled")
    return graph.op("Mul", [x, graph.op("Sigmoid", [scaled], f"{prefix}.sigmoid")], f"{prefix}.quick_gelu")


def _block(graph: _Graph, x: str, block: Block, prefix: str, weights: dict, mask: str | None = None) -> str:
    """One pre-norm residual attention block; `mask` (when given) is added to the attention scores."""
    width, heads = int(weights[f"{prefix}.ln_1.weight"].shape[0]), block.heads
    head_dim = width // heads
    h = _layer_norm(graph, x, block.eps[0], f"{prefix}.ln_1", weights)
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
    if block.layer_scale:
        out = graph.op("Mul", [out, graph.constant(weights[f"{prefix}.ls_1.gamma"], "gamma")], f"{prefix}.ls_1")
    x = graph.op("Add", [x, out], f"{prefix}.residual_1")
    h = _layer_norm(graph, x, block.eps[1], f"{prefix}.ln_2", weights)
    h = _linear(graph, h, weights[f"{prefix}.mlp.c_fc.weight"], weights[f"{prefix}.mlp.c_fc.bias"], f"{prefix}.mlp.c_fc")
    h = _activation(graph, h, block.activation, f"{prefix}.mlp")
    h = _linear(graph, h, weights[f"{prefix}.mlp.c_proj.weight"], weights[f"{prefix}.mlp.c_proj.bias"], f"{prefix}.mlp.c_proj")
    if block.layer_scale:
        h = graph.op("Mul", [h, graph.constant(weights[f"{prefix}.ls_2.gamma"], "gamma")], f"{prefix}.ls_2")
    return graph.op("Add", [x, h], f"{prefix}.residual_2")


def tower_graph(tower):
    """`vit_graph` of a built torch tower (ValueError when it is not a plain ViT)."""
    return vit_graph(vit_recipe(tower), _weights(tower))


def vit_graph(recipe: Vit, weights: dict):
    """The ONNX ModelProto of a plain ViT (`recipe`) with `weights` (float32 arrays keyed as its
    state_dict; ValueError unless exactly those): input "pixels" (batch, 3, H, W) float, output
    "features" (batch, output_dim), the batch dimension free."""
    model, _ = held_vit_graph(recipe, weights, held=False)
    return model


def held_vit_graph(recipe: Vit, weights: dict, *, held: bool = True):
    """`vit_graph` as (ModelProto, arrays): with `held`, its large weights stay outside the protobuf
    as `arrays` (retrieval.models.held_weights); without, `arrays` is empty."""
    from onnx import TensorProto, helper

    check_weights(recipe.weight_shapes(), weights)
    width = recipe.width
    graph = _Graph()
    conv_inputs = ["pixels", graph.constant(weights["conv1.weight"], "conv1.weight")]
    x = graph.op("Conv", conv_inputs, "conv1", kernel_shape=list(recipe.patch_size), strides=list(recipe.patch_size))
    x = graph.op("Reshape", [x, graph.constant(np.array([0, width, -1], np.int64), "shape")], "patches")
    x = graph.op("Transpose", [x], "patches_t", perm=[0, 2, 1])  # (batch, patches, width)
    batch = graph.op("Shape", ["pixels"], "batch", start=0, end=1)
    token_shape = graph.op("Concat", [batch, graph.constant(np.array([1, width], np.int64), "shape")], "token_shape", axis=0)
    token = graph.op("Expand", [graph.constant(weights["class_embedding"].reshape(1, 1, width), "class_embedding"),
                                token_shape], "class_token")
    x = graph.op("Concat", [token, x], "tokens", axis=1)
    x = graph.op("Add", [x, graph.constant(weights["positional_embedding"], "positional_embedding")], "positioned")
    if recipe.ln_pre_eps is not None:
        x = _layer_norm(graph, x, recipe.ln_pre_eps, "ln_pre", weights)
    for index, block in enumerate(recipe.blocks):
        x = _block(graph, x, block, f"transformer.resblocks.{index}", weights)
    if recipe.pool == "tok":  # the post-norm is per token: pooling first gives the same numbers
        pooled = graph.op("Gather", [x, graph.constant(np.array(0, np.int64), "index")], "pooled", axis=1)
        pooled = _layer_norm(graph, pooled, recipe.ln_post_eps, "ln_post", weights)
    else:
        if not recipe.final_ln_after_pool:
            x = _layer_norm(graph, x, recipe.ln_post_eps, "ln_post", weights)
        patches = graph.op("Slice", [x, graph.constant(np.array([1], np.int64), "start"),
                                     graph.constant(np.array([2**62], np.int64), "end"),
                                     graph.constant(np.array([1], np.int64), "axis")], "patch_tokens")
        pooled = graph.op("ReduceMean", [patches], "pooled", axes=[1], keepdims=0)
        if recipe.final_ln_after_pool:
            pooled = _layer_norm(graph, pooled, recipe.ln_post_eps, "ln_post", weights)
    features = graph.op("MatMul", [pooled, graph.constant(weights["proj"], "proj")], "features")
    graph.nodes.append(helper.make_node("Identity", [features], ["features"], name="output"))
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, *recipe.image_size])]
    outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", recipe.output_dim])]
    model = helper.make_model(
        helper.make_graph(graph.nodes, "open_clip_vit", inputs, outputs),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)], producer_name="mmsearch")
    model.ir_version = 8  # what onnxruntime >= 1.17 reads
    arrays = graph.fill(model.graph, held)  # the weights last: make_graph/make_model would copy them
    return model, arrays
