"""ONNX graphs whose large weights stay numpy arrays beside the protobuf instead of inside it.

A graph written from a checkpoint (`retrieval.models.vit_onnx`) was filled with its weights (a copy),
serialised (a second copy, 352 MB for ViT-B-32) and parsed again by onnxruntime (a third) only to
run eight check images once and be quantised: seconds of a first index run's model set-up
(docs/BENCHMARKS.md, "A first run without torch or open_clip"). Held
here, each large constant is declared as external data (`tensor.data_location = EXTERNAL`, a
location no file has) and handed to onnxruntime as an OrtValue over the array itself
(`SessionOptions.add_external_initializers`); quantising reads the arrays (`array_of`), and
`materialise` copies them in only where a self-contained graph is written (the int8 graph's
remaining float constants, an fp32 graph kept on disk).
"""
from __future__ import annotations

import numpy as np

LOCATION = "mmsearch-held-in-memory"  # never read: onnxruntime gets the arrays themselves
MIN_BYTES = 1 << 16  # smaller constants (norms, biases, shapes) go into the protobuf as usual


def hold(tensor) -> None:
    """Declare `tensor` (a TensorProto with name, type and dims set) as held outside the protobuf."""
    from onnx import TensorProto

    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", LOCATION


def is_held(tensor) -> bool:
    from onnx import TensorProto

    return tensor.data_location == TensorProto.EXTERNAL and any(
        entry.key == "location" and entry.value == LOCATION for entry in tensor.external_data)


def array_of(tensor, arrays: dict | None) -> np.ndarray:
    """The values of an initializer, held or not."""
    from onnx import numpy_helper

    if arrays is not None and is_held(tensor):
        return arrays[tensor.name]
    return numpy_helper.to_array(tensor)


def materialise(model, arrays: dict) -> None:
    """Copy every held initializer of `model` (in place) into the protobuf: a self-contained graph."""
    for tensor in model.graph.initializer:
        if is_held(tensor):
            del tensor.external_data[:]
            tensor.ClearField("data_location")  # as a tensor filled in from the start: the same bytes
            tensor.raw_data = arrays[tensor.name].tobytes()


def session(model, arrays: dict, threads: int | None = None, *, one_shot: bool = False, options=None):
    """An onnxruntime session of `model` (a ModelProto) with its held initializers taken from `arrays`
    (onnxruntime runs on that memory: the session keeps the arrays alive). `one_shot`: no weight pre-packing (a session run once);
    `options`: SessionOptions to start from (for one that also writes its optimised graph)."""
    import onnxruntime

    if options is None:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if one_shot:
        options.add_session_config_entry("session.disable_prepacking", "1")
    names = [tensor.name for tensor in model.graph.initializer if is_held(tensor)]
    values = [onnxruntime.OrtValue.ortvalue_from_numpy(arrays[name]) for name in names]
    if names:
        options.add_external_initializers(names, values)
    made = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    made.held_arrays = (values, [arrays[name] for name in names])  # onnxruntime runs on this memory: kept alive
    return made
