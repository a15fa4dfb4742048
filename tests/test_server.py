"""The HTTP API in process (fastapi's TestClient): search, paging, filters, items, thumbnails, warm index.

Real SQLite, real FAISS, the tiny random model; the engine is opened once per module with the
session's model, and each test builds a cheap app around it.
"""
import io
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import write_image
from indexer.pipeline.sync import IndexConfig, index_folders
from indexer.store.library import Library
from retrieval.media import media_for
from retrieval.server import ServerConfig, create_app
from retrieval.server.engine import SearchEngine, WarmLibrary

BASE_URL = "http://127.0.0.1:8000"


def build_index(pics: Path, db: Path, model) -> None:
    with Library(db) as library, library.lock():
        index_folders(library, media_for(model), IndexConfig(roots=(str(pics),)))


def open_engine(db: Path, model, **options) -> SearchEngine:
    config = ServerConfig(db=db, **options)
    engine = SearchEngine(WarmLibrary(db), model, config)
    engine.warm()
    return engine


def client_for(engine: SearchEngine, **options) -> TestClient:
    config = ServerConfig(db=engine.config.db, **options)
    return TestClient(create_app(config, engine=engine), base_url=BASE_URL)


@pytest.fixture(scope="module")
def collection(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("server")
    pics = root / "pics"
    for i in range(6):
        write_image(pics / f"img{i}.png", seed=i)
    write_image(pics / "sub" / "photo.jpg", seed=9, size=(640, 480), fmt="JPEG")
    (pics / "broken.png").write_bytes(b"\x89PNG garbage")
    db = root / "db"
    build_index(pics, db, tiny_model)
    engine = open_engine(db, tiny_model)
    yield pics, db, engine
    engine.close()


@pytest.fixture(scope="module")
def client(collection):
    _, _, engine = collection
    with client_for(engine) as test_client:
        yield test_client


def item_id(client, path: Path) -> int:
    hits = client.get("/api/search", params={"q": "anything", "limit": 200}).json()["results"]
    return next(hit["id"] for hit in hits if hit["path"] == str(path))


def png_bytes(path: Path) -> bytes:
    return path.read_bytes()


# --- search ---------------------------------------------------------------------------------
def test_text_search_is_json_best_first_with_urls(client):
    response = client.get("/api/search", params={"q": "a colourful picture", "limit": 4})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    page = response.json()
    scores = [hit["score"] for hit in page["results"]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    first = page["results"][0]
    assert {"id", "path", "name", "score", "width", "height", "thumb_url", "image_url"} <= set(first)
    assert first["thumb_url"].startswith(f"/api/items/{first['id']}/thumb?size=256")
    assert page["has_more"] is True and page["next_offset"] == 4 and page["took_ms"] >= 0


def test_pages_are_slices_of_one_ranking(client):
    whole = client.get("/api/search", params={"q": "red boat", "limit": 7}).json()
    first = client.get("/api/search", params={"q": "red boat", "limit": 3}).json()
    second = client.get("/api/search", params={"q": "red boat", "offset": 3, "limit": 3}).json()
    last = client.get("/api/search", params={"q": "red boat", "offset": 6, "limit": 3}).json()
    ids = [hit["id"] for hit in whole["results"]]
    assert [hit["id"] for hit in first["results"] + second["results"] + last["results"]] == ids
    assert len(ids) == 7 and whole["has_more"] is False  # 7 items have vectors (broken.png failed)
    assert last["has_more"] is False and last["next_offset"] is None and len(last["results"]) == 1


def test_combined_query_differs_from_its_parts_and_matches_the_cli_math(collection, client, tiny_model):
    from retrieval.query.parse import combine

    _, _, engine = collection
    combined = client.get("/api/search", params={"q": "beach + sunset - people", "limit": 7}).json()["results"]
    vectors = tiny_model.text.embed_texts(["beach", "sunset", "people"])
    query = combine(vectors, [1.0, 1.0, -1.0])
    for hit in combined:
        stored = engine.library.reads.item_vectors(hit["id"], 64)
        assert len(stored) == 1 and hit["score"] == pytest.approx(float(stored[0] @ query), abs=1e-4)


def test_weighted_terms_and_only_negative_query(client):
    assert client.get("/api/search", params={"q": "2:red car + 0.5:night"}).status_code == 200
    response = client.get("/api/search", params={"q": " - dog"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_query" and "no positive term" in response.json()["error"]["message"]


@pytest.mark.parametrize("params", [{}, {"q": "   "}, {"q": ""}])
def test_nothing_to_search_for_is_400(client, params):
    response = client.get("/api/search", params=params)
    assert response.status_code == 400 and "nothing to search for" in response.json()["error"]["message"]


def test_a_text_term_naming_a_server_file_stays_text(collection, client):
    """Over HTTP a term is never read as a path on the server (the CLI's image-path shortcut)."""
    pics, _, _ = collection
    target = str(pics / "img2.png")
    hits = client.get("/api/search", params={"q": target, "limit": 1}).json()["results"]
    by_image = client.get("/api/search", params={"like": item_id(client, pics / "img2.png"), "limit": 1}).json()
    assert by_image["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert not (hits[0]["path"] == target and hits[0]["score"] > 0.999)


@pytest.mark.parametrize("params, message", [
    ({"q": "x", "limit": 0}, "limit"),
    ({"q": "x", "limit": 201}, "limit"),
    ({"q": "x", "offset": -1}, "offset"),
    ({"q": "x", "offset": 10_001}, "offset"),
    ({"q": "x", "after": "yesterday"}, "after"),
    ({"q": "x", "like": "seven"}, "like"),
    ({"q": "x" * 2001}, "q"),
])
def test_validation_errors_are_422_json(client, params, message):
    response = client.get("/api/search", params=params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation" and message in error["message"]


def test_filters(collection, client):
    pics, _, _ = collection
    names = lambda params: [hit["name"] for hit in client.get("/api/search", params={"q": "x", **params}).json()["results"]]
    assert names({"ext": "jpg"}) == ["photo.jpg"]
    assert names({"ext": "JPG,png", "limit": 50}).count("photo.jpg") == 1 and len(names({"ext": "jpg,png"})) == 7
    assert names({"path": "*/sub/*"}) == ["photo.jpg"]
    assert names({"after": "2999-01-01"}) == []
    assert len(names({"before": "2999-01-01T00:00"})) == 7
    assert names({"ext": "gif"}) == []


# --- more like this and images ------------------------------------------------------------------
def test_more_like_this_leaves_the_item_itself_out(collection, client):
    """Issue 13: "More like this" listed the item itself first."""
    pics, _, _ = collection
    wanted = item_id(client, pics / "img3.png")
    ids = lambda response: [hit["id"] for hit in response.json()["results"]]
    similar = client.get(f"/api/items/{wanted}/similar", params={"limit": 50})
    assert similar.status_code == 200 and wanted not in ids(similar) and len(ids(similar)) == 6  # 7 with vectors
    with_self = client.get(f"/api/items/{wanted}/similar", params={"limit": 50, "include_self": True})
    assert ids(with_self) == [wanted] + ids(similar) and with_self.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    # paging counts after the exclusion: two pages of 3 are the list of 6, and the second says no more
    first, second = (client.get(f"/api/items/{wanted}/similar", params={"limit": 3, "offset": offset}) for offset in (0, 3))
    assert ids(first) + ids(second) == ids(similar)
    assert first.json()["has_more"] is True and second.json()["has_more"] is False
    # a combined query keeps the item unless told to leave it out
    combined = client.get("/api/search", params={"like": wanted, "limit": 3})
    assert ids(combined)[0] == wanted
    assert wanted not in ids(client.get("/api/search", params={"like": wanted, "exclude": wanted, "q": "red"}))


def test_more_like_this_unknown_item_is_404_and_failed_item_is_400(collection, client):
    _, db, engine = collection
    assert client.get("/api/items/987654/similar").status_code == 404
    assert client.get("/api/search", params={"like": 987654}).json()["error"]["code"] == "not_found"
    broken = next(record for record in engine.library.reads.items(list(range(1, 20))).values()
                  if record.path.endswith("broken.png"))
    response = client.get(f"/api/items/{broken.id}/similar")
    assert response.status_code == 400 and "no vector" in response.json()["error"]["message"]


def test_too_many_items_in_one_query_is_400(client):
    response = client.get("/api/search", params={"like": list(range(1, 18))})
    assert response.status_code == 400 and "at most 16" in response.json()["error"]["message"]


def test_search_by_uploaded_image_multipart_and_raw(collection, client):
    pics, _, _ = collection
    data = png_bytes(pics / "img4.png")
    wanted = item_id(client, pics / "img4.png")
    multipart = client.post("/api/search", params={"limit": 2}, files={"image": ("q.png", data, "image/png")})
    raw = client.post("/api/search", params={"limit": 2}, content=data, headers={"Content-Type": "image/png"})
    for response in (multipart, raw):
        assert response.status_code == 200, response.text
        first = response.json()["results"][0]
        assert first["id"] == wanted and first["score"] == pytest.approx(1.0, abs=1e-4)


def test_uploaded_image_with_words_and_filters(collection, client):
    pics, _, _ = collection
    response = client.post("/api/search", params={"q": "dark", "ext": "jpg"},
                           files={"image": ("q.png", png_bytes(pics / "img1.png"), "image/png")})
    assert response.status_code == 200 and [hit["name"] for hit in response.json()["results"]] == ["photo.jpg"]


def test_the_form_field_q_is_combined_with_the_uploaded_image(collection, client):
    """Issue 13: the upload form's `q` field was ignored."""
    pics, _, _ = collection
    upload = {"image": ("q.png", png_bytes(pics / "img1.png"), "image/png")}
    scores = lambda response: [(hit["id"], hit["score"]) for hit in response.json()["results"]]
    image_only = client.post("/api/search", params={"limit": 50}, files=upload)
    in_form = client.post("/api/search", params={"limit": 50}, data={"q": "a dark picture"}, files=upload)
    as_param = client.post("/api/search", params={"limit": 50, "q": "a dark picture"}, files=upload)
    assert in_form.status_code == 200, in_form.text
    assert scores(in_form) == scores(as_param) and scores(in_form) != scores(image_only)
    both = client.post("/api/search", params={"limit": 50, "q": "a dark picture"}, data={"q": "sunset"}, files=upload)
    assert scores(both) == scores(client.post("/api/search", params={"limit": 50, "q": "a dark picture + sunset"},
                                              files=upload))
    too_long = client.post("/api/search", data={"q": "x" * 2001}, files=upload)
    assert too_long.status_code == 400 and "2000" in too_long.json()["error"]["message"]


def test_an_upload_is_searched_again_by_its_upload_id(collection, client):
    """The web UI keeps an uploaded query in its URL as ?upload=ID (and pages by it without sending the file)."""
    pics, _, engine = collection
    data = png_bytes(pics / "img4.png")
    posted = client.post("/api/search", params={"q": "red", "limit": 3}, files={"image": ("q.png", data, "image/png")})
    upload_ids = posted.json()["upload_ids"]
    assert len(upload_ids) == 1 and len(upload_ids[0]) == 32
    again = client.get("/api/search", params={"upload": upload_ids[0], "q": "red", "limit": 3})
    assert again.status_code == 200 and again.json()["results"] == posted.json()["results"]
    assert again.json()["upload_ids"] == []
    raw = client.post("/api/search", content=data, headers={"Content-Type": "image/png"})
    assert raw.json()["upload_ids"] == upload_ids  # named by its bytes: the same picture, the same id
    forgotten = client.get("/api/search", params={"upload": "0" * 32})
    assert forgotten.status_code == 410 and forgotten.json()["error"]["code"] == "upload_expired"
    assert "upload it again" in forgotten.json()["error"]["message"]
    assert client.get("/api/search", params={"upload": "../x"}).status_code == 400


def test_transparent_pictures_get_a_light_thumbnail_background(tmp_path, tiny_model):
    """Issue 13: transparent PNGs showed on black (the alpha channel was dropped, not composited)."""
    from retrieval.server.thumbnails import BACKGROUND

    pics = tmp_path / "pics"
    pics.mkdir()
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.paste((200, 30, 30, 255), (16, 16, 48, 48))
    rgba.save(pics / "alpha.png")
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([0, 0, 0, 30, 30, 200] + [0] * 762)
    palette.paste(1, (16, 16, 48, 48))
    palette.save(pics / "palette.gif", transparency=0)
    Image.new("RGB", (64, 64), (10, 120, 10)).save(pics / "opaque.png")
    build_index(pics, tmp_path / "db", tiny_model)
    engine = open_engine(tmp_path / "db", tiny_model)
    try:
        with client_for(engine) as client:
            ids = {hit["name"]: hit["id"] for hit in client.get("/api/search", params={"q": "x"}).json()["results"]}
            for name, centre in (("alpha.png", (200, 30, 30)), ("palette.gif", (30, 30, 200))):
                response = client.get(f"/api/items/{ids[name]}/thumb", params={"size": 128})
                assert response.status_code == 200, response.text
                thumb = Image.open(io.BytesIO(response.content)).convert("RGB")
                assert max(abs(a - b) for a, b in zip(thumb.getpixel((2, 2)), BACKGROUND)) <= 6, name
                assert max(abs(a - b) for a, b in zip(thumb.getpixel((32, 32)), centre)) <= 12, name
            opaque = client.get(f"/api/items/{ids['opaque.png']}/thumb")
            corner = Image.open(io.BytesIO(opaque.content)).convert("RGB").getpixel((2, 2))
            assert max(abs(a - b) for a, b in zip(corner, (10, 120, 10))) <= 6  # no background mixed in
    finally:
        engine.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"content": b"not an image", "headers": {"Content-Type": "image/png"}}, "uploaded image"),
    ({"content": b"", "headers": {"Content-Type": "image/png"}}, "empty"),
    ({"files": {"other": ("q.png", b"x", "image/png")}}, "field 'image'"),
    ({"content": b"{}", "headers": {"Content-Type": "application/json"}}, "multipart"),
])
def test_bad_uploads_are_400(client, kwargs, message):
    response = client.post("/api/search", **kwargs)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


# --- items, files, thumbnails ----------------------------------------------------------------
def test_item_metadata(collection, client):
    pics, _, _ = collection
    wanted = item_id(client, pics / "sub" / "photo.jpg")
    item = client.get(f"/api/items/{wanted}").json()
    assert item["path"] == str(pics / "sub" / "photo.jpg") and item["name"] == "photo.jpg"
    assert (item["width"], item["height"], item["format"]) == (640, 480, "JPEG")
    assert item["similar_url"] == f"/api/items/{wanted}/similar"
    assert client.get("/api/items/987654").status_code == 404
    assert client.get("/api/items/abc").status_code == 422


def test_full_image_is_the_indexed_file(collection, client):
    pics, _, _ = collection
    wanted = item_id(client, pics / "sub" / "photo.jpg")
    response = client.get(f"/api/items/{wanted}/image")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content == (pics / "sub" / "photo.jpg").read_bytes()
    assert response.headers["content-disposition"].startswith("inline")


def test_thumbnail_made_once_cached_on_disk_with_etag(collection, client):
    pics, db, _ = collection
    wanted = item_id(client, pics / "sub" / "photo.jpg")
    thumbs = client.app.state.thumbnails
    made = thumbs.made
    response = client.get(f"/api/items/{wanted}/thumb")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert "max-age" in response.headers["cache-control"] and response.headers["etag"]
    image = Image.open(io.BytesIO(response.content))
    assert max(image.size) == 256 and image.size == (256, 192)
    cached, = (db / "thumbs").glob(f"{wanted}-256-*.jpg")
    assert cached.read_bytes() == response.content
    again = client.get(f"/api/items/{wanted}/thumb", params={"v": "123"})
    assert again.content == response.content and thumbs.made == made + 1
    not_modified = client.get(f"/api/items/{wanted}/thumb", headers={"If-None-Match": response.headers["etag"]})
    assert not_modified.status_code == 304 and not_modified.content == b""
    small = client.get(f"/api/items/{wanted}/thumb", params={"size": 128})
    assert max(Image.open(io.BytesIO(small.content)).size) == 128
    assert client.get(f"/api/items/{wanted}/thumb", params={"size": 300}).status_code == 400


def test_thumbnail_is_remade_when_the_item_was_reindexed(collection, client):
    pics, db, _ = collection
    wanted = item_id(client, pics / "img5.png")
    client.get(f"/api/items/{wanted}/thumb")
    cached, = (db / "thumbs").glob(f"{wanted}-256-*.jpg")
    os.utime(cached, (1_000_000, 1_000_000))  # older than the item's indexed_at: stale
    made = client.app.state.thumbnails.made
    assert client.get(f"/api/items/{wanted}/thumb").status_code == 200
    assert client.app.state.thumbnails.made == made + 1 and cached.stat().st_mtime > 1_000_000


def test_thumbnail_of_a_file_that_no_longer_decodes_is_404(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    write_image(pics / "a.png", seed=1)
    build_index(pics, tmp_path / "db", tiny_model)
    engine = open_engine(tmp_path / "db", tiny_model)
    try:
        with client_for(engine) as client:
            (pics / "a.png").write_bytes(b"now garbage")
            response = client.get("/api/items/1/thumb")
            assert response.status_code == 404 and response.json()["error"]["code"] == "file_unavailable"
            (pics / "a.png").unlink()
            assert client.get("/api/items/1/image").json()["error"]["code"] == "file_unavailable"
    finally:
        engine.close()


# --- status, docs, pages ---------------------------------------------------------------------
def test_status(collection, client):
    from indexer.status import read_status

    _, _, engine = collection
    info = client.get("/api/status").json()
    assert info["items"] == 7 and info["failed"] == 1 and info["model"]["dim"] == 64
    assert info["server"]["loaded_index"]["vectors"] == 7 and info["server"]["auth"] is False
    assert info["server"]["max_upload_bytes"] == 20 * 1024 * 1024
    expected = read_status(engine.library)  # the CLI's summary: the same facts
    for key in ("db", "items", "rows", "failed", "model", "index_type", "vectors_in_index", "index_up_to_date"):
        assert info[key] == expected[key], key


def test_docs_and_openapi_work_offline(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/items/{item_id}", "/api/items/{item_id}/similar", "/api/items/{item_id}/thumb",
            "/api/items/{item_id}/image", "/api/status"} <= set(paths)
    assert "multipart/form-data" in paths["/api/search"]["post"]["requestBody"]["content"]


def test_ui_page_and_its_files_need_nothing_from_the_internet(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="results"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    static = Path(__file__).parents[1] / "retrieval" / "server" / "static"
    for path in static.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name
        assert client.get(f"/static/{path.name}").status_code == 200


def test_unknown_routes_and_methods_are_json(client):
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.delete("/api/search")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


# --- warm engine ------------------------------------------------------------------------------
def test_a_text_query_rebuilds_nothing(collection, client, monkeypatch):
    import retrieval.models.towers
    from indexer.store.vectors import VectorIndex

    def forbidden(*_args, **_kwargs):
        raise AssertionError("a warm query must not load or build anything")

    monkeypatch.setattr(VectorIndex, "load", forbidden)
    monkeypatch.setattr(VectorIndex, "build", forbidden)
    monkeypatch.setattr(retrieval.models.towers, "load_tower", forbidden)
    _, _, engine = collection
    reloads = engine.library.reloads
    for query in ("first new words", "second new words", "first new words"):
        assert client.get("/api/search", params={"q": query}).status_code == 200
    assert engine.library.reloads == reloads


def test_index_reloads_once_when_the_generation_changes(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    for i in range(3):
        write_image(pics / f"img{i}.png", seed=i)
    db = tmp_path / "db"
    build_index(pics, db, tiny_model)
    engine = open_engine(db, tiny_model)
    try:
        with client_for(engine) as client:
            assert len(client.get("/api/search", params={"q": "x"}).json()["results"]) == 3
            reloads = engine.library.reloads
            write_image(pics / "new.png", seed=42)
            build_index(pics, db, tiny_model)  # another process would do this: `mmsearch index`
            hits = client.get("/api/search", params={"q": "x"}).json()["results"]
            assert len(hits) == 4 and engine.library.reloads == reloads + 1
            client.get("/api/search", params={"q": "y"})
            assert engine.library.reloads == reloads + 1
    finally:
        engine.close()


def test_model_switched_under_the_server_is_409(tmp_path, tiny_model):
    from indexer.store.records import ModelInfo

    pics = tmp_path / "pics"
    write_image(pics / "a.png", seed=1)
    db = tmp_path / "db"
    build_index(pics, db, tiny_model)
    engine = open_engine(db, tiny_model)
    try:
        with client_for(engine) as client:
            assert client.get("/api/search", params={"q": "x"}).status_code == 200
            engine.library.staging.begin(ModelInfo("other", "random(seed=5)", 64, "f" * 16))
            engine.library.staging.swap_in()
            response = client.get("/api/search", params={"q": "x"})
            assert response.status_code == 409 and "restart" in response.json()["error"]["message"]
    finally:
        engine.close()


def test_create_app_loads_the_index_model_itself(collection):
    _, db, _ = collection
    app = create_app(ServerConfig(db=db, torch_threads=None))  # None: leave this process's torch as it is
    with TestClient(app, base_url=BASE_URL) as client:
        assert client.get("/api/search", params={"q": "x", "limit": 1}).status_code == 200
        assert app.state.engine.model.text_built and not app.state.engine.model.image_built
