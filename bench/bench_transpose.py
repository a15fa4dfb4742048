"""numpy's transpose copy against `retrieval.models.vit_onnx.transposed` (strips of rows), per weight shape of
a ViT-B-32 block; prints median milliseconds over --rounds (each on a fresh output array).

    .venv/bin/python bench/bench_transpose.py --rounds 9
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from retrieval.models.vit_onnx import transposed

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    shapes = {"mlp.c_fc (3072, 768)": (3072, 768), "mlp.c_proj (768, 3072)": (768, 3072),
              "attn.in_proj (2304, 768)": (2304, 768), "attn.out_proj (768, 768)": (768, 768)}
    out = {}
    for name, shape in shapes.items():
        weight = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        times = {"numpy ascontiguousarray(w.T)": [], "vit_onnx.transposed(w)": []}
        for _ in range(args.rounds):  # interleaved
            for label, function in (("numpy ascontiguousarray(w.T)", lambda w: np.ascontiguousarray(w.T)),
                                    ("vit_onnx.transposed(w)", transposed)):
                started = time.perf_counter()
                result = function(weight)
                times[label].append((time.perf_counter() - started) * 1000)
                assert np.array_equal(result, weight.T)
        out[name] = {label: round(statistics.median(values), 2) for label, values in times.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
