"""The model a search uses: the exported ONNX text tower when it fits, the full model otherwise.

A text-only search on an index with a current export never imports torch or open_clip; an image
term (or a missing/stale export) loads the full model on first use, through the loader given
(retrieval.index_model: configured and checked as the index records).
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Callable

from indexer.store.records import ModelInfo


class SearchModel:
    def __init__(self, info: ModelInfo, export_dir: Path | None, load_full: Callable[[], object], *,
                 prepack: bool = True):
        self.info = info
        self._export_dir = export_dir
        self._load_full = load_full
        # False for a process that embeds one query and exits: its ONNX text session skips weight
        # prepacking (opens ~0.3 s sooner for ~0.1 s more run time, same vectors: docs/BENCHMARKS.md, "Cold start")
        self._prepack = prepack

    @cached_property
    def full(self):
        return self._load_full()

    @cached_property
    def text(self):
        from retrieval.models.onnx_text import OnnxTextEncoder, exported_fingerprint

        if self._export_dir is not None and exported_fingerprint(self._export_dir) == self.info.fingerprint:
            try:
                return OnnxTextEncoder(self._export_dir, prepack=self._prepack)
            except ImportError:
                pass  # onnxruntime or tokenizers missing: the torch tower does the same job
        return self.full.text

    @property
    def image(self):
        return self.full.image

    @property
    def preprocess(self):
        return self.full.preprocess

    @property
    def image_built(self) -> bool:
        return "full" in self.__dict__ and self.full.image_built
