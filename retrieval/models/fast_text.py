"""Make the exported ONNX text tower quick to open: pre-optimised graph, weights in a side file.

`onnxruntime.InferenceSession` on the plain export (one 254 MB protobuf for ViT-B-32) copies every
weight out of the protobuf and re-runs the graph optimisations on each start: about 1.1 s of a
cold `mmsearch search` on 2 cores. Saved once as an already-optimised graph (ORT_ENABLE_EXTENDED:
fusions only, no hardware-specific layouts) whose weights live in an external data file, the
session maps the weights instead of copying them and has little left to optimise: about 0.35 s.
The outputs are bit-identical (checked in tests/test_fast_paths.py).

The folder keeps `retrieval.models.onnx_text`'s layout (text.onnx, tokenizer.json, text_encoder.json),
so `OnnxTextEncoder` opens it unchanged; the rewrite is staged and swapped in atomically.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

from retrieval.models.clip_bpe import TABLES_NAME, write_tables
from retrieval.models.clip_vocab import ClipVocabulary
from retrieval.models.onnx_text import DATA_NAME, LAYOUT, META_NAME, ONNX_NAME, TOKENIZER_NAME, export_meta, optimising_options

log = logging.getLogger(__name__)


def has_bpe_tables(folder: Path) -> bool:
    """True unless `folder` is a CLIP-tokenizer export without the SQLite tables of retrieval.models.clip_bpe."""
    meta = export_meta(folder)
    return bool(meta) and (meta.get("tokenizer") != "clip" or (Path(folder) / TABLES_NAME).is_file())


def add_bpe_tables(folder: Path) -> bool:
    """Write the SQLite tables of a CLIP-tokenizer export made before them, from its tokenizer file (its
    vocabulary and merges: the same data); True when the folder has what it needs afterwards. A failure
    is logged: searches then load the tokenizer file, as before."""
    folder = Path(folder)
    if has_bpe_tables(folder):
        return True
    try:
        model = json.loads((folder / TOKENIZER_NAME).read_text())["model"]
        merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
        write_tables(folder / TABLES_NAME, ClipVocabulary(encoder=model["vocab"], context_length=0,
                                                          bpe_ranks={pair: rank for rank, pair in enumerate(merges)}))
    except (OSError, ValueError, KeyError, sqlite3.Error) as exc:
        log.warning("could not add the tokenizer tables to %s: %s", folder, exc)
        return False
    return True


def is_optimised(folder: Path) -> bool:
    return export_meta(folder).get("layout") == LAYOUT and (Path(folder) / DATA_NAME).is_file()


def optimise_text_export(folder: Path) -> bool:
    """Rewrite an export in place as an optimised graph + external weights; True when it is so afterwards.

    A failure is logged and leaves the plain export as it was (it works, only slower to open).
    """
    folder = Path(folder)
    if is_optimised(folder):
        return True
    if not (folder / ONNX_NAME).is_file():
        return False
    staging = folder.with_name(folder.name + f".opt-{os.getpid()}")
    try:
        import onnxruntime

        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        onnxruntime.InferenceSession(str(folder / ONNX_NAME), optimising_options(staging), providers=["CPUExecutionProvider"])
        for name in os.listdir(folder):
            if name not in (ONNX_NAME, DATA_NAME, META_NAME):
                shutil.copy2(folder / name, staging / name)
        meta = json.loads((folder / META_NAME).read_text())
        meta["layout"] = LAYOUT
        (staging / META_NAME).write_text(json.dumps(meta, indent=2))
        old = folder.with_name(folder.name + f".old-{os.getpid()}")
        os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    except Exception as exc:  # noqa: BLE001 - the plain export still works
        log.warning("could not optimise the text export %s: %s", folder, exc)
        shutil.rmtree(staging, ignore_errors=True)
        return False
    return True
