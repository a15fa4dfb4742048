"""OpenVINO beside onnxruntime on the graphs `bench_int8_levers.py` wrote: speed and cosine, interleaved.

OpenVINO (PyPI `openvino`) reads the ONNX graphs directly: the fp32 export, onnxruntime's dynamic
int8 graph (`dynamic`) and mmsearch's own (`int7-per-column`, com.microsoft DynamicQuantizeMatMul,
which OpenVINO 2026.4 takes), and a QDQ graph (`static-qdq-*`) when the lever bench wrote one. Every
graph is compared with onnxruntime's fp32 vectors. Runs in its own venv, which needs only numpy,
openvino and onnxruntime (no mmsearch import):

    python -m venv /tmp/ov-venv && /tmp/ov-venv/bin/pip install openvino onnxruntime numpy
    .venv/bin/python bench/bench_int8_levers.py MODEL --writer vit_onnx --work /tmp/mms-int8-levers
    flock /tmp/mms-bench.lock /tmp/ov-venv/bin/python bench/bench_openvino.py /tmp/mms-int8-levers/graphs
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", type=Path, help="the graphs/ folder of a bench_int8_levers.py run")
    parser.add_argument("--openvino", default="fp32,int7-per-column,dynamic")
    parser.add_argument("--onnxruntime", default="fp32,int7-per-column,dynamic")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import onnxruntime
    import openvino

    inputs = np.load(args.graphs / "inputs.npz")
    batch = np.concatenate([inputs["jpegs"]] * 8)[:32]
    runners, setup = {}, {}
    core = openvino.Core()
    for name in args.openvino.split(","):
        started = time.perf_counter()
        compiled = core.compile_model(core.read_model(str(args.graphs / f"{name}.onnx")), "CPU",
                                      {"INFERENCE_NUM_THREADS": str(args.threads), "INFERENCE_PRECISION_HINT": "f32"})
        runners[f"openvino {name}"] = lambda x, compiled=compiled: compiled({"pixels": x})[0]
        setup[f"openvino {name}"] = time.perf_counter() - started
    for name in args.onnxruntime.split(","):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        started = time.perf_counter()
        session = onnxruntime.InferenceSession(str(args.graphs / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        runners[f"onnxruntime {name}"] = lambda x, session=session: session.run(None, {"pixels": x})[0]
        setup[f"onnxruntime {name}"] = time.perf_counter() - started
    reference = {key: unit(runners["onnxruntime fp32"](inputs[key])) for key in ("check", "jpegs")}
    results = {}
    for name, run in runners.items():
        results[name] = {"setup_s": round(setup[name], 2)}
        for key in ("check", "jpegs"):
            results[name][f"cosine_{key}_min"] = round(float((unit(run(inputs[key])) * reference[key]).sum(axis=1).min()), 5)
        run(batch)  # warm-up
    times = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            run(batch)
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["onnxruntime fp32"])
    for name in runners:
        results[name]["images_per_s"] = round(len(batch) / statistics.median(times[name]), 2)
        results[name]["vs_onnxruntime_fp32"] = round(base / statistics.median(times[name]), 2)
    print(json.dumps({"openvino": openvino.__version__, "onnxruntime": onnxruntime.__version__, "threads": args.threads,
                      "batch": len(batch), "rounds": args.rounds, "loadavg": open("/proc/loadavg").read().split()[:3],
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
