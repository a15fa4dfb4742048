"""A text encoder that runs without torch or open_clip: the text tower exported to ONNX.

A search process that only needs a text query vector pays for onnxruntime and `tokenizers`
(a fraction of a second) instead of torch and open_clip (seconds). The exported folder lives in
the index folder, records the model fingerprint it came from, and is rebuilt when that changes.

Tokenisation matches open_clip's tokenizers for ordinary text: the HF tokenizer file is reused
as is; CLIP's BPE tokenizer is rebuilt with `tokenizers` from open_clip's own vocabulary (one
difference, documented: ftfy's mojibake repair is skipped on the fast path).

The export takes any sequence length (`retrieval.models.trimmed_text`): a query runs on its real tokens
only (8 for "a photo of a red dog" instead of CLIP's 77), the same vector for ~1/10 of the work.
Each export from a torch tower is checked against that tower at full length before it is kept; a
tower that cannot be trimmed, or fails the check, is exported at its fixed context length (`"sequence":
"full"`). Exports made before this (no "sequence" key) have a fixed length too: they keep working
at full length, and `ensure_exported` replaces them the next time the index is written.

A plain CLIP text tower whose weights are in a safetensors checkpoint (an open_clip model from the
hub, a model folder) is exported with neither torch nor open_clip (`_written_from_checkpoint`: the
weights read by `retrieval.models.tower_weights`, the vocabulary by `retrieval.models.clip_vocab`,
`"weights": "checkpoint"` in the meta), straight into the optimised layout, and checked trimmed
against itself at full length (tests/test_clip_text_onnx.py checks the writer against torch);
anything else, or a graph that fails that check, goes the torch route above.

Kept together as one module: the export's writers, its checks and the encoder that reads it share one
folder layout and metadata format, read and written only here (`retrieval.models.fast_text` rewrites
an older export into the optimised layout).
"""
from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import sqlite3
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.errors import QueryError
from retrieval.models.clip_bpe import TABLES_NAME, ClipBpe, write_tables
from retrieval.models.clip_vocab import clip_tokenizer_json
from retrieval.models.token_length import needed_length

log = logging.getLogger(__name__)

META_NAME = "text_encoder.json"
ONNX_NAME = "text.onnx"
TOKENIZER_NAME = "tokenizer.json"
FORMAT = "mmsearch-onnx-text/1"
TRIMMED, FULL = "trimmed", "full"  # meta["sequence"]: any length up to the context / the context length only
CHECK_TEXTS = ("a cat", "a photo of a small red dog running on a sunny beach", "x", "word " * 200)
CHECK_ATOL = 1e-4  # on unit vectors: trimmed ONNX against the torch tower at full length
INT8_NAME = "text-int8.onnx"
MIN_INT8_COSINE = 0.995  # least cosine to the torch tower on INT8_CHECK_TEXTS for the int8 graph to be kept
INT8_CHECK_TEXTS = CHECK_TEXTS + ("a dog", "sunset over the sea", "a red car parked in a narrow street",
                                  "two children playing football in the snow", "birthday cake", "Paris at night")
PRECISIONS = ("fp32", "int8")
DATA_NAME = ONNX_NAME + ".data"  # the optimised layout's weights (retrieval.models.fast_text)
LAYOUT = "ort-extended+external-data/1"


def _whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _clip_clean(text: str) -> str:
    return _whitespace(html.unescape(html.unescape(text)).strip()).lower()


def export_text_encoder(model, folder: Path, *, trim: bool = True, int8: bool = False) -> Path:
    """Write `model`'s text tower and tokenizer to `folder` (atomically: staged, then renamed).

    With `trim` (the default) the graph takes any sequence length when the tower allows it and the
    exported graph passes the check against torch; otherwise it is the fixed-length export that
    versions before trimming wrote (`trim=False` writes exactly that, without a "sequence" key).
    With `int8`, an int8-quantised copy of the graph is written beside it when its vectors keep a
    cosine >= MIN_INT8_COSINE to the torch tower's (recorded in the meta either way).
    """
    folder = Path(folder)
    staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write_export(model, staging, trim, int8)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    return folder


def _write_export(model, staging: Path, trim: bool, int8: bool) -> None:
    if trim and not int8 and _written_from_checkpoint(model, staging):
        return
    encoder = model.text
    tokenizer = encoder.tokenizer
    text_cfg = model.card.model_cfg["text_cfg"]
    if hasattr(tokenizer, "bpe_ranks"):
        kind, context_length = "clip", int(tokenizer.context_length)
        (staging / TOKENIZER_NAME).write_text(clip_tokenizer_json(tokenizer))
        write_tables(staging / TABLES_NAME, tokenizer)
        special = {"sot": int(tokenizer.sot_token_id), "eot": int(tokenizer.eot_token_id), "pad": 0}
    elif hasattr(tokenizer, "tokenizer") and getattr(tokenizer.tokenizer, "backend_tokenizer", None) is not None:
        kind, context_length = "hf", int(tokenizer.context_length)
        hf = tokenizer.tokenizer
        (staging / TOKENIZER_NAME).write_text(hf.backend_tokenizer.to_str())
        special = {"pad": int(hf.pad_token_id or 0)}
    else:
        raise QueryError(f"cannot export tokenizer {type(tokenizer).__name__} for the fast text path")
    meta = {"format": FORMAT, "fingerprint": model.info.fingerprint, "dim": model.info.dim, "tokenizer": kind,
            "context_length": context_length, "special": special, "model": model.info.name,
            "clean": "whitespace" if kind == "hf" else "clip-lower", "hf_clean": text_cfg.get("hf_tokenizer_name") is not None}
    tower = encoder.tower.to("cpu").eval()
    trimmed = None
    if trim:
        from retrieval.models.trimmed_text import trimmable_tower

        trimmed = trimmable_tower(tower)
        # the written graph uses onnxruntime's fused Gelu, which quantize_dynamic (the int8 copy) cannot type
        writers = (_WRITER, _TRACER) if trimmed is not None and not int8 and _written(tower) is None else (_TRACER,)
        for writer in writers:
            if trimmed is None:
                break
            if writer == _WRITER:  # retrieval.models.clip_text_onnx: no tracing
                (staging / ONNX_NAME).write_bytes(_write_clip_text(tower))
            else:
                _export_graph(trimmed, tokenizer, staging / ONNX_NAME, variable_length=True)
            (staging / META_NAME).write_text(json.dumps({**meta, "sequence": TRIMMED, "writer": writer}, indent=2))
            problem = _check_trimmed(staging, tower, tokenizer)
            if not problem:
                break
            log.warning("text export of %s: trimmed graph by %s rejected (%s)%s", model.info.name, writer, problem,
                        "; tracing it instead" if writer == _WRITER else "; exporting at full length")
            if writer == _TRACER:
                trimmed = None
    if trimmed is None:
        _export_graph(tower, tokenizer, staging / ONNX_NAME, variable_length=False)
        if trim:
            meta["sequence"] = FULL
        (staging / META_NAME).write_text(json.dumps(meta, indent=2))
    if int8:
        meta = json.loads((staging / META_NAME).read_text())
        meta["int8"] = _write_int8(staging, tower, tokenizer)
        (staging / META_NAME).write_text(json.dumps(meta, indent=2))


_WRITER, _TRACER = "clip_text_onnx", "torch.onnx.export"  # meta["writer"] of a trimmed graph


def optimising_options(folder: Path, threads: int | None = None):
    """SessionOptions whose session also writes its graph, optimised (ORT_ENABLE_EXTENDED: fusions only,
    no hardware-specific layouts) with its weights in DATA_NAME, into `folder` (retrieval.models.fast_text)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(Path(folder) / ONNX_NAME)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_NAME)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    return options


def _written_from_checkpoint(model, staging: Path) -> bool:
    """Write the export into `staging` from the checkpoint's arrays, with neither torch nor open_clip
    (retrieval.models.tower_weights): a plain CLIP text tower with open_clip's default tokenizer. True when
    written and checked; False (staging emptied) when that does not apply: the torch route then runs.
    The graph is written in the optimised layout directly, by a session over the held weights (never
    serialised into a protobuf: retrieval.models.held_weights), and checked as a search opens it."""
    from retrieval.models import held_weights
    from retrieval.models.clip_text_onnx import held_text_graph, text_recipe_from_cfg
    from retrieval.models.clip_vocab import clip_vocabulary
    from retrieval.models.tower_weights import TEXT, NotReadable, tower_arrays

    card = model.card
    try:
        if card.spec.source == "open_clip" and "siglip" in (card.spec.arch or "").lower():
            raise ValueError("a SigLIP tokenizer")  # open_clip.get_tokenizer picks it by name
        recipe = text_recipe_from_cfg(card.model_cfg)
        vocabulary = clip_vocabulary(recipe.context_length)
        if len(vocabulary.encoder) > recipe.vocab_size:
            raise ValueError(f"{len(vocabulary.encoder)} tokens for an embedding of {recipe.vocab_size}")
        graph, arrays = held_text_graph(recipe, tower_arrays(card, TEXT))
    except (NotReadable, ValueError, FileNotFoundError) as exc:  # a tower or a file these readers do not take
        log.debug("text export of %s through torch: %s", model.info.name, exc)
        return False
    except Exception as exc:  # noqa: BLE001 - anything else: the torch route, which may still work
        log.warning("cannot write the text export of %s from its checkpoint (%s); exporting through torch",
                    model.info.name, exc)
        return False
    meta = {"format": FORMAT, "fingerprint": model.info.fingerprint, "dim": model.info.dim, "tokenizer": "clip",
            "context_length": recipe.context_length,
            "special": {"sot": vocabulary.sot_token_id, "eot": vocabulary.eot_token_id, "pad": 0},
            "model": model.info.name, "clean": "clip-lower", "hf_clean": False, "sequence": TRIMMED, "writer": _WRITER,
            "weights": "checkpoint", "layout": LAYOUT}
    try:
        (staging / TOKENIZER_NAME).write_text(clip_tokenizer_json(vocabulary))
        write_tables(staging / TABLES_NAME, vocabulary)
        (staging / META_NAME).write_text(json.dumps(meta, indent=2))
        # a session that only writes its optimised graph (weights in DATA_NAME) and is dropped: the check
        # then opens the written files, as every search will
        held_weights.session(graph, arrays, one_shot=True, options=optimising_options(staging, threads=1))
        del graph, arrays
        problem = _check_against_full_length(staging)
    except Exception as exc:  # noqa: BLE001 - the torch route
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        return True
    log.warning("text export of %s from its checkpoint rejected (%s); exporting through torch", model.info.name, problem)
    for path in staging.iterdir():
        path.unlink()
    return False


def _check_against_full_length(folder: Path) -> str | None:
    """Why the trimmed graph in `folder` disagrees with itself run at the full context length (None: it
    agrees), on a mixed batch and on each text alone. The writer's numbers against open_clip's torch
    tower are what tests/test_clip_text_onnx.py checks, per configuration."""
    try:
        fast = OnnxTextEncoder(folder, threads=1)
        (full,) = fast.session.run(["features"], {"tokens": fast.tokenize(CHECK_TEXTS)})
        expected = _unit(full)
        batch = fast.embed_texts(CHECK_TEXTS)
        alone = np.concatenate([fast.embed_texts([text]) for text in CHECK_TEXTS])
    except Exception as exc:  # noqa: BLE001 - any failure means: the torch route
        return f"{type(exc).__name__}: {exc}"
    if not np.isfinite(expected).all():
        return "non-finite vectors"
    error = max(float(np.abs(batch - expected).max()), float(np.abs(alone - expected).max()))
    return None if error <= CHECK_ATOL else f"max difference {error:.2e} > {CHECK_ATOL:g}"


def _written(tower) -> str | None:
    """Why the trace-free writer does not take `tower` (None: it does)."""
    from retrieval.models.clip_text_onnx import unsupported

    return unsupported(tower)


def _write_clip_text(tower) -> bytes:
    from retrieval.models.clip_text_onnx import clip_text_graph

    return clip_text_graph(tower).SerializeToString()


def _write_int8(staging: Path, tower, tokenizer) -> dict:
    """Quantise the graph's MatMul weights to int8 (dynamic) beside it; keep it only if it stays close.

    Returns the meta entry: {"file": INT8_NAME or None, "min_cosine": least cosine to the torch tower}.
    """
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint through the root logger
        quantize_dynamic(str(staging / ONNX_NAME), str(staging / INT8_NAME), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])
    finally:
        root.setLevel(level)
    with torch.inference_mode():
        expected = _unit(tower(tokenizer(list(INT8_CHECK_TEXTS)).to("cpu")).float().numpy())
    vectors = OnnxTextEncoder(staging, threads=1, precision="int8", _unchecked=True).embed_texts(INT8_CHECK_TEXTS)
    cosine = float((vectors * expected).sum(axis=1).min())
    if cosine < MIN_INT8_COSINE:
        log.warning("int8 text graph drifts (cosine %.4f < %.3f vs fp32): not kept", cosine, MIN_INT8_COSINE)
        (staging / INT8_NAME).unlink()
        return {"file": None, "min_cosine": round(cosine, 6)}
    return {"file": INT8_NAME, "min_cosine": round(cosine, 6)}


def _export_graph(module, tokenizer, path: Path, *, variable_length: bool) -> None:
    import torch

    example = tokenizer(["a photo of a cat"]).to("cpu")
    axes = {0: "batch", 1: "length"} if variable_length else {0: "batch"}
    from retrieval.models.tracer import TRACER_LOCK

    with TRACER_LOCK, warnings.catch_warnings():  # the TorchScript exporter is chatty about deprecations
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), input_names=["tokens"], output_names=["features"],
            dynamic_axes={"tokens": axes, "features": {0: "batch"}}, opset_version=17, dynamo=False,
        )


def _check_trimmed(folder: Path, tower, tokenizer) -> str | None:
    """Why the trimmed export in `folder` is wrong (None when it matches torch at full length).

    Runs a mixed batch (trimmed to its longest text) and each text alone (trimmed to its own length)
    and compares with the torch tower on the full-length tokens.
    """
    import torch

    try:
        with torch.inference_mode():
            expected = _unit(tower(tokenizer(list(CHECK_TEXTS)).to("cpu")).float().numpy())
        fast = OnnxTextEncoder(folder, threads=1)
        batch = fast.embed_texts(CHECK_TEXTS)
        alone = np.concatenate([fast.embed_texts([text]) for text in CHECK_TEXTS])
    except Exception as exc:  # noqa: BLE001 - any failure means: use the fixed-length graph
        return f"{type(exc).__name__}: {exc}"
    error = max(float(np.abs(batch - expected).max()), float(np.abs(alone - expected).max()))
    return None if error <= CHECK_ATOL else f"max difference {error:.2e} > {CHECK_ATOL:g}"


def _unit(features: np.ndarray) -> np.ndarray:
    features = features.astype(np.float32, copy=False)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def exported_fingerprint(folder: Path) -> str | None:
    try:
        meta = json.loads((Path(folder) / META_NAME).read_text())
    except (OSError, ValueError):
        return None
    return meta.get("fingerprint") if meta.get("format") == FORMAT else None


def export_sequence(folder: Path) -> str | None:
    """TRIMMED or FULL for an export with the "sequence" key; None for older ones (fixed length)."""
    return export_meta(folder).get("sequence")


def export_meta(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / META_NAME).read_text())
    except (OSError, ValueError):
        return {}


class OnnxTextEncoder:
    """Same interface as `retrieval.models.encoders.TextEncoder.embed_texts`, on onnxruntime.

    `threads`: intra-op threads (None: onnxruntime's default, one per core). `prepack=False` skips
    onnxruntime's weight pre-packing when the session is made: it opens faster and holds less
    memory, for a process that embeds one query and exits; the vectors are the same.
    `precision="int8"` runs the export's int8 graph when it has one that passed its check (else
    fp32); `self.precision` says which runs. `spin=False`: idle intra-op threads wait without spinning
    (for a long-running server whose other threads need the cores between queries).
    """

    def __init__(self, folder: Path, threads: int | None = None, prepack: bool = True, precision: str = "fp32",
                 _unchecked: bool = False, spin: bool = True):
        import onnxruntime

        folder = Path(folder)
        self.meta = json.loads((folder / META_NAME).read_text())
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if threads:  # a server answering many queries at once does better with few threads each
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not prepack:
            options.add_session_config_entry("session.disable_prepacking", "1")
        if not spin:  # idle intra-op threads sleep instead of spinning: a server's other work keeps its cores
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        int8_file = INT8_NAME if _unchecked else (self.meta.get("int8") or {}).get("file")
        self.precision = "int8" if precision == "int8" and int8_file else "fp32"
        graph = folder / (int8_file if self.precision == "int8" else ONNX_NAME)
        self.session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        # CLIP's BPE from its SQLite tables where the export has them (a few ms to open, against ~0.1 s for
        # tokenizers to build its merges: retrieval.models.clip_bpe); the tokenizers file otherwise
        self.bpe = None
        if self.meta["tokenizer"] == "clip" and (folder / TABLES_NAME).is_file():
            try:
                self.bpe = ClipBpe(folder / TABLES_NAME)
            except (sqlite3.Error, ImportError) as exc:  # a damaged file, no `regex`: the tokenizer file does it
                log.warning("tokenizer tables in %s unusable (%s); loading %s", folder, exc, TOKENIZER_NAME)
        self.tokenizer = None
        if self.bpe is None:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_NAME))
        self.context_length = int(self.meta["context_length"])
        self.trims = self.meta.get("sequence") == TRIMMED
        if self.meta["tokenizer"] == "hf":
            self.tokenizer.enable_truncation(self.context_length)
            self.tokenizer.enable_padding(length=self.context_length, pad_id=self.meta["special"]["pad"])

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens at the full context length, exactly as the torch tokenizer gives them."""
        if self.meta["tokenizer"] == "hf":
            encodings = self.tokenizer.encode_batch([_whitespace(text) for text in texts])
            return np.asarray([encoding.ids for encoding in encodings], dtype=np.int64)
        special = self.meta["special"]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            words = self.bpe.encode(_clip_clean(text)) if self.bpe is not None else \
                self.tokenizer.encode(_clip_clean(text), add_special_tokens=False).ids
            ids = [special["sot"]] + words + [special["eot"]]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = special["eot"]
            out[row, : len(ids)] = ids
        return out

    def unknown_share(self, text: str) -> float | None:
        """The share of `text`'s tokens this vocabulary does not know (None: a byte-level BPE, which
        knows every character)."""
        if self.meta["tokenizer"] != "hf":
            return None
        unk_token = json.loads(self.tokenizer.to_str())["model"].get("unk_token")
        unk = self.tokenizer.token_to_id(unk_token) if unk_token else None
        if unk is None:
            return None
        pad = self.meta["special"]["pad"]
        ids = [token for token in self.tokenizer.encode(_whitespace(text), add_special_tokens=False).ids if token != pad]
        return sum(token == unk for token in ids) / len(ids) if ids else None

    def model_input(self, texts: Sequence[str]) -> np.ndarray:
        """The tokens the graph runs on: cut after the batch's last real token when the export allows."""
        tokens = self.tokenize(texts)
        if self.trims:
            tokens = np.ascontiguousarray(tokens[:, :needed_length(tokens, self.meta["special"]["pad"])])
        return tokens

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if any(not text.strip() for text in texts):
            raise QueryError("empty text query")
        (features,) = self.session.run(["features"], {"tokens": self.model_input(texts)})
        return _unit(features)


def ensure_exported(model, folder: Path, *, int8: bool = False) -> bool:
    """Export `model`'s text tower to `folder` unless a current export of the same model is there.

    An export without "sequence" predates trimming and is replaced; with `int8`, so is one that
    never tried an int8 graph (one whose int8 graph was rejected is current). Returns True when a
    usable export exists afterwards; an export failure is logged, not raised (searches then use the
    older export when it is of this model, else the torch text tower).
    """
    if exported_fingerprint(folder) == model.info.fingerprint and export_sequence(folder) is not None \
            and (not int8 or export_meta(folder).get("int8") is not None):
        return True
    try:
        export_text_encoder(model, folder, int8=int8)
    except Exception as exc:  # noqa: BLE001 - the fast path is optional
        log.warning("could not export the text tower for fast searches: %s", exc)
        if exported_fingerprint(folder) == model.info.fingerprint:
            return True  # an older export of this model is still there and still works (at full length)
        shutil.rmtree(Path(folder), ignore_errors=True)
        return False
    return True
