"""The server's text queries run on the index's ONNX text export when it is current, on torch otherwise.

Real SQLite, real FAISS, the tiny random model; exports written into the index folder as `mmsearch
index` writes them.
"""
import os
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

pytest.importorskip("onnxruntime")

from conftest import write_image
from indexer.pipeline.sync import IndexConfig, index_folders
from indexer.store.library import TEXT_EXPORT_NAME, Library
from retrieval.media import media_for
from retrieval.models.onnx_text import export_text_encoder
from retrieval.server import ServerConfig, create_app
from retrieval.server.engine import SearchEngine, SearchRequest, WarmLibrary

QUERIES = ["a red dog", "beach + sunset - people", "2:green tree + 0.5:night", "x", "word " * 60]


@pytest.fixture(scope="module")
def db(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("server_onnx")
    for i in range(12):
        write_image(root / "pics" / f"img{i}.png", seed=i)
    folder = root / "db"
    with Library(folder) as library, library.lock():
        index_folders(library, media_for(tiny_model), IndexConfig(roots=(str(root / "pics"),)))
    return folder


def open_engine(db, model, **options) -> SearchEngine:
    engine = SearchEngine(WarmLibrary(db), model, ServerConfig(db=db, **options))
    engine.warm()
    return engine


def ranking(engine: SearchEngine, query: str) -> tuple[list[int], np.ndarray]:
    page = engine.search(SearchRequest(text=query, limit=12))
    return [hit.item_id for hit in page.hits], np.array([hit.score for hit in page.hits])


def export_to(db, model, **options) -> None:
    folder = db / TEXT_EXPORT_NAME
    shutil.rmtree(folder, ignore_errors=True)
    export_text_encoder(model, folder, **options)


def test_server_uses_the_trimmed_onnx_export_and_ranks_as_torch(db, tiny_model):
    export_to(db, tiny_model)
    onnx_engine = open_engine(db, tiny_model)
    torch_engine = open_engine(db, tiny_model, text_backend="torch")
    try:
        assert onnx_engine.text_backend == "onnx-trimmed" and torch_engine.text_backend == "torch"
        for query in QUERIES:
            onnx_ids, onnx_scores = ranking(onnx_engine, query)
            torch_ids, torch_scores = ranking(torch_engine, query)
            assert len(onnx_ids) == 12
            np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-5)
            assert onnx_ids == torch_ids, query
        with TestClient(create_app(onnx_engine.config, engine=onnx_engine), base_url="http://127.0.0.1:8000") as client:
            response = client.get("/api/search", params={"q": "a red dog", "limit": 12})
            assert [hit["id"] for hit in response.json()["results"]] == ranking(torch_engine, "a red dog")[0]
            assert client.get("/api/status").json()["server"]["text_encoder"] == "onnx-trimmed"
    finally:
        onnx_engine.close()
        torch_engine.close()


def test_old_fixed_length_export_is_used_at_full_length(db, tiny_model):
    export_to(db, tiny_model, trim=False)
    engine = open_engine(db, tiny_model)
    try:
        assert engine.text_backend == "onnx" and not engine.text_encoder.trims
        expected = tiny_model.text.embed_texts(["a red dog"])
        np.testing.assert_allclose(engine.text_vectors(["a red dog"])[0], expected[0], atol=1e-5)
    finally:
        engine.close()


def test_no_export_or_another_models_export_falls_back_to_torch(db, tiny_model, tmp_path):
    import json

    from retrieval.models.onnx_text import META_NAME

    folder = db / TEXT_EXPORT_NAME
    export_to(db, tiny_model)
    meta = json.loads((folder / META_NAME).read_text())
    (folder / META_NAME).write_text(json.dumps({**meta, "fingerprint": "another model"}))
    engine = open_engine(db, tiny_model)
    try:
        assert engine.text_backend == "torch" and engine.text_encoder is tiny_model.text
    finally:
        engine.close()
    shutil.rmtree(folder)
    engine = open_engine(db, tiny_model)
    try:
        assert engine.text_backend == "torch"
        assert len(ranking(engine, "a red dog")[0]) == 12
    finally:
        engine.close()


def test_damaged_export_falls_back_to_torch(db, tiny_model):
    from retrieval.models.onnx_text import ONNX_NAME

    export_to(db, tiny_model)
    ((db / TEXT_EXPORT_NAME) / ONNX_NAME).write_bytes(b"not a graph")
    engine = open_engine(db, tiny_model)
    try:
        assert engine.text_backend == "torch"
    finally:
        engine.close()


def test_int8_precision_uses_the_checked_int8_graph(db, tiny_model):
    from retrieval.models.onnx_text import MIN_INT8_COSINE

    export_to(db, tiny_model, int8=True)
    int8_engine = open_engine(db, tiny_model, text_precision="int8")
    fp32_engine = open_engine(db, tiny_model)
    try:
        assert int8_engine.text_backend == "onnx-trimmed-int8" and fp32_engine.text_backend == "onnx-trimmed"
        for query in QUERIES:
            int8_vector = int8_engine.query_vector(SearchRequest(text=query))
            fp32_vector = fp32_engine.query_vector(SearchRequest(text=query))
            assert float(int8_vector @ fp32_vector) >= MIN_INT8_COSINE
    finally:
        int8_engine.close()
        fp32_engine.close()
    export_to(db, tiny_model)  # no int8 graph: fp32 runs
    engine = open_engine(db, tiny_model, text_precision="int8")
    try:
        assert engine.text_backend == "onnx-trimmed"
    finally:
        engine.close()


def test_bad_text_settings_are_refused(db):
    from retrieval.server.errors import ServerConfigError

    with pytest.raises(ServerConfigError, match="text precision"):
        ServerConfig(db=db, text_precision="int4").check()
    with pytest.raises(ServerConfigError, match="text backend"):
        ServerConfig(db=db, text_backend="gpu").check()
    with pytest.raises(ServerConfigError, match="--text-threads"):
        ServerConfig(db=db, text_threads=0).check()


@pytest.mark.parametrize("threads", [1, 2])
def test_text_threads_reach_the_onnx_session_and_rank_the_same(db, tiny_model, threads):
    """One query's embedding may use every core (the default): same ranking as one thread."""
    export_to(db, tiny_model)
    engine = open_engine(db, tiny_model, text_threads=threads)
    reference = open_engine(db, tiny_model, text_backend="torch")
    try:
        assert engine.text_encoder.session.get_session_options().intra_op_num_threads == threads
        for query in QUERIES:
            assert ranking(engine, query)[0] == ranking(reference, query)[0]
    finally:
        engine.close()
        reference.close()
    assert ServerConfig(db=db).resolved_text_threads == max(1, min(os.cpu_count() or 1, 4))
