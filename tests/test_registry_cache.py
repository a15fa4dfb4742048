"""The open_clip model card is cached so an index run of a known model does not import open_clip."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from retrieval.models import registry

ROOT = Path(__file__).resolve().parent.parent


def test_card_is_cached_and_read_back_equal(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(tmp_path))
    spec = registry.resolve_model("ViT-B-32:laion2b_s34b_b79k")
    first = registry.describe_model(spec)
    files = list((tmp_path / "open_clip_cards").glob("*.json"))
    assert len(files) == 1
    second = registry.describe_model(spec)
    assert (second.model_cfg, second.preprocess, second.fingerprint) == \
           (json.loads(json.dumps(first.model_cfg)), first.preprocess, first.fingerprint)
    assert second.manifest["pretrained_cfg"]["hf_hub"] == first.manifest["pretrained_cfg"]["hf_hub"]


def test_a_damaged_or_foreign_cache_file_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(tmp_path))
    spec = registry.resolve_model("ViT-B-32:laion2b_s34b_b79k")
    card = registry.describe_model(spec)
    (path,) = (tmp_path / "open_clip_cards").glob("*.json")
    data = json.loads(path.read_text())
    data["model_cfg"]["embed_dim"] = 7  # no longer matches its fingerprint
    path.write_text(json.dumps(data))
    assert registry.describe_model(spec).dim == card.dim
    path.write_text("{not json")
    assert registry.describe_model(spec).fingerprint == card.fingerprint


def test_second_process_does_not_import_open_clip(tmp_path):
    env = {**os.environ, "MMSEARCH_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    code = ("import sys; from retrieval.models import registry; "
            "card = registry.describe_model(registry.resolve_model('ViT-B-32:laion2b_s34b_b79k')); "
            "print(card.dim, 'open_clip' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.split() == ["512", "True"]
    assert second.stdout.split() == ["512", "False"]
