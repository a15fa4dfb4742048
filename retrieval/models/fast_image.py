"""Faster CPU image towers: int8 and ONNX Runtime variants of `ImageEncoder.embed_pixels`.

Precisions (measured on 2 cores, ViT-B-32-256, docs/BENCHMARKS.md "Throughput (issue 4)"):
- ``fp32``       the plain torch tower (the reference).
- ``bf16``       torch autocast to bfloat16: slower than fp32 on this CPU; kept for comparison.
- ``int8``       torch dynamic int8 quantisation of the nn.Linear layers (attention projections
                 of nn.MultiheadAttention stay fp32).
- ``onnx``       the tower exported to ONNX, run by onnxruntime in fp32.
- ``onnx-int8``  that export with onnxruntime's dynamic int8 quantisation (every MatMul with a
                 constant weight): the fastest, embedding cosine vs fp32 >= 0.999 measured
                 (random weights); the CPU default.

An ONNX export is written once per model into a cache folder (the index folder's
`image_encoder/`), keyed by the model fingerprint, staged and renamed atomically. Anything that
fails on the way (an architecture the exporter cannot take, onnxruntime missing) falls back to the
torch tower with a warning: a slower index, never a failed one. A GPU always runs the plain tower.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8", "onnx", "onnx-int8")
DEFAULT_CPU_PRECISION = "onnx-int8"
MIN_INT8_COSINE = 0.995  # least cosine to fp32 on check_pixels for the int8 export to be used
META_NAME = "image_encoder.json"
FORMAT = "mmsearch-onnx-image/1"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        from indexer.errors import MmsearchError

        raise MmsearchError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def _normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


class TorchImageEncoder:
    """fp32 / bf16 / int8 torch tower with the same interface as ImageEncoder."""

    def __init__(self, tower, preprocess, precision: str):
        import torch

        self.preprocess = preprocess
        self.device = "cpu"
        self.precision = precision
        tower = tower.to("cpu").eval()
        if precision == "int8":
            # not the attention pool of a ModifiedResNet: it reads q_proj.bias etc. as tensors
            linears = {name for name, module in tower.named_modules()
                       if type(module) is torch.nn.Linear and "attnpool" not in name.split(".")}  # not MHA out_proj
            tower = torch.ao.quantization.quantize_dynamic(tower, linears, dtype=torch.qint8)
        self.tower = tower

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        import contextlib

        import torch

        batch = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16" else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return _normalise(self.tower(batch).float().numpy())

    def embed_images(self, images) -> np.ndarray:
        from indexer.media.preprocess import to_model_input

        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        return self.embed_pixels(np.stack([to_model_input(image, self.preprocess) for image in images]))


class OnnxImageEncoder(TorchImageEncoder):
    """The exported tower on onnxruntime (fp32 or dynamic int8)."""

    def __init__(self, onnx_path: Path, preprocess, precision: str, threads: int | None = None):
        import onnxruntime

        self.preprocess = preprocess
        self.device = "cpu"
        self.precision = precision
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        (features,) = self.session.run(["features"], {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})
        return _normalise(features)


def export_image_tower(tower, image_size: int, folder: Path, fingerprint: str) -> Path:
    """fp32 and dynamic-int8 ONNX files of `tower` in `folder` (staged, then renamed)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = Path(folder)
    staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    example = torch.zeros(1, 3, image_size, image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tower.to("cpu").eval(), (example,), str(staging / "image.onnx"), input_names=["pixels"],
                          output_names=["features"], dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=17, dynamo=False)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint through the root logger
        try:
            # MatMul only: int8 convolutions (ConvInteger) were slower than fp32 and drifted to cosine
            # 0.990 on the bundled ResNet tower; a ViT is nearly all MatMul
            quantize_dynamic(str(staging / "image.onnx"), str(staging / "image-int8.onnx"), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"])
        finally:
            root.setLevel(level)
    cosine = int8_agreement(staging, image_size)
    (staging / META_NAME).write_text(json.dumps({"format": FORMAT, "fingerprint": fingerprint, "image_size": image_size,
                                                 "int8_min_cosine": cosine}))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    return folder


def check_pixels(image_size: int, count: int = 8, seed: int = 0) -> np.ndarray:
    """Photo-like model inputs (smooth colour gradients + noise, CLIP-normalised) for drift checks."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1.5, 1.5, image_size, dtype=np.float32)
    out = np.empty((count, 3, image_size, image_size), dtype=np.float32)
    for index in range(count):
        for channel in range(3):
            a, b = rng.uniform(-1, 1, 2)
            out[index, channel] = a * ramp[None, :] + b * ramp[:, None] + rng.normal(0, 0.3, (image_size, image_size))
    return out


def int8_agreement(folder: Path, image_size: int) -> float:
    """Least cosine between the int8 and fp32 exports' vectors on check_pixels."""
    pixels = check_pixels(image_size)
    plain = OnnxImageEncoder(Path(folder) / "image.onnx", None, "onnx").embed_pixels(pixels)
    quantised = OnnxImageEncoder(Path(folder) / "image-int8.onnx", None, "onnx-int8").embed_pixels(pixels)
    return float((plain * quantised).sum(axis=1).min())


def int8_cosine(folder: Path) -> float:
    """The export's recorded int8-vs-fp32 agreement; an export made before it was recorded is
    checked now (seconds, once) and the figure added to its metadata."""
    meta = exported_meta(folder)
    if "int8_min_cosine" in meta:
        return float(meta["int8_min_cosine"])
    if not (folder / "image-int8.onnx").is_file():
        return 0.0
    cosine = int8_agreement(folder, int(meta.get("image_size", 224)))
    staged = folder / (META_NAME + ".tmp")
    try:
        staged.write_text(json.dumps({**meta, "int8_min_cosine": cosine}))
        os.replace(staged, folder / META_NAME)
    except OSError as exc:  # a read-only index folder: checked again next time
        log.info("cannot record the int8 check in %s: %s", folder, exc)
    return cosine


def exported_meta(folder: Path) -> dict:
    try:
        meta = json.loads((Path(folder) / META_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return meta if meta.get("format") == FORMAT else {}


def exported_fingerprint(folder: Path) -> str | None:
    return exported_meta(folder).get("fingerprint")


def build_image_encoder(model, precision: str, cache_dir: Path | None):
    """An encoder for `model`'s image tower at `precision` on the CPU (torch fallback on failure).

    With a current ONNX export this imports neither torch nor open_clip (seconds off every run).
    """
    check_precision(precision)
    card = model.card
    tower = None
    if precision.startswith("onnx"):
        try:
            if cache_dir is None:
                raise RuntimeError("no folder to keep the ONNX export in")
            if exported_fingerprint(cache_dir) != card.fingerprint:  # else the torch weights are not even read
                log.info("exporting the image tower of %s to ONNX (once per model)", card.spec.name)
                from retrieval.models.towers import IMAGE, load_tower

                tower = load_tower(card, IMAGE)
                export_image_tower(tower, int(card.preprocess.image_size), cache_dir, card.fingerprint)
            name = "image.onnx"
            if precision == "onnx-int8":
                cosine = int8_cosine(Path(cache_dir))
                if cosine >= MIN_INT8_COSINE:
                    name = "image-int8.onnx"
                else:  # this model does not take int8 well: fp32 ONNX, for the index and its queries alike
                    log.warning("int8 image tower of %s drifts (cosine %.4f < %.3f vs fp32); using fp32 ONNX",
                                card.spec.name, cosine, MIN_INT8_COSINE)
            return OnnxImageEncoder(Path(cache_dir) / name, card.preprocess, precision)
        except Exception as exc:  # noqa: BLE001 - the torch tower does the same job, slower
            log.warning("ONNX image tower unavailable (%s); using torch %s", exc,
                        "int8" if precision == "onnx-int8" else "fp32")
            shutil.rmtree(Path(cache_dir), ignore_errors=True) if cache_dir is not None else None
            precision = "int8" if precision == "onnx-int8" else "fp32"
    from retrieval.models.towers import IMAGE, load_tower

    return TorchImageEncoder(tower if tower is not None else load_tower(card, IMAGE), card.preprocess, precision)
