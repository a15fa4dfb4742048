"""reindex: switch an index to another model, resumably, searchable all along (the first two on SQLite and
PostgreSQL: conftest.backend)."""
import json

import pytest

from conftest import open_library, write_image
from indexer.pipeline.embed import PipelineConfig
from indexer.pipeline.reindex import reindex
from indexer.pipeline.sync import IndexConfig, index_folders
from indexer.store.records import check_same_model
from indexer.store.vectors import VectorIndex
from retrieval.media import media_for
from retrieval.models.encoders import load_model
from retrieval.query.search import rank


@pytest.fixture()
def other_model(tmp_path, tiny_model_config):
    config = json.loads(tiny_model_config.read_text())
    config["seed"] = 1
    config["embed_dim"] = 32
    path = tmp_path / "other.json"
    path.write_text(json.dumps(config))
    return load_model(str(path), device="cpu")


def _indexed(tmp_path, model, n=7, database_url=None):
    pics = tmp_path / "pics"
    for i in range(n):
        write_image(pics / f"img{i}.png", seed=i)
    library = open_library(tmp_path / "db", database_url)
    index_folders(library, media_for(model), IndexConfig(roots=(str(pics),)))
    return pics, library


def test_reindex_switches_model_and_vectors(tmp_path, tiny_model, other_model, backend):
    pics, library = _indexed(tmp_path, tiny_model, database_url=backend)
    report = reindex(library, media_for(other_model), PipelineConfig(batch_size=3))
    assert report.embedded == 7
    assert library.model().fingerprint == other_model.info.fingerprint
    check_same_model(library.model(), other_model.info)
    saved = VectorIndex.load(library.vectors_path())
    assert saved.dim == 32 and saved.ntotal == 7
    query = other_model.image.embed_images([__import__("PIL.Image").Image.open(pics / "img3.png")])
    best = rank(library, query, top=1)[0][0]
    assert best.path == str(pics / "img3.png") and best.score == pytest.approx(1.0, abs=1e-5)


def test_interrupted_reindex_resumes_and_old_model_still_searches(tmp_path, tiny_model, other_model, backend):
    pics, library = _indexed(tmp_path, tiny_model, database_url=backend)

    class Stop(Exception):
        pass

    def stop(event):
        if event.phase == "embed" and event.done >= 3:
            raise Stop

    with pytest.raises(Stop):
        reindex(library, media_for(other_model), PipelineConfig(batch_size=3, workers=1), on_progress=stop)
    # still the old model, every item searchable with it
    assert library.model().fingerprint == tiny_model.info.fingerprint
    hits = rank(library, tiny_model.text.embed_texts(["anything"]), top=10)[0]
    assert len(hits) == 7
    resumed = reindex(library, media_for(other_model), PipelineConfig(batch_size=3))
    assert (resumed.already_staged, resumed.embedded) == (3, 4)
    assert library.model().fingerprint == other_model.info.fingerprint
    assert VectorIndex.load(library.vectors_path()).ntotal == 7


def test_reindex_cli_refuses_other_half_done_model(tmp_path, tiny_model, tiny_model_config, other_model):
    from typer.testing import CliRunner

    from cli.app import app

    _, library = _indexed(tmp_path, tiny_model)
    library.staging.begin(other_model.info)
    runner = CliRunner()
    result = runner.invoke(app, ["reindex", "--model", str(tiny_model_config), "--db", str(library.folder)])
    assert result.exit_code == 1 and "--restart" in result.stderr
    result = runner.invoke(app, ["reindex", "--model", str(tiny_model_config), "--db", str(library.folder), "--restart",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["embedded"] == 7
    assert library.staging.model() is None
