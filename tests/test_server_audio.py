"""Sounds over HTTP: words rank sounds beside pictures, `modality` narrows, a sound's hit carries its
window time and player URL, the file is served with Range requests, the thumbnail is its waveform.

The index is real (the tiny random image model, the bundled audio tower in its own space); the
sounds are test_audio's (synthesised with numpy); the server is the in-process TestClient.
"""
import io

import numpy as np
import pytest
from PIL import Image
from test_audio import RATE, tone, varied, write_wav
from test_server import client_for, open_engine

from conftest import write_image
from indexer.pipeline.sync import IndexConfig, index_folders
from indexer.store.library import Library
from retrieval.media import media_for, open_audio_model

pytest.importorskip("av")


def build_audio_index(media, db, model) -> None:
    audio = open_audio_model("bundled", model)
    with Library(db) as library, library.lock():
        index_folders(library, media_for(model, audio=audio), IndexConfig(roots=(str(media),)))


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("server-audio")
    media = root / "media"
    media.mkdir()
    write_wav(media / "long.wav", varied(30, seed=1))  # windows at 0, 5, 10, 15, 20 s
    write_wav(media / "beep.wav", tone(880, 1.5))
    write_image(media / "photo.png", seed=1)
    write_image(media / "other.jpg", seed=2)
    build_audio_index(media, root / "db", tiny_model)
    engine = open_engine(root / "db", tiny_model)
    with client_for(engine) as client:
        yield client, media, root, engine
    engine.close()


def search(client, **params):
    response = client.get("/api/search", params=params)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_words_rank_sounds_beside_pictures_and_modality_narrows(served):
    client, media, _, _ = served
    both = search(client, q="a dog barking")
    assert {hit["modality"] for hit in both} == {"image", "audio"} and len(both) == 4
    assert [hit["score"] for hit in both] == sorted((hit["score"] for hit in both), reverse=True)
    sounds = search(client, q="a dog barking", modality="audio")
    assert {hit["path"] for hit in sounds} == {str(media / "long.wav"), str(media / "beep.wav")}
    assert all(hit["time"] is not None and hit["audio_url"] == f"/api/items/{hit['id']}/audio" for hit in sounds)
    assert all(hit["video_url"] is None and "t=" not in hit["thumb_url"] for hit in sounds)
    pictures = search(client, q="a dog barking", modality="image")
    assert {hit["modality"] for hit in pictures} == {"image"} and len(pictures) == 2
    assert all(hit["audio_url"] is None for hit in pictures)
    assert search(client, q="a dog barking", modality="image,audio") == both
    assert search(client, q="a dog barking", modality="all") == both
    bad = client.get("/api/search", params={"q": "x", "modality": "smell"})
    assert bad.status_code == 400 and "modality" in bad.json()["error"]["message"]


def test_more_like_a_sound_ranks_sounds_from_its_window(served):
    client, media, _, engine = served
    long_id = next(hit["id"] for hit in search(client, q="noise", modality="audio") if hit["path"].endswith("long.wav"))
    hits = client.get(f"/api/items/{long_id}/similar", params={"include_self": "true"}).json()["results"]
    assert hits[0]["id"] == long_id and {hit["modality"] for hit in hits} == {"audio"}
    photo_id = next(hit["id"] for hit in search(client, q="noise", modality="image"))
    pictures = client.get(f"/api/items/{photo_id}/similar").json()["results"]
    assert {hit["modality"] for hit in pictures} == {"image"}  # a picture ranks pictures
    refused = client.get("/api/search", params={"like": long_id, "modality": "image"})
    assert refused.status_code == 400 and "ranks sounds" in refused.json()["error"]["message"]


def test_a_sound_is_served_with_range_requests_and_has_a_waveform_thumbnail(served):
    client, media, _, _ = served
    hit = next(hit for hit in search(client, q="beep", modality="audio") if hit["path"].endswith("long.wav"))
    whole = (media / "long.wav").read_bytes()
    response = client.get(hit["audio_url"])
    assert response.status_code == 200 and response.content == whole
    part = client.get(hit["audio_url"], headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == whole[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(whole)}"
    photo = search(client, q="beep", modality="image")[0]
    assert client.get(f"/api/items/{photo['id']}/audio").status_code == 404
    assert client.get(f"/api/items/{hit['id']}/video").status_code == 404

    thumb = client.get(hit["thumb_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    picture = np.asarray(Image.open(io.BytesIO(thumb.content)).convert("L"), np.float32)
    assert picture.shape == (256, 256)
    middle, edge = picture[120:136].mean(), picture[:8].mean()
    assert middle > edge + 60, (middle, edge)  # a waveform: bright about the middle, dark background
    assert client.get(hit["thumb_url"] + "&t=12").status_code == 200  # t is ignored for a sound
    item = client.get(f"/api/items/{hit['id']}").json()
    assert item["audio_url"] == hit["audio_url"] and item["modality"] == "audio"


def test_the_waveform_follows_the_sound():
    from retrieval.server.waveform import draw_waveform

    samples = np.concatenate([np.zeros(RATE, np.float32), tone(440, 1.0)])  # silence, then a tone
    picture = np.asarray(draw_waveform(samples, 100, 60).convert("L"), np.float32)
    quiet, loud = picture[:, :45], picture[:, 55:]
    assert (quiet[:20] < 60).all() and (loud[5:55] > 100).all()  # the tone's half fills the height
