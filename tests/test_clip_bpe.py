"""CLIP's BPE read from SQLite tables (retrieval.models.clip_bpe) against open_clip's own tokenizer and the
tokenizers file the fast text path used before."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from retrieval.models.clip_vocab import clip_tokenizer_json, clip_vocabulary

ORDINARY = ["a cat", "a photo of a small red dog running on a sunny beach", "Invoice #2041 — total: $13.50!!",
            "naïve café déjà vu", "東京の夜景 and 北京", "emoji 🐶🐱 party🎉", "don't won't I'm we'll they'd", "x",
            "hello    world\n\ttab", "123456 7.5e-3 1,000", "word " * 50, "https://example.com/a_b-c?d=e&f=g",
            "Ω≈ç√∫˜µ≤≥÷", "a" * 300, "mixedCASE Words", "ÀÉÎÕÜ ß", "ﬁne ligature"]
# where open_clip's IGNORECASE pattern and the tokenizers file split differently (ClipBpe follows open_clip)
RARE = ["ͅ mark", "it'ſ long", "a\u0345b", "<start_of_text> typed as text"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from retrieval.models.clip_bpe import write_tables

    return write_tables(tmp_path_factory.mktemp("bpe") / "tokenizer.sqlite", clip_vocabulary(77))


def _clean(text: str) -> str:
    from retrieval.models.onnx_text import _clip_clean

    return _clip_clean(text)


def _open_clip_ids(reference, text: str) -> list[int]:
    """open_clip's SimpleTokenizer.encode without its clean step (which adds ftfy's repairs, skipped on the
    fast path by design): its pattern, byte table, BPE and vocabulary on already cleaned text."""
    import regex

    ids = []
    for token in regex.findall(reference.pat, text):
        token = "".join(reference.byte_encoder[byte] for byte in token.encode("utf-8"))
        ids.extend(reference.encoder[piece] for piece in reference.bpe(token).split(" "))
    return ids


def _random_texts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789 .,;:!?'\"-_/#@&()[]{}<>=+*%$€£¥") + \
        list("àéîõüßçñøåæœ") + list("αβγδειδ") + list("абвгдеж") + list("東京北夜景の日本語") + \
        list("🐶🐱🎉") + ["\u0301", "\u0345", "ſ", "\t", "\n", "  "]
    return ["".join(rng.choice(alphabet, size=int(rng.integers(1, 40)))) for _ in range(count)]


def test_ids_are_open_clips_on_ordinary_rare_and_random_text(tables):
    from open_clip.tokenizer import SimpleTokenizer

    from retrieval.models.clip_bpe import ClipBpe

    bpe, reference = ClipBpe(tables), SimpleTokenizer()
    for text in ORDINARY + RARE + _random_texts(400):
        assert bpe.encode(_clean(text)) == _open_clip_ids(reference, _clean(text)), repr(text)
    assert bpe.encode("") == []


def test_ordinary_text_gets_the_ids_the_tokenizers_file_gave(tables):
    from tokenizers import Tokenizer

    from retrieval.models.clip_bpe import ClipBpe

    bpe, before = ClipBpe(tables), Tokenizer.from_str(clip_tokenizer_json(clip_vocabulary(77)))
    for text in ORDINARY:
        assert bpe.encode(_clean(text)) == before.encode(_clean(text), add_special_tokens=False).ids, text
    assert any(bpe.encode(_clean(text)) != before.encode(_clean(text), add_special_tokens=False).ids for text in RARE)


def test_an_export_from_before_the_tables_gets_only_them_and_tokenizes_the_same(tmp_path, tiny_model):
    from retrieval.models.clip_bpe import TABLES_NAME
    from retrieval.models.fast_text import add_bpe_tables, has_bpe_tables, optimise_text_export
    from retrieval.models.onnx_text import ONNX_NAME, OnnxTextEncoder, export_text_encoder
    from retrieval.text_export_job import text_export_needed, write_text_export

    folder = export_text_encoder(tiny_model, tmp_path / "text")
    assert optimise_text_export(folder)
    with_tables = OnnxTextEncoder(folder)
    assert with_tables.bpe is not None and json.loads((folder / "text_encoder.json").read_text())["tokenizer"] == "clip"
    expected = with_tables.tokenize(ORDINARY)
    (folder / TABLES_NAME).unlink()  # as an older version wrote it
    older = OnnxTextEncoder(folder)
    assert older.bpe is None and (older.tokenize(ORDINARY) == expected).all()
    assert not has_bpe_tables(folder) and text_export_needed(folder, tiny_model.info.fingerprint)
    graph_written = (folder / ONNX_NAME).stat().st_mtime_ns
    assert write_text_export(folder, tiny_model)  # what the next index run does: adds them, nothing else
    assert (folder / ONNX_NAME).stat().st_mtime_ns == graph_written
    assert has_bpe_tables(folder) and not text_export_needed(folder, tiny_model.info.fingerprint)
    assert (OnnxTextEncoder(folder).tokenize(ORDINARY) == expected).all()
    assert add_bpe_tables(folder)  # already there: nothing to do


def test_odd_folder_names_and_damaged_tables(tmp_path, tiny_model, caplog):
    from retrieval.models.clip_bpe import TABLES_NAME
    from retrieval.models.fast_text import add_bpe_tables
    from retrieval.models.onnx_text import TOKENIZER_NAME, OnnxTextEncoder, export_text_encoder

    plain = export_text_encoder(tiny_model, tmp_path / "text")
    expected = OnnxTextEncoder(plain).tokenize(ORDINARY)
    for name in ("C# projects", "what?", "100%20done"):  # URI characters stay part of the name
        folder = shutil.copytree(plain, tmp_path / name / "text")
        encoder = OnnxTextEncoder(folder)
        assert encoder.bpe is not None and (encoder.tokenize(ORDINARY) == expected).all(), name
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["text", "C# projects", "what?", "100%20done"])
    damaged = shutil.copytree(plain, tmp_path / "damaged")
    (damaged / TABLES_NAME).write_bytes(b"not a database")
    with caplog.at_level("WARNING"):
        encoder = OnnxTextEncoder(damaged)
    assert encoder.bpe is None and (encoder.tokenize(ORDINARY) == expected).all() and "unusable" in caplog.text
    (damaged / TABLES_NAME).unlink()
    (damaged / TOKENIZER_NAME).write_text("{not json")
    assert not add_bpe_tables(damaged) and not (damaged / TABLES_NAME).exists()
