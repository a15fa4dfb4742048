"""One `torch.onnx.export` at a time in a process.

The TorchScript exporter keeps global state (`torch.onnx._globals.GLOBALS.in_onnx_export`): a
second export started while one runs, as the text export on its own thread beside the image tower's
(retrieval.text_export_job) would, fails with "GLOBALS.in_onnx_export must be False" and that tower
falls back to torch. Every call site takes this lock.
"""
from __future__ import annotations

import threading

TRACER_LOCK = threading.Lock()
