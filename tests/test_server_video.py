"""Videos over HTTP: a hit's moment and thumbnail (the frame then), and the file with Range requests.

The clips are test_video's (PyAV, shots of a few seconds each); the server is the in-process
TestClient over a real index made with the tiny random model.
"""
import io

import numpy as np
import pytest
from PIL import Image
from test_server import build_index, client_for, open_engine
from test_video import make_clip, rotate_mp4, shot, still

from conftest import write_image

pytest.importorskip("av")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("server-video")
    media = root / "media"
    media.mkdir()
    make_clip(media / "holiday.mp4", [10, 11, 12, 13])
    rotate_mp4(make_clip(media / "portrait.mp4", [14, 15]))
    write_image(media / "photo.png", seed=1)
    build_index(media, root / "db", tiny_model)
    engine = open_engine(root / "db", tiny_model)
    with client_for(engine) as client:
        yield client, media, root, engine
    engine.close()


def hits_for_still(client, path, **params):
    response = client.post("/api/search", params=params, files={"image": ("still.png", path.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_a_video_hit_carries_its_moment_thumbnail_and_player_url(served, tmp_path):
    client, media, _, engine = served
    hits = hits_for_still(client, still(tmp_path / "s12.png", 12))
    first = hits[0]
    assert first["path"] == str(media / "holiday.mp4") and first["modality"] == "video"
    assert abs(first["time"] - 6.0) <= 1.0 and first["moments"][0]["time"] == first["time"]
    assert first["video_url"] == f"/api/items/{first['id']}/video"
    assert f"&t={first['time']:.3f}" in first["thumb_url"]
    photo = next(hit for hit in hits if hit["modality"] == "image")
    assert photo["video_url"] is None and "t=" not in photo["thumb_url"]

    made = served_thumbs(client)
    response = client.get(first["thumb_url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    picture = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), np.float32)
    step = round((first["time"] - 6.0) * 10)
    errors = {number: np.abs(picture - shot(number, step)).mean() for number in (10, 11, 12, 13)}
    assert min(errors, key=errors.get) == 12, errors  # the frame of that moment, not the video's first
    assert served_thumbs(client) == made + 1
    again = client.get(first["thumb_url"], headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and served_thumbs(client) == made + 1  # cached
    # a time between moments gets the nearest stored moment's frame (no file per millisecond)
    near = client.get(f"/api/items/{first['id']}/thumb", params={"size": 256, "t": first["time"] + 0.01})
    assert near.headers["etag"] == response.headers["etag"] and served_thumbs(client) == made + 1
    assert client.get(f"/api/items/{first['id']}/thumb", params={"t": "nan"}).status_code == 422
    assert client.get(f"/api/items/{first['id']}/thumb", params={"t": -1}).status_code == 422
    assert client.get(f"/api/items/{photo['id']}/thumb", params={"t": 1}).status_code == 400
    item = client.get(f"/api/items/{first['id']}").json()
    assert item["modality"] == "video" and item["video_url"] == first["video_url"]


def served_thumbs(client) -> int:
    return client.app.state.thumbnails.made


def test_the_video_file_is_served_with_range_requests(served, tmp_path):
    client, media, _, _ = served
    hits = hits_for_still(client, still(tmp_path / "s11.png", 11))
    video = next(hit for hit in hits if hit["modality"] == "video" and hit["name"] == "holiday.mp4")
    data = (media / "holiday.mp4").read_bytes()
    whole = client.get(video["video_url"])
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    part = client.get(video["video_url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(video["video_url"], headers={"Range": f"bytes={len(data) - 10}-"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert client.get(video["video_url"], headers={"Range": f"bytes={len(data) + 5}-"}).status_code == 416
    photo = next(hit for hit in hits if hit["modality"] == "image")
    assert client.get(f"/api/items/{photo['id']}/video").status_code == 404


def test_a_portrait_videos_thumbnail_stands_upright(served, tmp_path):
    client, _, _, _ = served
    hits = hits_for_still(client, still(tmp_path / "s14.png", 14))
    portrait = next(hit for hit in hits if hit["name"] == "portrait.mp4")
    assert (portrait["width"], portrait["height"]) == (96, 160)
    picture = Image.open(io.BytesIO(client.get(portrait["thumb_url"]).content))
    assert picture.width < picture.height


def test_a_moved_video_is_refused_like_a_moved_image(served, tmp_path):
    """The file guard's rule holds for videos: a symlink swapped in for the file is not followed outside."""
    client, media, root, _ = served
    outside = make_clip(root / "outside.mp4", [16])
    hits = hits_for_still(client, still(tmp_path / "s15.png", 15))
    portrait = next(hit for hit in hits if hit["name"] == "portrait.mp4")
    target = media / "portrait.mp4"
    kept = target.read_bytes()
    target.unlink()
    target.symlink_to(outside)
    try:
        assert client.get(portrait["video_url"]).status_code == 403
    finally:
        target.unlink()
        target.write_bytes(kept)
