"""The int8 graph (retrieval.models.int8_graph): its arithmetic, and the same vectors on a CPU without VNNI.

The emulated test runs the image tower's int8 graph under `qemu-x86_64 -cpu Haswell` (AVX2, no
AVX-512, no VNNI: Debian's qemu-user) and skips where qemu-x86_64 is not installed.
"""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.models.int8_graph import WEIGHT_MAX, quantise_matmuls, quantise_weight

ROOT = Path(__file__).resolve().parents[1]


def _linear_graph(rng, use_gemm: bool):
    """x (B, 16) -> MatMul + bias Add -> Relu -> Gemm(transB) or MatMul -> y (B, 8), weights as initializers."""
    from onnx import TensorProto, helper, numpy_helper

    first, bias = rng.normal(0, 0.3, (16, 32)).astype(np.float32), rng.normal(0, 0.1, 32).astype(np.float32)
    second = rng.normal(0, 0.3, (8, 32) if use_gemm else (32, 8)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["b1", "h"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"])]
    nodes.append(helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1) if use_gemm
                 else helper.make_node("MatMul", ["r", "w2"], ["y"]))
    initializers = [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(bias, "b1"),
                    numpy_helper.from_array(second, "w2")]
    if use_gemm:
        initializers.append(numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b2"))
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _int8_reference(x: np.ndarray, weight: np.ndarray, per_column: bool) -> np.ndarray:
    """x @ weight the way DynamicQuantizeMatMul computes it: x to uint8 with a per-call scale and zero
    point (ONNX DynamicQuantizeLinear), the weight to 7 bits, exact integer sums, then rescaled."""
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    x_scale = (high - low) / 255
    zero = np.clip(np.rint(-low / x_scale), 0, 255)
    x_q = np.clip(np.rint(x / x_scale) + zero, 0, 255)
    w_q, w_scale = quantise_weight(weight, per_column)
    sums = (x_q - zero).astype(np.int64) @ w_q.astype(np.int64)
    return (sums * (x_scale * w_scale)).astype(np.float32)


@pytest.mark.parametrize("use_gemm", [False, True], ids=["matmul", "gemm"])
@pytest.mark.parametrize("per_column", [False, True], ids=["per-tensor", "per-column"])
def test_quantised_graph_computes_the_integer_sums_it_promises(use_gemm, per_column):
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    model = _linear_graph(rng, use_gemm)
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    x = rng.normal(0, 1, (20, 16)).astype(np.float32)
    expected = _run(model, x)
    assert quantise_matmuls(model, per_column=per_column) == 2
    ops = [node.op_type for node in model.graph.node]
    assert ops == ["DynamicQuantizeMatMul", "Relu", "DynamicQuantizeMatMul"]  # the bias Add folded in, Gemm replaced
    assert not {init.name for init in model.graph.initializer} & {"w1", "w2"}  # the float weights are gone
    for init in model.graph.initializer:
        if init.name.endswith(".int7"):
            values = numpy_helper.to_array(init)
            assert values.dtype == np.int8 and np.abs(values).max() == WEIGHT_MAX
    got = _run(model, x)
    # layer by layer in numpy: the same numbers, to float rounding
    hidden = np.maximum(_int8_reference(x, weights["w1"], per_column) + weights["b1"], 0)
    second = weights["w2"].T if use_gemm else weights["w2"]
    by_hand = _int8_reference(hidden, second, per_column) + (weights["b2"] if use_gemm else 0)
    np.testing.assert_allclose(got, by_hand, rtol=1e-4, atol=1e-4)
    cosines = (got * expected).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() > 0.99  # and close to the float graph


def test_weight_quantisation_scales_per_tensor_or_per_column():
    weight = np.array([[0.5, -0.01], [-1.0, 0.02]], dtype=np.float32)
    values, scale = quantise_weight(weight, per_column=False)
    assert scale.shape == () and scale == pytest.approx(1.0 / WEIGHT_MAX)
    np.testing.assert_array_equal(values, [[32, -1], [-64, 1]])
    values, scale = quantise_weight(weight, per_column=True)
    np.testing.assert_allclose(scale, [1.0 / WEIGHT_MAX, 0.02 / WEIGHT_MAX], rtol=1e-6)
    np.testing.assert_array_equal(values, [[32, -32], [-64, 64]])  # the small column keeps its 7 bits
    values, scale = quantise_weight(np.zeros((3, 2), np.float32), per_column=True)  # no division by zero
    assert np.isfinite(scale).all() and not values.any()


def test_a_graph_without_constant_weights_is_left_alone():
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [4, 4]) for name in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])])
    model = helper.make_model(graph)
    assert quantise_matmuls(model) == 0 and [node.op_type for node in model.graph.node] == ["MatMul"]
    assert all(opset.domain != "com.microsoft" for opset in model.opset_import)


QEMU = shutil.which("qemu-x86_64")
EMULATED_PROBE = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from retrieval.models.fast_image import OnnxImageEncoder, check_pixels
from retrieval.models.int8_graph import int8_sums_saturate
print("saturates", int8_sums_saturate())
np.save(sys.argv[3], OnnxImageEncoder(sys.argv[2], None, "onnx-int8").embed_pixels(check_pixels(int(sys.argv[4]))))
"""


@pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64", reason="needs qemu-x86_64 (Debian qemu-user) on x86_64")
def test_int8_image_tower_gives_the_same_vectors_on_a_cpu_without_vnni(tmp_path, tiny_model):
    """The export's int8 graph, made and checked on this CPU, run under an emulated Haswell (AVX2 only):
    the emulated CPU's int8 kernel saturates (so the test means something there), the vectors are this
    CPU's and they pass the export check there too."""
    from retrieval.models import fast_image

    folder = tmp_path / "image_encoder"
    encoder = fast_image.build_image_encoder(tiny_model, "onnx-int8", folder)
    assert encoder.precision == "onnx-int8"
    size = int(tiny_model.preprocess.image_size)
    native = encoder.embed_pixels(fast_image.check_pixels(size))
    out = tmp_path / "emulated.npy"
    done = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, "-c", EMULATED_PROBE, str(ROOT),
                           str(folder / fast_image.INT8_NAME), str(out), str(size)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "saturates True" in done.stdout  # the AVX2 kernel ran, not this CPU's VNNI one
    emulated = np.load(out)
    np.testing.assert_allclose(emulated, native, atol=1e-5)  # the same integer sums: the same vectors
    reference = np.load(folder / fast_image.REFERENCE_NAME)
    assert (emulated * reference).sum(axis=1).min() >= fast_image.MIN_INT8_COSINE
