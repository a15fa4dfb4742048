"""Relevance: the logistic fit, the label-free estimate, the collection sample, and relevance on real searches."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image
from indexer.store.library import Library
from retrieval.query.relevance import (
    INDEX_CALIBRATION_KEY,
    LABEL_FREE,
    Calibration,
    LogisticMap,
    calibration_for,
    expected_calibration_error,
    fit_logistic,
    label_free_relevance,
    model_calibration,
    query_stats,
    read_calibration,
    reliability_table,
    z_scores,
)

runner = CliRunner()


def test_fit_logistic_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    scores, z = rng.uniform(0, 0.5, 20_000), rng.normal(0, 2, 20_000)
    truth = LogisticMap(6.0, 1.5, -4.0)
    labels = rng.random(20_000) < truth(scores, z)
    fitted = fit_logistic(scores, z, labels, l2=0.0)
    assert fitted.score_weight == pytest.approx(6.0, abs=0.6)
    assert fitted.z_weight == pytest.approx(1.5, abs=0.1)
    assert fitted.bias == pytest.approx(-4.0, abs=0.3)


def test_ece_is_small_for_calibrated_and_large_for_overconfident_predictions():
    rng = np.random.default_rng(1)
    predicted = rng.random(50_000)
    labels = rng.random(50_000) < predicted
    assert expected_calibration_error(predicted, labels) < 0.01
    assert expected_calibration_error(np.sqrt(predicted), labels) > 0.1
    table = reliability_table(predicted, labels)
    assert len(table) == 10 and sum(row["count"] for row in table) == 50_000
    assert all(abs(row["matched"] - row["mean_relevance"]) < 0.03 for row in table)


def test_label_free_relevance_grows_with_z_and_falls_with_collection_size():
    z = np.array([0.0, 2.0, 4.0, 6.0])
    small, large = label_free_relevance(z, 100), label_free_relevance(z, 1_000_000)
    assert np.all(np.diff(small) > 0) and np.all(np.diff(large) > 0)
    assert np.all(large < small)
    # one expected chance item at this score: even odds
    z_one = 3.090232  # normal upper tail 0.001
    assert label_free_relevance(np.array([z_one]), 1000)[0] == pytest.approx(0.5, abs=0.01)
    assert np.all((small >= 0) & (small <= 1))


def test_query_stats_place_a_score_among_the_collection():
    rng = np.random.default_rng(2)
    sample = rng.standard_normal((500, 16)).astype(np.float32)
    query = rng.standard_normal((2, 16)).astype(np.float32)
    stats = query_stats(sample, query, 500)
    expected = query @ sample.T
    assert np.allclose(stats.mean, expected.mean(axis=1), atol=1e-5)
    assert np.allclose(stats.std, expected.std(axis=1), atol=1e-5)
    assert z_scores(np.array([stats.mean[0] + 2 * stats.std[0]]), stats.mean[0], stats.std[0])[0] == pytest.approx(2.0)


def test_calibration_round_trips_and_falls_back_to_label_free_per_kind():
    calibration = Calibration(text=LogisticMap(5.0, 1.0, -6.0), source="test")
    again = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert again == calibration
    scores = np.array([0.1, 0.3])
    assert np.allclose(again.relevance(scores, 0.1, 0.05, 1000, "text"), calibration.text(scores, (scores - 0.1) / 0.05))
    assert np.allclose(again.relevance(scores, 0.1, 0.05, 1000, "image"),
                       label_free_relevance((scores - 0.1) / 0.05, 1000))
    assert again.fitted_for("text") and not again.fitted_for("image")


def test_a_calibration_file_for_another_model_is_ignored(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({**Calibration(text=LogisticMap(1, 1, 1)).to_dict(), "fingerprint": "abc"}))
    assert read_calibration(path, "abc") is not None
    assert read_calibration(path, "other") is None
    path.write_text("not json")
    assert read_calibration(path, "abc") is None


def test_the_bundled_model_ships_a_fitted_calibration():
    from retrieval.models.registry import BUNDLED_DIR, describe_model, resolve_model

    card = describe_model(resolve_model("bundled"))
    from indexer.store.records import ModelInfo

    info = ModelInfo("bundled", str(BUNDLED_DIR), card.dim, card.fingerprint)
    calibration = model_calibration(info)
    assert calibration is not None and calibration.fitted_for("text") and calibration.fitted_for("image")
    assert calibration.text.z_weight > 0  # a score further above the query's bulk is likelier a match


# --- on an index ----------------------------------------------------------------------------
@pytest.fixture()
def indexed(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    for i in range(12):
        write_image(pics / f"img{i:02d}.png", seed=i)
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config), "--json"])
    assert result.exit_code == 0, result.output
    return pics, db


def test_sample_is_the_same_through_sqlite3_and_sqlalchemy_and_seeded(indexed):
    _, db = indexed
    with Library(db, create=False, read_only=True) as fast, Library(db, create=False) as full:
        dim = full.model().dim
        everything = full.reads.sample_vectors(dim, 1000, seed=3)
        assert everything.shape == (12, dim)  # few vectors: all of them
        assert np.array_equal(fast.reads.sample_vectors(dim, 1000, seed=3), everything)
        some = full.reads.sample_vectors(dim, 4, seed=3)  # 12 > 2 * 4: drawn
        assert len(some) <= 4 and np.array_equal(fast.reads.sample_vectors(dim, 4, seed=3), some)
        assert np.array_equal(full.reads.sample_vectors(dim, 4, seed=3), some)


def test_every_search_hit_carries_relevance_and_min_relevance_drops_the_weak(indexed):
    _, db = indexed
    result = runner.invoke(app, ["search", "a colourful picture", "--db", str(db), "--json", "--top", "12"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 12
    values = [hit["relevance"] for hit in hits]
    assert all(0.0 <= value <= 1.0 for value in values)
    assert values == sorted(values, reverse=True)  # one query: relevance follows the score
    assert values[3] > values[4]
    cut = (values[3] + values[4]) / 2
    result = runner.invoke(app, ["search", "a colourful picture", "--db", str(db), "--json", "--top", "12",
                                 "--min-relevance", str(cut)])
    assert [hit["path"] for hit in json.loads(result.stdout)] == [hit["path"] for hit in hits[:4]]
    assert "below relevance" in result.stderr and "label-free" in result.stderr
    result = runner.invoke(app, ["search", "a colourful picture", "--db", str(db), "--min-relevance", "1"])
    assert result.exit_code == 0 and result.stdout == ""
    assert "12 results below relevance 1 hidden" not in result.stderr  # --top 10 by default
    assert "10 results below relevance 1 hidden" in result.stderr


def test_plain_output_shows_score_relevance_and_path(indexed):
    pics, db = indexed
    result = runner.invoke(app, ["search", "--image", str(pics / "img03.png"), "--db", str(db), "--top", "2"])
    first = result.stdout.splitlines()[0].split("\t")
    assert float(first[0]) > 0.999 and 0 <= float(first[1]) <= 1 and first[2] == str(pics / "img03.png")


def test_an_index_calibration_wins_over_the_models(indexed):
    _, db = indexed
    with Library(db, create=False) as library:
        info = library.model()
        assert calibration_for(library, info) == LABEL_FREE  # a random-weight config ships none
        mine = Calibration(text=LogisticMap(0.0, 0.0, 40.0), source="mine")  # everything certain
        library.set_info(INDEX_CALIBRATION_KEY, json.dumps({**mine.to_dict(), "fingerprint": info.fingerprint}))
        assert calibration_for(library, info) == mine
    result = runner.invoke(app, ["search", "anything", "--db", str(db), "--json", "--min-relevance", "0.99"])
    assert len(json.loads(result.stdout)) == 10 and "label-free" not in result.stderr
    with Library(db, create=False) as library:  # one for another model is not used
        library.set_info(INDEX_CALIBRATION_KEY, json.dumps({**mine.to_dict(), "fingerprint": "another"}))
        assert calibration_for(library, library.model()) == LABEL_FREE


def test_batch_queries_carry_relevance(indexed, tmp_path):
    _, db = indexed
    queries = tmp_path / "q.txt"
    queries.write_text("a dog\na cat\n")
    result = runner.invoke(app, ["search", "--queries", str(queries), "--db", str(db), "--json", "--top", "3"])
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["query"] for line in lines] == ["a dog", "a cat"]
    assert all("relevance" in hit for line in lines for hit in line["results"])


def test_an_open_clip_models_calibration_is_found_by_its_name_and_fingerprint(tmp_path, monkeypatch):
    from indexer.store.records import ModelInfo
    from retrieval.models.registry import resolve_model
    from retrieval.query import relevance

    monkeypatch.setattr(relevance, "CALIBRATIONS_DIR", tmp_path)
    spec = resolve_model("ViT-B-32-256:datacomp_s34b_b86k")  # parsing the name imports no open_clip
    assert relevance.calibration_path(spec) == tmp_path / "ViT-B-32-256_datacomp_s34b_b86k.json"
    fitted = Calibration(text=LogisticMap(8.0, 0.5, -5.0), image=LogisticMap(6.0, 0.4, -7.0), source="test")
    (tmp_path / "ViT-B-32-256_datacomp_s34b_b86k.json").write_text(
        json.dumps({**fitted.to_dict(), "fingerprint": "clip-fp"}))
    info = ModelInfo("ViT-B-32-256:datacomp_s34b_b86k", "open_clip:datacomp_s34b_b86k", 512, "clip-fp")
    assert model_calibration(info) == fitted
    assert model_calibration(ModelInfo(info.name, info.weights, 512, "other weights")) is None
    checkpoint = tmp_path / "mine.pt"
    checkpoint.write_bytes(b"")
    assert relevance.calibration_path(resolve_model(f"ViT-B-32:{checkpoint}")) is None  # a user's checkpoint


def test_the_web_api_carries_relevance_and_hides_weaker_matches_until_asked(indexed, tiny_model):
    from fastapi.testclient import TestClient

    from retrieval.server import ServerConfig, create_app
    from retrieval.server.engine import SearchEngine, WarmLibrary

    _, db = indexed
    engine = SearchEngine(WarmLibrary(db), tiny_model, ServerConfig(db=db))
    try:
        with TestClient(create_app(ServerConfig(db=db), engine=engine), base_url="http://127.0.0.1:8000") as client:
            every = client.get("/api/search", params={"q": "a colourful picture", "limit": 12}).json()
            values = [hit["relevance"] for hit in every["results"]]
            assert len(values) == 12 and every["weaker_hidden"] == 0
            assert all(0 <= value <= 1 for value in values) and values[3] > values[4]
            cut = (values[3] + values[4]) / 2
            strong = client.get("/api/search", params={"q": "a colourful picture", "limit": 12,
                                                       "min_relevance": cut}).json()
            assert [hit["id"] for hit in strong["results"]] == [hit["id"] for hit in every["results"][:4]]
            assert strong["weaker_hidden"] == 8 and not strong["has_more"]  # all 12 pictures ranked, 4 shown
            assert client.get("/api/search", params={"q": "x", "min_relevance": 1.5}).status_code == 422
            page = client.get("/").text
            assert 'id="show-weaker"' in page
    finally:
        engine.close()


# --- the bundled model on the sample pictures (real weights: fixed, so the figures are too) ---------
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory):
    if not (SAMPLE / "captions.csv").is_file():
        pytest.skip("data/sample is not there (python -m tools.bundled.make_pairs --sample)")
    root = tmp_path_factory.mktemp("sample")
    pics = root / "pics"
    shutil.copytree(SAMPLE, pics)
    db = root / "db"
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", "bundled"])
    assert result.exit_code == 0, result.output
    return pics, db


def test_calibrate_fits_the_index_on_its_own_pairs_and_search_then_uses_it(sample_index):
    pics, db = sample_index
    result = runner.invoke(app, ["calibrate", "--pairs", str(pics / "captions.csv"), "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["captions"] == 154 and figures["pairs_not_indexed"] == 0
    assert figures["text"]["z_weight"] > 0
    assert figures["ece_cross_validated"] < 0.05 < figures["ece_label_free"]
    with Library(db, create=False, read_only=True) as library:
        stored = calibration_for(library, library.model())
    assert stored.source.startswith("fitted on 154 captions") and stored.fitted_for("text")
    searched = runner.invoke(app, ["search", "rocket", "--db", str(db), "--json", "--top", "5"])
    assert searched.exit_code == 0 and "label-free" not in searched.stderr
    relevance = [hit["relevance"] for hit in json.loads(searched.stdout)]
    assert np.allclose(relevance, sorted(relevance, reverse=True))
    assert runner.invoke(app, ["calibrate", "--clear", "--db", str(db)]).exit_code == 0
    with Library(db, create=False, read_only=True) as library:
        assert not calibration_for(library, library.model()).source.startswith("fitted on 154")


def test_calibrate_refuses_pairs_whose_pictures_are_not_indexed(sample_index, tmp_path):
    _, db = sample_index
    pairs = tmp_path / "pairs.csv"
    lines = ["image,caption"]
    for i in range(30):
        write_image(tmp_path / f"elsewhere{i}.png", seed=i)
        lines.append(f"elsewhere{i}.png,picture {i}")
    pairs.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["calibrate", "--pairs", str(pairs), "--db", str(db)])
    assert result.exit_code != 0 and "0 distinct captions have their picture in the index" in result.output


def test_the_bundled_calibration_tells_matches_from_misses_on_pictures_it_was_not_fitted_on(sample_index):
    """The sample pictures (both styles, a 308-picture collection) were not in the fit: each caption searched as
    it is and with its pictures taken out, the shipped text map must rank the hits that match above those that
    do not, and be nearer the truth than the label-free estimate."""
    from retrieval.calibration import caption_items, query_features
    from retrieval.finetune.pairs import read_pairs
    from retrieval.index_model import search_model
    from retrieval.query.relevance import collection_size

    pics, db = sample_index
    pairs = read_pairs(pics / "captions.csv").pairs
    with Library(db, create=False) as library:
        info = library.model()
        shipped = model_calibration(info)
        assert shipped.source.startswith("fitted on emoji concepts")
        captions, missing = caption_items(pairs, library.reads.item_ids_by_path([str(pair.image) for pair in pairs]))
        features = query_features(library, search_model(library), captions)
        count = collection_size(library, library.encoders_sharing(info))
    assert len(captions) == 154 and missing == 0 and features.labels.sum() > 100
    predicted = shipped.text(features.scores, features.z)
    matches, misses = predicted[features.labels], predicted[~features.labels]
    auc = ((matches[:, None] > misses[None, :]).mean() + 0.5 * (matches[:, None] == misses[None, :]).mean())
    assert auc > 0.6  # 0.69 here; a map with z's sign flipped scores 0.31
    label_free = expected_calibration_error(label_free_relevance(features.z, count), features.labels)
    assert expected_calibration_error(predicted, features.labels) < label_free / 2  # 0.026 against 0.088
