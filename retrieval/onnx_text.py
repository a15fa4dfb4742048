"""A text encoder that runs without torch or open_clip: the text tower exported to ONNX.

A search process that only needs a text query vector pays for onnxruntime and `tokenizers`
(a fraction of a second) instead of torch and open_clip (seconds). The exported folder lives in
the index folder, records the model fingerprint it came from, and is rebuilt when that changes.

Tokenisation matches open_clip's tokenizers for ordinary text: the HF tokenizer file is reused
as is; CLIP's BPE tokenizer is rebuilt with `tokenizers` from open_clip's own vocabulary (one
difference, documented: ftfy's mojibake repair is skipped on the fast path).
"""
from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.errors import QueryError

log = logging.getLogger(__name__)

META_NAME = "text_encoder.json"
ONNX_NAME = "text.onnx"
TOKENIZER_NAME = "tokenizer.json"
FORMAT = "mmsearch-onnx-text/1"
_CLIP_PATTERN = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _clip_clean(text: str) -> str:
    return _whitespace(html.unescape(html.unescape(text)).strip()).lower()


def _clip_tokenizer_json(simple_tokenizer) -> str:
    """open_clip's SimpleTokenizer as a `tokenizers` BPE model (same vocabulary and merges)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    merges = [pair for pair, _ in sorted(simple_tokenizer.bpe_ranks.items(), key=lambda item: item[1])]
    tokenizer = Tokenizer(models.BPE(vocab=dict(simple_tokenizer.encoder), merges=merges, end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),  # re.findall drops the spaces between matches
        pre_tokenizers.Split(Regex(_CLIP_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return tokenizer.to_str()


def export_text_encoder(model, folder: Path) -> Path:
    """Write `model`'s text tower and tokenizer to `folder` (atomically: staged, then renamed)."""
    import torch

    folder = Path(folder)
    staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    encoder = model.text
    tokenizer = encoder.tokenizer
    text_cfg = model.card.model_cfg["text_cfg"]
    if hasattr(tokenizer, "bpe_ranks"):
        kind, context_length = "clip", int(tokenizer.context_length)
        (staging / TOKENIZER_NAME).write_text(_clip_tokenizer_json(tokenizer))
        special = {"sot": int(tokenizer.sot_token_id), "eot": int(tokenizer.eot_token_id), "pad": 0}
    elif hasattr(tokenizer, "tokenizer") and getattr(tokenizer.tokenizer, "backend_tokenizer", None) is not None:
        kind, context_length = "hf", int(tokenizer.context_length)
        hf = tokenizer.tokenizer
        (staging / TOKENIZER_NAME).write_text(hf.backend_tokenizer.to_str())
        special = {"pad": int(hf.pad_token_id or 0)}
    else:
        raise QueryError(f"cannot export tokenizer {type(tokenizer).__name__} for the fast text path")
    example = tokenizer(["a photo of a cat"]).to("cpu")
    tower = encoder.tower.to("cpu").eval()
    with warnings.catch_warnings():  # the TorchScript exporter is chatty about deprecations
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tower, (example,), str(staging / ONNX_NAME), input_names=["tokens"], output_names=["features"],
            dynamic_axes={"tokens": {0: "batch"}, "features": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    meta = {"format": FORMAT, "fingerprint": model.info.fingerprint, "dim": model.info.dim, "tokenizer": kind,
            "context_length": context_length, "special": special, "model": model.info.name,
            "clean": "whitespace" if kind == "hf" else "clip-lower", "hf_clean": text_cfg.get("hf_tokenizer_name") is not None}
    (staging / META_NAME).write_text(json.dumps(meta, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    return folder


def exported_fingerprint(folder: Path) -> str | None:
    try:
        meta = json.loads((Path(folder) / META_NAME).read_text())
    except (OSError, ValueError):
        return None
    return meta.get("fingerprint") if meta.get("format") == FORMAT else None


class OnnxTextEncoder:
    """Same interface as `retrieval.encoders.TextEncoder.embed_texts`, on onnxruntime."""

    def __init__(self, folder: Path, threads: int | None = None):
        import onnxruntime
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.meta = json.loads((folder / META_NAME).read_text())
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if threads:  # a server answering many queries at once does better with few threads each
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(folder / ONNX_NAME), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_NAME))
        self.context_length = int(self.meta["context_length"])
        if self.meta["tokenizer"] == "hf":
            self.tokenizer.enable_truncation(self.context_length)
            self.tokenizer.enable_padding(length=self.context_length, pad_id=self.meta["special"]["pad"])

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        if self.meta["tokenizer"] == "hf":
            encodings = self.tokenizer.encode_batch([_whitespace(text) for text in texts])
            return np.asarray([encoding.ids for encoding in encodings], dtype=np.int64)
        special = self.meta["special"]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [special["sot"]] + self.tokenizer.encode(_clip_clean(text), add_special_tokens=False).ids + [special["eot"]]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = special["eot"]
            out[row, : len(ids)] = ids
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if any(not text.strip() for text in texts):
            raise QueryError("empty text query")
        (features,) = self.session.run(["features"], {"tokens": self.tokenize(texts)})
        features = features.astype(np.float32)
        return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def ensure_exported(model, folder: Path) -> bool:
    """Export `model`'s text tower to `folder` unless an export of the same model is there.

    Returns True when a usable export exists afterwards; an export failure is logged, not raised
    (searches then use the torch text tower).
    """
    if exported_fingerprint(folder) == model.info.fingerprint:
        return True
    try:
        export_text_encoder(model, folder)
    except Exception as exc:  # noqa: BLE001 - the fast path is optional
        log.warning("could not export the text tower for fast searches: %s", exc)
        shutil.rmtree(Path(folder), ignore_errors=True)
        return False
    return True
