"""Unit vectors of ONNX image graphs on a few saved inputs, one .npy per graph, for comparing CPU kinds.

Reads INPUTS (an .npz with `check` and `jpegs` arrays, as `bench_int8_levers.py` writes in its
graphs/ folder), embeds the first --check check_pixels and --jpegs JPEGs with each GRAPHS/NAME.onnx
and saves GRAPHS/LABEL-NAME.npy as each finishes, so a slow emulated run keeps what it finished.
Run it once natively and once under `qemu-x86_64 -cpu Haswell` (AVX2 only), then compare with
--compare:

    .venv/bin/python bench/graph_vectors.py /tmp/mms-int8-levers/graphs native fp32 int7-per-column dynamic
    qemu-x86_64 -cpu Haswell .venv/bin/python bench/graph_vectors.py /tmp/mms-int8-levers/graphs emulated int7-per-column dynamic
    .venv/bin/python bench/graph_vectors.py /tmp/mms-int8-levers/graphs --compare native emulated
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def embed(graphs: Path, label: str, names: list[str], check: int, jpegs: int) -> None:
    import onnxruntime

    from retrieval.models.int8_graph import int8_sums_saturate

    inputs = np.load(graphs / "inputs.npz")
    pixels = np.concatenate([inputs["check"][:check], inputs["jpegs"][:jpegs]])
    print(label, "int8 sums saturate:", int8_sums_saturate(), flush=True)
    for name in names:
        started = time.perf_counter()
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(str(graphs / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {"pixels": pixels})
        np.save(graphs / f"{label}-{name}.npy", out / np.linalg.norm(out, axis=1, keepdims=True))
        print(label, name, f"{time.perf_counter() - started:.1f} s", flush=True)


def compare(graphs: Path, native: str, other: str, check: int) -> dict:
    """Least cosines: each graph to the native fp32 vectors (check / JPEGs), natively and on `other`,
    and `other` to native for the same graph."""
    reference = np.load(graphs / f"{native}-fp32.npy")
    out = {}
    for path in sorted(graphs.glob(f"{native}-*.npy")):
        name = path.stem[len(native) + 1:]
        mine = np.load(path)
        row = {}
        for label, vectors in ((native, mine), (other, None)):
            if vectors is None:
                if not (graphs / f"{other}-{name}.npy").is_file():
                    continue
                vectors = np.load(graphs / f"{other}-{name}.npy")
                row[f"{other}_vs_{native}"] = round(float((vectors * mine).sum(axis=1).min()), 7)
            cosines = (vectors * reference).sum(axis=1)
            row[f"{label}_vs_fp32"] = [round(float(cosines[:check].min()), 5), round(float(cosines[check:].min()), 5)]
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", type=Path)
    parser.add_argument("label", nargs="?", default="native")
    parser.add_argument("names", nargs="*")
    parser.add_argument("--check", type=int, default=4, help="check_pixels inputs embedded")
    parser.add_argument("--jpegs", type=int, default=2, help="decoded JPEGs embedded")
    parser.add_argument("--compare", nargs=2, metavar=("NATIVE", "OTHER"))
    args = parser.parse_args()
    if args.compare:
        print(json.dumps(compare(args.graphs, *args.compare, args.check), indent=1))
    else:
        embed(args.graphs, args.label, args.names, args.check, args.jpegs)


if __name__ == "__main__":
    main()
