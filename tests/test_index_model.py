"""One way to open an index's model: every path embeds a file as the index did.

A new index on a CPU embeds images with the int8 ONNX tower and records it; `search --image`, an
upload to the server and a `reindex` must embed with that same tower (they once used fp32 while the
index said int8). The checks look at the tower each path runs, and at the vectors: dynamic int8
quantisation scales activations per batch, so a file embedded alone and in a batch of four agree to
a cosine of about 0.99996, not exactly (measured with this tiny model; fp32 is as close to it).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import TINY_CONFIG, write_image
from indexer.errors import ModelMismatchError
from indexer.store.library import Library
from retrieval.index_model import choose_model, image_precision_for, open_model, search_model
from retrieval.models.encoders import load_model

runner = CliRunner()


def _stored(db, name: str) -> np.ndarray:
    with Library(db, create=False) as library:
        (item_id,) = [record.id for record in library.reads.items(range(1, 50)).values() if record.path.endswith(name)]
        vectors = library.reads.item_vectors(item_id, library.model().dim)
    assert len(vectors) == 1
    return vectors[0]


def _embed(model, path) -> np.ndarray:
    from indexer.media.files import read_file
    from indexer.media.image import decode_image

    return model.image.embed_pixels(decode_image(read_file(str(path)), model.preprocess).pixels[None])[0]


def _index_tower(encoder, db) -> bool:
    """The ONNX graph the index's own runs use (retrieval.models.fast_image: int8, or its fp32 export
    where int8 fails the cosine check on this CPU), not a torch tower."""
    from retrieval.models import fast_image

    ran = fast_image.effective_precision(db / "image_encoder", "onnx-int8")
    graph = fast_image.INT8_NAME if ran == "onnx-int8" else fast_image.FP32_NAME
    return type(encoder).__name__ == "OnnxImageEncoder" and encoder.precision == ran and encoder.graph.name == graph


def _search_image(db, path) -> dict:
    result = runner.invoke(app, ["search", "--image", str(path), "--db", str(db), "--json", "--top", "1"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[0]


@pytest.fixture()
def indexed(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    for seed in range(4):
        write_image(pics / f"p{seed}.png", seed)
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config)])
    assert result.exit_code == 0, result.output
    return pics, db


def test_the_same_file_gets_the_same_vector_every_way(indexed, tmp_path):
    from retrieval.server import ServerConfig
    from retrieval.server.engine import SearchEngine

    pics, db = indexed
    with Library(db, create=False) as library:
        assert library.image_precision == "onnx-int8"
    stored = _stored(db, "p2.png")
    with Library(db, create=False, read_only=True) as library:
        searched = search_model(library, device="cpu")
        assert _index_tower(searched.image, db)  # what `search --image` embeds with
        assert float(_embed(searched, pics / "p2.png") @ stored) == pytest.approx(1.0, abs=1e-3)
    hit = _search_image(db, pics / "p2.png")
    assert hit["path"].endswith("p2.png") and hit["score"] == pytest.approx(1.0, abs=1e-3)

    engine = SearchEngine.open(ServerConfig(db=db, device="cpu"))
    try:
        uploaded = engine.image_vector((pics / "p2.png").read_bytes())
        assert _index_tower(engine.model.image, db)
    finally:
        engine.close()
    assert float(uploaded @ stored) == pytest.approx(1.0, abs=1e-3)

    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY_CONFIG, "seed": 7}))
    result = runner.invoke(app, ["reindex", "--model", str(other), "--db", str(db)])
    assert result.exit_code == 0, result.output
    with Library(db, create=False) as library:
        assert library.image_precision == "onnx-int8" and library.model().name == str(other)
        reopened = open_model(library, str(other), device="cpu")
    assert _index_tower(reopened.image, db)
    assert float(_stored(db, "p2.png") @ _embed(reopened, pics / "p2.png")) == pytest.approx(1.0, abs=1e-3)
    hit = _search_image(db, pics / "p2.png")
    assert hit["path"].endswith("p2.png") and hit["score"] == pytest.approx(1.0, abs=1e-3)


def test_a_model_other_than_the_indexs_is_refused(indexed, tmp_path):
    _, db = indexed
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY_CONFIG, "seed": 9}))
    with Library(db, create=False) as library, pytest.raises(ModelMismatchError, match="mmsearch reindex"):
        open_model(library, str(other), device="cpu")
    result = runner.invoke(app, ["search", "a cat", "--db", str(db), "--model", str(other)])
    assert result.exit_code == 1 and "reindex --model" in result.stderr


def test_the_model_choice_follows_flag_index_config_default(tmp_path, tiny_model_config):
    library = Library(tmp_path / "empty")
    assert choose_model(library, "x.json").reason.startswith("chosen with --model")
    assert choose_model(library, None, "from-config").name == "from-config"
    assert choose_model(library).name == "bundled"  # outside an index run: no download attempt
    assert image_precision_for(library) == "onnx-int8"  # a new index gets the fast CPU tower
    assert image_precision_for(library, "fp32") == "fp32"
    library.db.bind_model(load_model(str(tiny_model_config), device="cpu").info)
    assert image_precision_for(library) == "fp32"  # an index older than the setting keeps what filled it
    assert choose_model(library, None, "from-config").name == str(tiny_model_config.resolve())
