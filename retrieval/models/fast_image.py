"""Faster CPU image towers: int8 and ONNX Runtime variants of `ImageEncoder.embed_pixels`.
Kept together as one module: the export, its int8 choice, the on-demand fp32 graph and the
encoders that run them share one folder layout and metadata format, read and written only here.

Precisions (measured on 2 cores, docs/BENCHMARKS.md "Throughput (issue 4)" and "int8 on every x86 CPU"):
- ``fp32``       the plain torch tower (the reference).
- ``bf16``       torch autocast to bfloat16: slower than fp32 on a ViT; kept for comparison.
- ``int8``       torch dynamic int8 quantisation of the nn.Linear layers (attention projections
                 of nn.MultiheadAttention stay fp32).
- ``onnx``       the tower exported to ONNX, run by onnxruntime in fp32.
- ``onnx-int8``  that export with int8 weights in every MatMul/Gemm (`retrieval.models.int8_graph`:
                 7-bit weights, the same integer sums on CPUs with and without VNNI); the CPU default.
                 Its activations are quantised per call, so an image embedded alone and in a batch
                 differ slightly (cosine ~0.9998-0.9999, docs/BENCHMARKS.md "int8 on every x86 CPU").

An ONNX export is written once per model into a cache folder (the index folder's `image_encoder/`),
keyed by the model fingerprint, staged and renamed atomically: a plain ViT by `retrieval.models.vit_onnx`
from its weights (no tracing; from a safetensors checkpoint with neither torch nor open_clip imported,
`checkpoint_vit`), any other tower by `torch.onnx.export`. A written ViT's fp32 graph is
kept on disk only when it is what runs (no int8 recipe passes, or `onnx` was asked for): the int8
graph is quantised from it in memory, and a later `onnx` run writes it then (352 MB and ~3 s of a
first run saved for ViT-B-32). Its int8 graph is chosen there by
measurement: each recipe of INT8_RECIPES in turn is checked against the fp32 vectors on `check_pixels`
(the torch tower's, or for a graph written from the checkpoint the fp32 graph's own: the writer's
agreement with torch is a test, tests/test_vit_onnx.py) and the first with cosine >= MIN_INT8_COSINE
is kept; when none passes, `onnx-int8` runs the fp32 graph. The metadata records the choice, every
recipe's cosine and the CPU kind it was measured on; `effective_precision` reads what really runs.
Anything that fails on the way (an architecture the exporter cannot take, onnxruntime missing) falls
back to the torch tower with a warning: a slower index, never a failed one. A GPU always runs the plain tower.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8", "onnx", "onnx-int8")
DEFAULT_CPU_PRECISION = "onnx-int8"
MIN_INT8_COSINE = 0.995  # least cosine to the fp32 vectors on check_pixels for an int8 graph to be used
MIN_FP32_COSINE = 0.9999  # the same for the fp32 graph against its reference (torch's: 1.00000; the graph's own: drift only)
META_NAME = "image_encoder.json"
FORMAT = "mmsearch-onnx-image/2"
OLDER_FORMATS = ("mmsearch-onnx-image/1",)  # fp32 graph still good; int8 graph re-made (8-bit weights drift on AVX2)
FP32_NAME = "image.onnx"
INT8_NAME = "image-int8.onnx"
REFERENCE_NAME = "check_vectors.npy"  # fp32 vectors on check_pixels (torch's or the fp32 graph's): re-checks need no fp32 run
# tried in this order at export (per-column: the more accurate, at the same speed; docs/BENCHMARKS.md)
INT8_RECIPES = {"int7-per-column": {"per_column": True}, "int7-per-tensor": {"per_column": False}}

Step = Callable[[str], None]


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


_default_threads: int | None = None  # intra-op threads of every session opened without a count; None: onnxruntime's


def cap_session_threads(threads: int | None) -> None:
    """Open later sessions with at most `threads` intra-op threads (a process on a share of a machine:
    a Ray actor given `threads` CPUs, where onnxruntime would start one thread per core of the node)."""
    global _default_threads
    _default_threads = threads


def _session(graph: Path | bytes, threads: int | None = None):
    """An image-tower session. Its idle intra-op threads wait without spinning: an index run's decode
    threads (JPEG decode, resize, the text test) need the same cores between the tower's operators;
    every round of an interleaved steady re-index went faster so (medians 5.64 -> 5.42 s on 200
    JPEGs, 2 cores), for 4-6 ms more on one image embedded alone (docs/BENCHMARKS.md "Image sessions
    without spinning")."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    threads = threads or _default_threads
    if threads:
        options.intra_op_num_threads = threads
    source = graph if isinstance(graph, bytes) else str(graph)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxImageEncoder(TorchImageEncoder):
    """The exported tower on onnxruntime. `precision` is what runs: "onnx" (fp32 graph) or "onnx-int8";
    `graph` the file it runs (`session`, when given, is that file already open)."""

    def __init__(self, graph: Path, preprocess, precision: str, threads: int | None = None, session=None):
        self.preprocess = preprocess
        self.device = "cpu"
        self.precision = precision
        self.graph = Path(graph)
        self.session = session if session is not None else _session(self.graph, threads)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        (features,) = self.session.run(["features"], {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})
        return _normalise(features)


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


def cpu_kind() -> str:
    """How this CPU's onnxruntime adds uint8 x int8 products: "int8-exact" (VNNI and most others) or
    "int8-saturating" (x86 without VNNI: AVX2, AVX-512 without VNNI). Recorded beside each check."""
    from retrieval.models.int8_graph import int8_sums_saturate

    return "int8-saturating" if int8_sums_saturate() else "int8-exact"


def choose_int8_graph(fp32_graph, reference: np.ndarray, image_size: int, *, parsed=None,
                      on_step: Step | None = None, arrays: dict | None = None) -> tuple[dict, bytes | None, object]:
    """Quantise `fp32_graph` (a serialised ONNX model, or a function that returns a fresh ModelProto of
    it; `parsed`, when given, is it as a ModelProto, which the first recipe then rewrites in place)
    by each recipe in turn until one agrees with `reference` (the fp32 unit vectors on
    check_pixels) to MIN_INT8_COSINE. `arrays`: the values of the graph's held initializers
    (retrieval.models.held_weights); each int8 graph is self-contained.

    Returns (the metadata entry, the chosen graph's bytes or None, its open session or None). The entry
    is {"recipe": name or None, "min_cosine": its least cosine or None, "tried": {recipe: cosine},
    "cpu": cpu_kind(), "seconds": {...}}.
    """
    import onnx

    from retrieval.models.int8_graph import quantise_matmuls

    pixels = check_pixels(image_size, count=len(reference))
    tried, seconds = {}, {}
    for recipe, options in INT8_RECIPES.items():
        if on_step:
            on_step(f"int8 image tower: quantising ({recipe})")
        started = time.perf_counter()
        if parsed is not None:
            model, parsed = parsed, None
        else:
            model = fp32_graph() if callable(fp32_graph) else onnx.load_from_string(fp32_graph)
        layers = quantise_matmuls(model, **options, arrays=arrays)
        if not layers:  # nothing to quantise: the int8 graph would be the fp32 one
            break
        graph = model.SerializeToString()
        del model
        seconds[f"quantise {recipe}"] = round(time.perf_counter() - started, 3)
        if on_step:
            on_step(f"int8 image tower: checking against fp32 ({recipe})")
        started = time.perf_counter()
        session = _session(graph)
        (features,) = session.run(["features"], {"pixels": pixels})
        cosine = float((_normalise(features) * reference).sum(axis=1).min())
        seconds[f"check {recipe}"] = round(time.perf_counter() - started, 3)
        tried[recipe] = round(cosine, 6)
        if cosine >= MIN_INT8_COSINE:
            return ({"recipe": recipe, "min_cosine": tried[recipe], "tried": tried, "cpu": cpu_kind(),
                     "seconds": seconds}, graph, session)
        log.info("int8 recipe %s drifts (cosine %.4f < %.3f vs fp32)", recipe, cosine, MIN_INT8_COSINE)
    return {"recipe": None, "min_cosine": None, "tried": tried, "cpu": cpu_kind(), "seconds": seconds}, None, None


def _fp32_graph(tower, image_size: int, path: Path):
    """The tower's fp32 graph and what wrote it: (a function returning a fresh ModelProto of it, that
    ModelProto, "vit_onnx") from the ViT writer (retrieval.models.vit_onnx: no tracing, nothing
    written yet) where it applies, else (its bytes, None, "torch.onnx.export") traced into `path`."""
    import torch

    from retrieval.models.vit_onnx import tower_graph, unsupported

    why_not = unsupported(tower)
    if why_not is None:
        return (lambda: tower_graph(tower)), tower_graph(tower), "vit_onnx"
    log.debug("image tower traced by torch.onnx.export: %s", why_not)
    from retrieval.models.tracer import TRACER_LOCK

    with TRACER_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tower, (torch.zeros(1, 3, image_size, image_size),), str(path),
                          input_names=["pixels"], output_names=["features"],
                          dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, opset_version=17, dynamo=False)
    return path.read_bytes(), None, "torch.onnx.export"


def export_image_tower(tower, image_size: int, folder: Path, fingerprint: str, *, on_step: Step | None = None,
                       keep_fp32: bool = False):
    """The int8 ONNX graph of `tower` in `folder` (staged, then renamed), and its fp32 graph where
    that is what runs (no int8 recipe passes), `keep_fp32` asks for it, or the tracer wrote it.

    Returns (folder, open session of the chosen int8 graph or None): the caller's first encoder can
    use that session instead of opening the graph again.
    """
    import torch

    tower = tower.to("cpu").eval()

    def fp32_graph(staging: Path):
        return _fp32_graph(tower, image_size, staging / FP32_NAME)

    def reference(graph, parsed) -> np.ndarray:
        with torch.inference_mode():
            return _normalise(tower(torch.from_numpy(check_pixels(image_size))).float().numpy())

    return _export(fp32_graph, reference, lambda staging, graph: write_fp32_graph(tower, staging), image_size, folder,
                   fingerprint, on_step=on_step, keep_fp32=keep_fp32, reference_of="torch")


def checkpoint_vit(card):
    """(recipe, float32 weights) of the card's image tower, read from its safetensors checkpoint with
    neither torch nor open_clip (retrieval.models.tower_weights, retrieval.models.vit_onnx). Raises
    ValueError (tower_weights.NotReadable among them) when the tower is not a plain ViT or its
    weights are not in such a file: the caller then builds it in torch."""
    from retrieval.models.tower_weights import IMAGE, tower_arrays
    from retrieval.models.vit_onnx import vit_recipe_from_cfg

    recipe = vit_recipe_from_cfg(card.model_cfg)  # a config it does not know costs no read
    if recipe.image_size != (int(card.preprocess.image_size),) * 2:
        raise ValueError(f"the tower takes {recipe.image_size} pixels, the preprocessing gives {card.preprocess.image_size}")
    return recipe, tower_arrays(card, IMAGE)


def export_checkpoint_vit(recipe, weights: dict, folder: Path, fingerprint: str, *, on_step: Step | None = None,
                          keep_fp32: bool = False):
    """`export_image_tower` for a plain ViT given as its recipe and weights (`checkpoint_vit`): no torch,
    and the weights never copied into a protobuf that is not kept (retrieval.models.held_weights). Its
    int8 graph is checked against the fp32 graph's own vectors (the writer's agreement with open_clip's
    torch tower is what tests/test_vit_onnx.py checks, per configuration). `weights` is emptied."""
    from onnx import ModelProto

    from retrieval.models import held_weights
    from retrieval.models.vit_onnx import held_vit_graph

    image_size = int(recipe.image_size[0])
    held: dict = {}

    def fp32_graph(staging: Path):
        parsed, held["arrays"] = held_vit_graph(recipe, weights)
        weights.clear()  # the held arrays stand in for them (transposed where the graph multiplies)
        template = parsed.SerializeToString()  # no weights in it: a fresh copy per int8 recipe costs nothing

        def fresh():
            model = ModelProto()
            model.ParseFromString(template)
            return model

        return fresh, parsed, "vit_onnx"

    def reference(graph, parsed) -> np.ndarray:
        session = held_weights.session(parsed, held["arrays"], _default_threads, one_shot=True)
        (features,) = session.run(["features"], {"pixels": check_pixels(image_size)})
        return _normalise(features)

    def write_fp32(staging: Path, graph) -> None:
        model = graph()
        held_weights.materialise(model, held["arrays"])
        _write_atomically(staging / FP32_NAME, model.SerializeToString())

    return _export(fp32_graph, reference, write_fp32, image_size, folder, fingerprint, on_step=on_step,
                   keep_fp32=keep_fp32, reference_of="fp32 graph", arrays=lambda: held["arrays"])


def _export(fp32_graph, reference, write_fp32, image_size: int, folder: Path, fingerprint: str, *,
            on_step: Step | None, keep_fp32: bool, reference_of: str, arrays=lambda: None):
    """The export both writers share: `fp32_graph(staging)` -> (graph, parsed, writer) as `_fp32_graph`
    gives; `reference(graph, parsed)` -> unit vectors of check_pixels (`reference_of`: "torch" for
    the torch tower's, "fp32 graph" for the graph's own); `write_fp32(staging, graph)` writes a graph
    that was only kept in memory; `arrays()`: the graph's held weights (retrieval.models.held_weights)."""
    folder = Path(folder)
    staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    session = None
    try:
        if on_step:
            on_step("image tower: writing the ONNX graph (once per model)")
        started = time.perf_counter()
        graph, parsed, writer = fp32_graph(staging)
        seconds = {writer: round(time.perf_counter() - started, 3)}
        started = time.perf_counter()
        vectors = reference(graph, parsed)
        np.save(staging / REFERENCE_NAME, vectors)
        seconds["reference"] = round(time.perf_counter() - started, 3)
        entry, int8_graph, session = choose_int8_graph(graph, vectors, image_size, parsed=parsed, on_step=on_step,
                                                       arrays=arrays())
        del parsed
        entry["seconds"] = {**seconds, **entry["seconds"]}
        if int8_graph is not None:
            (staging / INT8_NAME).write_bytes(int8_graph)
        if writer == "vit_onnx" and (int8_graph is None or keep_fp32):
            started = time.perf_counter()
            write_fp32(staging, graph)
            entry["seconds"]["fp32 written"] = round(time.perf_counter() - started, 3)
        del graph
        _write_meta(staging, {"format": FORMAT, "fingerprint": fingerprint, "image_size": image_size,
                              "fp32": {"writer": writer, "reference": reference_of}, "int8": entry})
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder, session


def _write_atomically(path: Path, data: bytes) -> None:
    staged = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        staged.write_bytes(data)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def write_fp32_graph(tower, folder: Path) -> Path:
    """A ViT's fp32 graph written into `folder` (staged, then renamed): at export where it is what runs,
    or later, the first time something runs it (`--precision onnx`) beside an int8 graph. `tower` is
    a built torch tower, or (recipe, weights) as `checkpoint_vit` reads them."""
    from retrieval.models.vit_onnx import tower_graph, vit_graph

    graph = vit_graph(*tower) if isinstance(tower, tuple) else tower_graph(tower.to("cpu").eval())
    path = Path(folder) / FP32_NAME
    _write_atomically(path, graph.SerializeToString())
    return path


def checked_fp32_graph(folder: Path, meta: dict) -> Path:
    """The export's fp32 graph, checked once against the reference vectors before it is
    first run (the default path never runs it: the int8 graph's check stands for both there).
    Raises RuntimeError when it does not agree (cosine < MIN_FP32_COSINE)."""
    path = folder / FP32_NAME
    if "min_cosine" in meta.get("fp32", {}) or not (folder / REFERENCE_NAME).is_file():
        return path  # checked already, or an older export with nothing to check against
    reference = np.load(folder / REFERENCE_NAME)
    vectors = OnnxImageEncoder(path, None, "onnx").embed_pixels(check_pixels(int(meta["image_size"]), count=len(reference)))
    cosine = float((vectors * reference).sum(axis=1).min())
    if cosine < MIN_FP32_COSINE:
        raise RuntimeError(f"the fp32 ONNX graph disagrees with its reference vectors (cosine {cosine:.5f})")
    try:
        _write_meta(folder, {**meta, "fp32": {**meta.get("fp32", {}), "min_cosine": round(cosine, 6)}})
    except OSError as exc:  # a read-only index folder: checked again next time
        log.info("cannot record the fp32 check in %s: %s", folder, exc)
    return path


def _write_meta(folder: Path, meta: dict) -> None:
    staged = folder / (META_NAME + ".tmp")
    staged.write_text(json.dumps(meta, indent=1))
    os.replace(staged, folder / META_NAME)


def upgrade_int8_choice(folder: Path, meta: dict, *, on_step: Step | None = None) -> tuple[dict, object]:
    """An export from an older version (no "int8" entry; its int8 graph, if any, has 8-bit weights):
    choose its int8 graph now from its fp32 graph (seconds, no torch) and record the choice.

    Returns (meta, open session of the chosen graph or None); a read-only folder is left as it is and
    the choice is used by this process only.
    """
    image_size = int(meta.get("image_size", 224))
    reference_path = folder / REFERENCE_NAME
    if reference_path.is_file():
        reference = np.load(reference_path)
    else:  # the fp32 ONNX graph stands in for the torch tower (cosine 1.0000 to it, docs/BENCHMARKS.md)
        reference = OnnxImageEncoder(folder / FP32_NAME, None, "onnx").embed_pixels(check_pixels(image_size))
    entry, graph, session = choose_int8_graph((folder / FP32_NAME).read_bytes(), reference, image_size, on_step=on_step)
    meta = {**{key: value for key, value in meta.items() if key != "int8_min_cosine"}, "format": FORMAT, "int8": entry}
    try:
        np.save(folder / (REFERENCE_NAME + ".tmp.npy"), reference)
        os.replace(folder / (REFERENCE_NAME + ".tmp.npy"), reference_path)
        if graph is not None:
            (folder / (INT8_NAME + ".tmp")).write_bytes(graph)
            os.replace(folder / (INT8_NAME + ".tmp"), folder / INT8_NAME)
        else:
            (folder / INT8_NAME).unlink(missing_ok=True)
        _write_meta(folder, meta)
    except OSError as exc:  # a read-only index folder: chosen again next time
        log.info("cannot record the int8 choice in %s: %s", folder, exc)
    return meta, session


def exported_meta(folder: Path) -> dict:
    try:
        meta = json.loads((Path(folder) / META_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return meta if meta.get("format") in (FORMAT, *OLDER_FORMATS) else {}


def exported_fingerprint(folder: Path) -> str | None:
    return exported_meta(folder).get("fingerprint")


def effective_precision(folder: Path | None, precision: str = DEFAULT_CPU_PRECISION,
                        fingerprint: str | None = None) -> str | None:
    """What a CPU image encoder asked for `precision`, with its ONNX export in `folder`, runs.

    "onnx-int8" when the export's int8 graph passed its check; "onnx" when it did not (or for
    "onnx"); a torch precision is itself. None when that is not known yet: no current export in
    `folder` (of `fingerprint`, when given) or one from an older version, whose int8 graph is
    chosen the next time it is used.
    """
    if not precision.startswith("onnx"):
        return precision
    meta = exported_meta(folder) if folder is not None else {}
    if not meta or (fingerprint is not None and meta.get("fingerprint") != fingerprint):
        return None
    if precision == "onnx":
        return "onnx"
    if "int8" not in meta:
        return None
    return "onnx-int8" if meta["int8"].get("recipe") else "onnx"


def _readable_vit(card):
    """`checkpoint_vit(card)`, or None (logged) when the tower has to be built in torch."""
    from retrieval.errors import ModelNotFoundError

    try:
        return checkpoint_vit(card)
    except (ValueError, OSError) as exc:  # a tower or a file these readers do not take
        log.debug("image tower of %s through torch: %s", card.spec.name, exc)
    except ModelNotFoundError:
        raise  # weights that cannot be had (offline, not cached): the torch route could not load them either
    except Exception as exc:  # noqa: BLE001 - anything else: the torch route, which may still work
        log.warning("cannot read the image tower of %s from its checkpoint (%s); building it in torch",
                    card.spec.name, exc)
    return None


def build_image_encoder(model, precision: str, cache_dir: Path | None, *, on_step: Step | None = None):
    """An encoder for `model`'s image tower at `precision` on the CPU (torch fallback on failure).

    Its `precision` attribute says what runs: "onnx" where "onnx-int8" was asked for and no int8
    graph passed the check, "int8"/"fp32" after a torch fallback. `on_step(text)` hears each step of
    a one-time export. With a current ONNX export this imports neither torch nor open_clip.
    """
    check_precision(precision)
    card = model.card
    tower = None
    if precision.startswith("onnx"):
        try:
            if cache_dir is None:
                raise RuntimeError("no folder to keep the ONNX export in")
            folder = Path(cache_dir)
            session = None
            meta = exported_meta(folder)
            if meta.get("fingerprint") != card.fingerprint:  # else the torch weights are not even read
                log.info("exporting the image tower of %s to ONNX (once per model)", card.spec.name)
                if on_step:
                    on_step("image tower: reading the weights (once per model)")
                readable = _readable_vit(card)
                exported = False
                if readable is not None:  # from the checkpoint's arrays: neither torch nor open_clip
                    try:
                        _, session = export_checkpoint_vit(*readable, folder, card.fingerprint, on_step=on_step,
                                                           keep_fp32=precision == "onnx")
                        exported = True
                    except Exception as exc:  # noqa: BLE001 - the torch route below does the same job
                        log.warning("image tower export of %s from its checkpoint failed (%s); exporting through "
                                    "torch", card.spec.name, exc)
                    del readable
                if not exported:
                    if on_step:
                        on_step("image tower: loading the torch weights (once per model)")
                    from retrieval.models.towers import IMAGE, load_tower

                    tower = load_tower(card, IMAGE)
                    _, session = export_image_tower(tower, int(card.preprocess.image_size), folder, card.fingerprint,
                                                    on_step=on_step, keep_fp32=precision == "onnx")
                meta = exported_meta(folder)
            elif "int8" not in meta and precision == "onnx-int8":
                meta, session = upgrade_int8_choice(folder, meta, on_step=on_step)
            if precision == "onnx-int8" and meta["int8"].get("recipe"):
                return OnnxImageEncoder(folder / INT8_NAME, card.preprocess, "onnx-int8", session=session)
            if precision == "onnx-int8":  # this model does not take int8 well: fp32 ONNX, index and queries alike
                log.warning("int8 image tower of %s drifts (cosine %s < %.3f vs fp32); using fp32 ONNX",
                            card.spec.name, meta["int8"].get("tried"), MIN_INT8_COSINE)
            if not (folder / FP32_NAME).is_file():  # not kept beside a passing int8 graph: written now, once
                if on_step:
                    on_step("image tower: writing the fp32 ONNX graph (once per model)")
                readable = _readable_vit(card) if tower is None else None
                if readable is None:
                    from retrieval.models.towers import IMAGE, load_tower

                    tower = tower if tower is not None else load_tower(card, IMAGE)
                write_fp32_graph(readable or tower, folder)
                del readable
            return OnnxImageEncoder(checked_fp32_graph(folder, meta), card.preprocess, "onnx")
        except Exception as exc:  # noqa: BLE001 - the torch tower does the same job, slower
            log.warning("ONNX image tower unavailable (%s); using torch %s", exc,
                        "int8" if precision == "onnx-int8" else "fp32")
            shutil.rmtree(Path(cache_dir), ignore_errors=True) if cache_dir is not None else None
            precision = "int8" if precision == "onnx-int8" else "fp32"
    from retrieval.models.towers import IMAGE, load_tower

    return TorchImageEncoder(tower if tower is not None else load_tower(card, IMAGE), card.preprocess, precision)
