"""Every int8 lever on one image-tower export: cosine to fp32 on this CPU and on an emulated one, and speed.

Exports MODEL's image tower to fp32 ONNX once (into --work), writes one quantised graph per variant
(onnxruntime.quantization; the time each takes is printed), then for every graph:
- the least / mean cosine of its vectors to the fp32 export's on `fast_image.check_pixels` (the
  inputs the export check uses) and on --jpegs real decoded JPEGs, on this CPU;
- the same under `qemu-x86_64 -cpu EMULATE` (--emulate, e.g. Haswell: AVX2 without AVX-512 or VNNI)
  against this CPU's fp32 vectors; the emulated fp32 export is listed too, as the noise floor;
- model-only images/s on --threads threads, batch --batch, variants interleaved, median of --rounds
  (this CPU only: emulated speed means nothing).

    .venv/bin/python bench/bench_int8_levers.py /tmp/ViT-B-32-256-random.json --emulate Haswell
    .venv/bin/python bench/bench_int8_levers.py bundled --emulate Haswell
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("dynamic", "dynamic-rr", "dynamic-pc", "dynamic-pc-rr", "dynamic-u8u8", "dynamic-rr-ends-fp32",
            "static-qdq-rr", "static-qdq-s8s8", "int7-per-tensor", "int7-per-column")


def quantise(variant: str, fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """One int8 graph of `fp32` (MatMuls with a constant weight; convolutions stay fp32) into `out`.

    dynamic*: onnxruntime's quantize_dynamic (uint8 activations per call, int8 weights; -rr 7-bit
    weights, -pc per channel, -u8u8 uint8 weights, -ends-fp32 the first and last MatMul kept fp32);
    static-qdq*: quantize_static in QDQ form calibrated on 16 other inputs (8 check_pixels, 8 JPEGs; uint8 or int8
    activations, per-channel weights); int7-*: mmsearch's own (Gemm layers too, bias folded)."""
    import onnx

    if variant.startswith("int7"):  # mmsearch's own (retrieval.models.int8_graph), as fast_image.INT8_RECIPES
        from retrieval.models.int8_graph import quantise_matmuls

        model = onnx.load(str(fp32))
        quantise_matmuls(model, per_column=variant == "int7-per-column")
        onnx.save(model, str(out))
        return
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    options = dict(op_types_to_quantize=["MatMul"], per_channel="-pc" in variant, reduce_range="rr" in variant)
    if variant.startswith("dynamic"):
        if variant == "dynamic-rr-ends-fp32":
            nodes = [node.name for node in onnx.load(str(fp32), load_external_data=False).graph.node
                     if node.op_type == "MatMul"]
            options["nodes_to_exclude"] = [nodes[0], nodes[-1]]
        weight = QuantType.QUInt8 if variant == "dynamic-u8u8" else QuantType.QInt8
        quantize_dynamic(str(fp32), str(out), weight_type=weight, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                         **options)
        return

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"pixels": calibration[i:i + 4]} for i in range(0, len(calibration), 4)])

        def get_next(self):
            return next(self.batches, None)

    signed = variant.endswith("s8s8")
    options["per_channel"] = True
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if signed else QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": signed}, **options)


def embed(path: Path, pixels: np.ndarray, threads: int = 0):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (features,) = session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12), session


def cosines(vectors: np.ndarray, reference: np.ndarray) -> dict:
    values = (vectors * reference).sum(axis=1)
    return {"min": round(float(values.min()), 5), "mean": round(float(values.mean()), 5)}


def child(work: Path, names: list[str]) -> None:
    """Under emulation: each graph's vectors on the saved inputs, one file per graph as it finishes."""
    inputs = np.load(work / "inputs.npz")
    for name in names:
        vectors = {key: embed(work / f"{name}.onnx", inputs[key])[0] for key in ("check", "jpegs")}
        np.savez(work / f"emulated-{name}.npz", **vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/perf-jpegs"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/mms-int8-levers"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--jpegs", type=int, default=8, help="decoded JPEGs in the cosine check (beside check_pixels)")
    parser.add_argument("--batch", type=int, default=32, help="images per timed run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--writer", choices=("torch.onnx.export", "vit_onnx"), default="torch.onnx.export",
                        help="what writes the fp32 graph: the tracer, or mmsearch's ViT writer (retrieval.models.vit_onnx)")
    parser.add_argument("--emulate", default="", help="qemu-x86_64 -cpu model for the second CPU kind (e.g. Haswell)")
    parser.add_argument("--emulate-variants", default="fp32,dynamic,dynamic-rr,int7-per-column,int7-per-tensor",
                        help="the graphs run under emulation (slow: minutes per ViT-B graph)")
    parser.add_argument("--emulate-jpegs", type=int, default=4, help="of the --jpegs images, how many the emulated run embeds")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--names", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.names.split(","))
        return

    import torch

    from indexer.media.files import read_file
    from indexer.media.image import DecodeOptions, decode_image
    from retrieval.models.encoders import load_model
    from retrieval.models.fast_image import check_pixels
    from retrieval.models.towers import IMAGE, load_tower

    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser's pre-processing hint
    shutil.rmtree(args.work, ignore_errors=True)
    graphs = args.work / "graphs"
    graphs.mkdir(parents=True)
    model = load_model(args.model, device="cpu")
    size = int(model.card.preprocess.image_size)
    tower = load_tower(model.card, IMAGE)
    started = time.perf_counter()
    if args.writer == "vit_onnx":
        from retrieval.models.vit_onnx import vit_graph

        (graphs / "fp32.onnx").write_bytes(vit_graph(tower).SerializeToString())
    else:
        torch.onnx.export(tower, (torch.zeros(1, 3, size, size),), str(graphs / "fp32.onnx"), input_names=["pixels"],
                          output_names=["features"], dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=17, dynamo=False)
    timings = {args.writer: round(time.perf_counter() - started, 2)}
    files = sorted(path for path in args.folder.iterdir() if path.suffix.lower() in (".jpg", ".jpeg"))
    decode = lambda path: decode_image(read_file(str(path)), model.card.preprocess, DecodeOptions()).pixels
    timed = np.stack([decode(path) for path in files[:args.batch]])
    inputs = {"check": check_pixels(size), "jpegs": np.stack([decode(path) for path in files[-args.jpegs:]])}
    calibration = np.concatenate([check_pixels(size, count=8, seed=1), np.stack([decode(p) for p in files[100:108]])])
    for variant in args.variants.split(","):
        started = time.perf_counter()
        try:
            quantise(variant, graphs / "fp32.onnx", graphs / f"{variant}.onnx", calibration)
        except Exception as exc:  # noqa: BLE001 - a lever that does not apply is reported, not fatal
            print(f"{variant}: {exc}", file=sys.stderr)
            continue
        timings[variant] = round(time.perf_counter() - started, 2)
    emulated_inputs = {"check": inputs["check"], "jpegs": inputs["jpegs"][:args.emulate_jpegs]}
    np.savez(args.work / "graphs" / "inputs.npz", **emulated_inputs)

    names = [path.stem for path in sorted(graphs.glob("*.onnx"))]
    reference = {key: embed(graphs / "fp32.onnx", value)[0] for key, value in inputs.items()}
    results = {name: {"quantise_s": timings.get(name, timings[args.writer])} for name in names}
    sessions = {}
    for name in names:
        for key, value in inputs.items():
            vectors, sessions[name] = embed(graphs / f"{name}.onnx", value, args.threads)
            results[name][f"cosine_{key}"] = cosines(vectors, reference[key])
    if args.emulate:
        started = time.perf_counter()
        chosen = [name for name in args.emulate_variants.split(",") if name in names]
        done = subprocess.run(["qemu-x86_64", "-cpu", args.emulate, sys.executable, __file__, "--child", str(graphs),
                               "--names", ",".join(chosen)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"emulated run failed:\n{done.stderr[-3000:]}")
        for name in chosen:
            emulated = np.load(graphs / f"emulated-{name}.npz")
            for key in inputs:
                results[name][f"cosine_{key}_{args.emulate}"] = cosines(emulated[key], reference[key][:len(emulated[key])])
        timings["emulated_s"] = round(time.perf_counter() - started, 1)
    times = {name: [] for name in names}
    for session in sessions.values():
        session.run(None, {"pixels": timed})  # warm-up
    for _ in range(args.rounds):
        for name in names:
            started = time.perf_counter()
            sessions[name].run(None, {"pixels": timed})
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["fp32"])
    for name in names:
        results[name]["images_per_s"] = round(len(timed) / statistics.median(times[name]), 2)
        results[name]["vs_fp32_onnx"] = round(base / statistics.median(times[name]), 2)
    print(json.dumps({"model": args.model, "image_size": size, "threads": args.threads, "batch": len(timed),
                      "rounds": args.rounds, "loadavg": open("/proc/loadavg").read().split()[:3],
                      "emulated_cpu": args.emulate or None, "timings_s": timings, "results": results}, indent=1))


if __name__ == "__main__":
    main()
