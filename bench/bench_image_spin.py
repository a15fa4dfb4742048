"""An image graph's session with and without spinning intra-op threads, the model alone: median ms of one
image (30 runs) and of a batch of 32 (3 runs), two sessions of each, alternating.

    .venv/bin/python bench/bench_image_spin.py INDEX/image_encoder/image-int8.onnx
"""
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort


def timed(session, pixels: np.ndarray, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {"pixels": pixels})
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    graph = sys.argv[1]
    size = ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).get_inputs()[0].shape[-1]
    rng = np.random.default_rng(0)
    one = rng.normal(0, 1, (1, 3, size, size)).astype(np.float32)
    batch = rng.normal(0, 1, (32, 3, size, size)).astype(np.float32)
    results = {}
    for spin in ("1", "0", "1", "0"):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        session.run(None, {"pixels": one})
        results.setdefault(spin, []).append((timed(session, one, 30), timed(session, batch, 3)))
    for spin, values in results.items():
        print("allow_spinning", spin, "one image ms", [round(v[0], 1) for v in values],
              "batch of 32 ms", [round(v[1]) for v in values])


if __name__ == "__main__":
    main()
