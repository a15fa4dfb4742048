"""Int8 weights for an ONNX graph, with the same integer arithmetic on every x86 CPU.

`quantise_matmuls` rewrites each MatMul (and Gemm) whose weight is a constant 2-D float tensor into
onnxruntime's fused `com.microsoft.DynamicQuantizeMatMul`: activations are quantised to uint8 per
call, weights once, here, to **7 bits** (-64..64, symmetric), with one scale per tensor or per output
column; a bias Add that follows is folded in. Convolutions stay float (ConvInteger was slower than
fp32 and drifted on the bundled ResNet tower, docs/BENCHMARKS.md).

Why 7 bits: CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply uint8 by int8 with `vpmaddubsw`,
which adds two products into a *saturating* int16. 2 x 255 x 127 = 64770 overflows it; 2 x 255 x 64 =
32640 does not. With 7-bit weights every kernel (VNNI, AVX2, AVX-512BW, AMX, ARM dot products) adds
the same exact integers, so the agreement measured when an export is made holds on any CPU. With
8-bit weights (onnxruntime's `quantize_dynamic` default) the random-weight ViT-B-32-256 kept cosine
0.9998 to fp32 with VNNI and fell to 0.990 on AVX2 (issue 22). `int8_sums_saturate()` tells the two
kinds of CPU apart by running one such sum.

Done here rather than by `onnxruntime.quantization.quantize_dynamic` because that runs ONNX shape
inference over the graph twice (2-3 s of a ViT-B export) and leaves the Gemm layers in float.
"""
from __future__ import annotations

import numpy as np

WEIGHT_MAX = 64  # |weight| after quantisation: 7 bits, see the module docstring
MS_DOMAIN = "com.microsoft"


def _constant_values(graph) -> dict:
    """name -> TensorProto for initializers, Constant outputs and Identity aliases of either."""
    values = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            values[node.output[0]] = node.attribute[0].t
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def quantise_weight(weight: np.ndarray, per_column: bool) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values in -WEIGHT_MAX..WEIGHT_MAX, float32 scale: scalar or one per column) of a (K, N) weight."""
    peak = np.abs(weight).max(axis=0) if per_column else np.abs(weight).max()
    scale = (np.where(peak > 0, peak, 1.0) / WEIGHT_MAX).astype(np.float32)
    values = np.rint(weight / scale)
    np.clip(values, -WEIGHT_MAX, WEIGHT_MAX, out=values)
    return values.astype(np.int8), scale


def _matmul_weight(node, values: dict, initializers: dict, arrays: dict | None = None):
    """(K, N) float32 weight, bias name or None, when `node` multiplies by a constant weight; else None."""
    from onnx import helper

    from retrieval.models.held_weights import array_of

    if node.op_type == "MatMul" and node.input[1] in initializers:
        weight, bias = array_of(initializers[node.input[1]], arrays), None
    elif node.op_type == "Gemm" and node.input[1] in initializers:
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        if attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0 or attributes.get("transA", 0):
            return None
        weight = array_of(initializers[node.input[1]], arrays)
        weight = weight.T if attributes.get("transB", 0) else weight
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias is not None and (bias not in values or list(values[bias].dims) != [weight.shape[-1]]):
            return None
    else:
        return None
    if weight.ndim != 2 or weight.dtype != np.float32:
        return None
    return weight, bias


def quantise_matmuls(model, *, per_column: bool = False, arrays: dict | None = None) -> int:
    """Rewrite `model` (an onnx.ModelProto, in place) as described above; returns the layers quantised.
    `arrays`: the values of its held initializers (retrieval.models.held_weights), which the rewritten
    graph then holds in the protobuf, self-contained."""
    from onnx import helper, numpy_helper

    graph = model.graph
    values = _constant_values(graph)
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {output.name for output in graph.output}
    nodes, added, replaced, folded = [], [], set(), set()
    for node in graph.node:
        if id(node) in folded:
            continue
        found = _matmul_weight(node, values, initializers, arrays)
        if found is None:
            nodes.append(node)
            continue
        weight, bias = found
        output = node.output[0]
        followers = consumers.get(output, [])
        if bias is None and output not in graph_outputs and len(followers) == 1 and followers[0].op_type == "Add":
            add = followers[0]
            others = [name for name in add.input if name != output]
            if len(others) == 1 and others[0] in values and list(values[others[0]].dims) == [weight.shape[1]]:
                bias, output = others[0], add.output[0]
                folded.add(id(add))
        quantised, scale = quantise_weight(weight, per_column)
        name = node.input[1]
        added += [numpy_helper.from_array(quantised, f"{name}.int7"), numpy_helper.from_array(scale, f"{name}.scale")]
        replaced.add(name)
        inputs = [node.input[0], f"{name}.int7", f"{name}.scale", ""] + ([bias] if bias else [])
        nodes.append(helper.make_node("DynamicQuantizeMatMul", inputs, [output], name=f"{node.name or output}.int7",
                                      domain=MS_DOMAIN))
    still_used = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name not in replaced or init.name in still_used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    if len(replaced) and not any(opset.domain == MS_DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    if arrays is not None:
        from retrieval.models.held_weights import materialise

        materialise(model, arrays)
    return len(added) // 2


def int8_sums_saturate() -> bool:
    """True on a CPU whose onnxruntime uint8 x int8 kernel adds products in a saturating int16 (no VNNI).

    One 1 x 64 by 64 x 1 MatMulInteger of 255s by 127s: exactly 2,072,640, or 32767 per pair of products.
    """
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    depth = 64
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8-probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, depth])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])],
        [numpy_helper.from_array(np.full((depth, 1), 127, np.int8), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (total,) = session.run(None, {"a": np.full((1, depth), 255, np.uint8)})
    return int(total[0, 0]) != 255 * 127 * depth
