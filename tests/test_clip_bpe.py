"""CLIP's BPE read from SQLite tables (retrieval.models.clip_bpe) against the tokenizers file the fast text
path used before, and open_clip's own tokenizer."""
from __future__ import annotations

import json
import threading

import pytest

from retrieval.models.clip_vocab import clip_tokenizer_json, clip_vocabulary

ORDINARY = ["a cat", "a photo of a small red dog running on a sunny beach", "Invoice #2041 — total: $13.50!!",
            "naïve café déjà vu", "東京の夜景 and 北京", "emoji 🐶🐱 party🎉", "don't won't I'm we'll they'd", "x",
            "hello    world\n\ttab", "123456 7.5e-3 1,000", "word " * 50, "https://example.com/a_b-c?d=e&f=g",
            "Ω≈ç√∫˜µ≤≥÷", "a" * 300, "mixedCASE Words", "ÀÉÎÕÜ ß"]
# where the fast path already differed from open_clip (ftfy's repairs; a special token typed as text)
FAST_PATH_ONLY = ["ﬁne ligature", "<start_of_text> literal"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from retrieval.models.clip_bpe import write_tables

    return write_tables(tmp_path_factory.mktemp("bpe") / "tokenizer.sqlite", clip_vocabulary(77))


def _clean(text: str) -> str:
    from retrieval.models.onnx_text import _clip_clean

    return _clip_clean(text)


def test_ids_are_those_of_the_tokenizers_file_and_of_open_clip(tables):
    from open_clip.tokenizer import SimpleTokenizer
    from tokenizers import Tokenizer

    from retrieval.models.clip_bpe import ClipBpe

    bpe, reference = ClipBpe(tables), SimpleTokenizer()
    before = Tokenizer.from_str(clip_tokenizer_json(clip_vocabulary(77)))
    for text in ORDINARY + FAST_PATH_ONLY:
        ids = bpe.encode(_clean(text))
        assert ids == before.encode(_clean(text), add_special_tokens=False).ids, text
        if text in ORDINARY:
            assert ids == reference.encode(_clean(text)), text
    assert bpe.encode(_clean("a cat")) == bpe.encode(_clean("a cat"))  # from its caches the second time


def test_threads_share_one_reader(tables):
    from retrieval.models.clip_bpe import ClipBpe

    bpe = ClipBpe(tables)
    expected = {text: ClipBpe(tables).encode(_clean(text)) for text in ORDINARY}
    seen, errors = [], []

    def work():
        try:
            seen.extend(bpe.encode(_clean(text)) == expected[text] for text in ORDINARY * 3)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(seen) == 4 * 3 * len(ORDINARY) and all(seen)


def test_an_export_from_before_the_tables_gets_them_and_tokenizes_the_same(tmp_path, tiny_model):
    from retrieval.models.clip_bpe import TABLES_NAME
    from retrieval.models.fast_text import add_bpe_tables, has_bpe_tables
    from retrieval.models.onnx_text import OnnxTextEncoder, export_text_encoder
    from retrieval.text_export_job import text_export_needed, write_text_export

    folder = export_text_encoder(tiny_model, tmp_path / "text")
    with_tables = OnnxTextEncoder(folder)
    assert with_tables.bpe is not None and json.loads((folder / "text_encoder.json").read_text())["tokenizer"] == "clip"
    expected = with_tables.tokenize(ORDINARY)
    (folder / TABLES_NAME).unlink()  # as an older version wrote it
    older = OnnxTextEncoder(folder)
    assert older.bpe is None and (older.tokenize(ORDINARY) == expected).all()
    assert not has_bpe_tables(folder) and text_export_needed(folder, tiny_model.info.fingerprint)
    assert write_text_export(folder, tiny_model)  # what the next index run does: adds them, nothing else
    assert has_bpe_tables(folder) and not text_export_needed(folder, tiny_model.info.fingerprint)
    assert (OnnxTextEncoder(folder).tokenize(ORDINARY) == expected).all()
    assert add_bpe_tables(folder)  # already there: nothing to do
