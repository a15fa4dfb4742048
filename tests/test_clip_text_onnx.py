"""The CLIP text tower written to ONNX without the tracer (retrieval.models.clip_text_onnx)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.models.clip_text_onnx import clip_text_graph, unsupported

TEXTS = ["a cat", "a photo of a small red dog running on a sunny beach", "x", "word " * 40]


def _run(graph, tokens: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["features"], {"tokens": tokens})[0]


@pytest.mark.parametrize("pool_type", ["argmax", "first"])
def test_the_written_graph_gives_the_torch_towers_vectors_at_every_length(tiny_model, pool_type, monkeypatch):
    tower = tiny_model.text.tower.eval()
    monkeypatch.setattr(tower, "pool_type", pool_type)
    tokens = tiny_model.text.tokenizer(TEXTS)
    with torch.inference_mode():
        expected = tower(tokens).float().numpy()
    graph = clip_text_graph(tower)
    assert np.abs(_run(graph, tokens.numpy()) - expected).max() < 1e-4  # the full context length
    for row, text in enumerate(TEXTS):  # each text cut after its end-of-text token (causal: same vector)
        length = int(tokens[row].argmax()) + 1
        alone = _run(graph, np.ascontiguousarray(tokens[row:row + 1, :length].numpy()))
        assert np.abs(alone[0] - expected[row]).max() < 1e-4, text


def test_other_towers_are_left_to_the_tracer(tiny_model):
    assert unsupported(tiny_model.text.tower.eval()) is None
    assert "TextTransformer" in unsupported(torch.nn.Linear(2, 2))
    assert "training" in unsupported(tiny_model.text.tower.train())
    tiny_model.text.tower.eval()


def test_the_text_export_records_its_writer(tmp_path, tiny_model):
    import json

    from retrieval.models.onnx_text import META_NAME, export_text_encoder

    export_text_encoder(tiny_model, tmp_path / "text")
    meta = json.loads((tmp_path / "text" / META_NAME).read_text())
    assert meta["writer"] == "clip_text_onnx" and meta["sequence"] == "trimmed"
