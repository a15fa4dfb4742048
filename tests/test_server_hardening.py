"""What an attacker and bad luck tried against the server (issue 14), each on the real app over a real index
with the tiny model: files served through a race, forgotten folders and hard links; upload memory;
out-of-range input; heavy queries from one client; sign-in guessing, weak tokens, sessions after logout.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from test_server import BASE_URL, build_index, client_for, open_engine
from typer.testing import CliRunner

from cli.app import app as cli_app
from conftest import write_image
from indexer.pipeline.sync import forget_paths
from indexer.store.library import Library
from retrieval.server import ServerConfig, create_app
from retrieval.server.errors import FileUnavailableError, ServerConfigError
from retrieval.server.security import COOKIE_NAME

TOKEN = "correct-horse-battery-staple"


@pytest.fixture()
def collection(tmp_path, tiny_model):
    """pics/{a,b}.png, pics/sub/c.png, pics/private/p.png indexed; outside/secret.png and elsewhere/c.png not."""
    pics = tmp_path / "pics"
    for name, seed in (("a.png", 1), ("b.png", 2), ("sub/c.png", 3), ("private/p.png", 4)):
        write_image(pics / name, seed=seed)
    write_image(tmp_path / "outside" / "secret.png", seed=99)
    write_image(tmp_path / "elsewhere" / "c.png", seed=77)
    db = tmp_path / "db"
    build_index(pics, db, tiny_model)
    engine = open_engine(db, tiny_model)
    yield pics, db, engine
    engine.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_model):
    """The same collection, built once for the tests that change nothing on disk."""
    root = tmp_path_factory.mktemp("hardening")
    pics = root / "pics"
    for name, seed in (("a.png", 1), ("b.png", 2), ("sub/c.png", 3), ("private/p.png", 4)):
        write_image(pics / name, seed=seed)
    db = root / "db"
    build_index(pics, db, tiny_model)
    engine = open_engine(db, tiny_model)
    yield pics, db, engine
    engine.close()


def ids_by_name(engine) -> dict[str, int]:
    return {Path(record.path).name: record.id for record in engine.library.reads.items(list(range(1, 50))).values()}


# --- 1. files: one open, no link followed by the kernel, served from that descriptor -------------------
def test_a_folder_swapped_back_and_forth_never_serves_the_outside_file(collection, tmp_path):
    """Issue 14: swapping pics/sub for a symlink to an outside folder while a client fetched served the
    outside bytes in 267 of 1,000 responses, and cached the outside picture's thumbnail for good."""
    pics, db, engine = collection
    wanted = ids_by_name(engine)["c.png"]
    inside = (pics / "sub" / "c.png").read_bytes()
    elsewhere = tmp_path / "elsewhere"
    stop = threading.Event()
    swaps = [0]

    def swap() -> None:
        while not stop.is_set():
            os.rename(pics / "sub", pics / ".sub-away")
            os.symlink(elsewhere, pics / "sub")
            os.unlink(pics / "sub")
            os.rename(pics / ".sub-away", pics / "sub")
            swaps[0] += 1

    with client_for(engine) as client:
        inside_thumb = client.get(f"/api/items/{wanted}/thumb").content
        thread = threading.Thread(target=swap, daemon=True)
        thread.start()
        statuses: dict[int, int] = {}
        try:
            for _ in range(150):
                for path in (db / "thumbs").glob("*.jpg"):  # so every thumbnail request makes one
                    path.unlink(missing_ok=True)
                for kind in ("image", "thumb"):
                    response = client.get(f"/api/items/{wanted}/{kind}")
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    assert response.status_code in (200, 403, 404), response.text
                    if response.status_code == 200:
                        assert response.content == (inside if kind == "image" else inside_thumb), kind
        finally:
            stop.set()
            thread.join()
        assert swaps[0] > 50 and statuses.get(200, 0) > 0, (swaps, statuses)
        assert client.get(f"/api/items/{wanted}/thumb").content == inside_thumb  # nothing outside was cached


def test_the_served_bytes_are_those_of_the_file_that_was_checked(collection, tmp_path):
    """The check and the read are one open: a swap after the check cannot change what is sent."""
    pics, _, engine = collection
    with client_for(engine) as client:
        record = engine.item(ids_by_name(engine)["c.png"])
        opened = client.app.state.files.open(record)
        inside = (pics / "sub" / "c.png").read_bytes()
        os.rename(pics / "sub", pics / ".sub-away")
        os.symlink(tmp_path / "elsewhere", pics / "sub")
        with opened, opened.reader() as handle:
            assert handle.read() == inside
        assert client.get(f"/api/items/{record.id}/image").status_code == 403


def test_a_forgotten_folder_is_not_served_through_a_symlink_until_indexed_again(collection, tiny_model):
    pics, db, engine = collection
    ids = ids_by_name(engine)
    with Library(db) as library, library.lock():
        assert forget_paths(library, [str(pics / "private")]) == 1
    (pics / "a.png").unlink()
    os.symlink(pics / "private" / "p.png", pics / "a.png")  # an indexed item now names a forgotten file
    with client_for(engine) as client:
        for kind in ("image", "thumb"):
            response = client.get(f"/api/items/{ids['a.png']}/{kind}")
            assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden_file", kind
        assert client.get(f"/api/items/{ids['b.png']}/image").status_code == 200
        build_index(pics / "private", db, tiny_model)  # indexing it again serves it again
        assert client.get(f"/api/items/{ids['a.png']}/image").content == (pics / "private" / "p.png").read_bytes()


def test_a_forgotten_root_is_not_served_through_a_symlink(collection, tmp_path, tiny_model):
    pics, db, engine = collection
    other = tmp_path / "other"
    write_image(other / "o.png", seed=12)
    build_index(other, db, tiny_model)
    with Library(db) as library, library.lock():
        forget_paths(library, [str(other)])
    (pics / "b.png").unlink()
    os.symlink(other / "o.png", pics / "b.png")
    with client_for(engine) as client:
        assert client.get(f"/api/items/{ids_by_name(engine)['b.png']}/image").status_code == 403


def test_a_hard_link_is_refused_unless_the_server_allows_hard_links(collection, tmp_path):
    pics, _, engine = collection
    ids = ids_by_name(engine)
    secret = tmp_path / "outside" / "secret.png"
    (pics / "a.png").unlink()
    os.link(secret, pics / "a.png")  # same inode as a file outside the indexed folders
    with client_for(engine) as client:
        for kind in ("image", "thumb"):
            response = client.get(f"/api/items/{ids['a.png']}/{kind}")
            assert response.status_code == 403, kind
            assert "--allow-hard-links" in response.json()["error"]["message"]
            assert secret.read_bytes()[:64] not in response.content
    with client_for(engine, allow_hard_links=True) as client:  # serve --allow-hard-links
        assert client.get(f"/api/items/{ids['a.png']}/image").content == secret.read_bytes()


def test_served_folders_rule_latest_index_or_forget_decides():
    from retrieval.server.files import ServedFolders

    folders = ServedFolders.from_history([
        ("index", ("/p",)), ("index", ("/q",)), ("forget", ("/p/private", "/q")), ("reindex", ("/x",)),
        ("index", ("/p/private/kept",)),
    ], realpath=lambda path: path)
    assert folders.covers("/p/a.png") and folders.covers("/p") and folders.covers("/p/private/kept/k.png")
    assert not folders.covers("/p/private/s.png") and not folders.covers("/q/x.png")
    assert not folders.covers("/pp/a.png") and not folders.covers("/x/a.png") and not folders.covers("/")
    assert folders.roots == ("/p", "/p/private/kept")
    again = ServedFolders.from_history([("index", ("/p",)), ("forget", ("/p",)), ("index", ("/p",))], realpath=str)
    assert again.covers("/p/a.png")


def test_open_resolved_resolves_links_itself(tmp_path):
    from retrieval.server.files import open_resolved

    write_image(tmp_path / "real" / "x.png", seed=1)
    os.symlink("real", tmp_path / "rel")  # relative, to a folder
    os.symlink(tmp_path / "real" / "x.png", tmp_path / "abs.png")
    os.symlink("../real/x.png", tmp_path / "real" / "up.png")
    for name in ("real/x.png", "rel/x.png", "abs.png", "real/up.png", "rel/../real/x.png"):
        with open_resolved(str(tmp_path / name)) as opened:
            assert opened.real_path == os.path.realpath(tmp_path / "real" / "x.png"), name
    os.symlink("loop", tmp_path / "loop")
    os.mkfifo(tmp_path / "pipe.png")
    for name, reason in (("loop", "too many symlinks"), ("pipe.png", "not a regular file"),
                         ("missing.png", "missing"), ("real/x.png/y", "not a folder")):
        with pytest.raises(FileUnavailableError, match=reason):
            open_resolved(str(tmp_path / name))


# --- 3. uploads: memory bounded before decoding; uploads at once bounded ------------------------------
def png_16bit_white(width: int, height: int) -> bytes:
    """A valid 16-bit greyscale PNG, all white (65535): a few hundred KB that decode to width*height*2 bytes and more."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor, row, parts = zlib.compressobj(9), b"\0" + b"\xff" * (width * 2), []
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def _peak_rss_mb() -> float:
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def test_an_upload_that_would_take_too_much_memory_to_decode_is_413_before_decoding(shared):
    """Issue 14: a 220 KB 16-bit 10000x10000 PNG took the server from 1.1 to 2.8 GB."""
    _, _, engine = shared
    data = png_16bit_white(6000, 6000)  # 36 MP x 2 bytes, ~700 MB to decode and scale to 8 bits
    assert len(data) < 200_000
    with client_for(engine) as client:
        _reset_peak_rss()
        before = _peak_rss_mb()
        response = client.post("/api/search", content=data, headers={"Content-Type": "image/png"})
        grown = _peak_rss_mb() - before
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert "MB" in response.json()["error"]["message"] and "6000x6000" in response.json()["error"]["message"]
    assert grown < 100, f"the server's peak memory grew {grown:.0f} MB"


def test_an_upload_within_the_decode_budget_is_searched(shared):
    pics, _, engine = shared
    data = (pics / "a.png").read_bytes()
    with client_for(engine, max_decode_bytes=10 * 2**20) as client:
        assert client.post("/api/search", content=data, headers={"Content-Type": "image/png"}).status_code == 200
    with client_for(engine, max_decode_bytes=1000) as client:  # 96x72 RGB: ~35 KB to decode
        assert client.post("/api/search", content=data, headers={"Content-Type": "image/png"}).status_code == 413


@pytest.fixture()
def live_server(shared):
    """The app under real uvicorn in a thread on a free loopback port; yields (start(config options) -> base URL)."""
    import uvicorn

    pics, db, engine = shared
    servers = []
    encoder = engine.text_encoder

    def start(**options) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        app = create_app(ServerConfig(db=db, port=port, **options), engine=engine)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start, pics, engine
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)
    engine.text_encoder = encoder


def _hold_upload(base: str, source: str = "127.0.0.1") -> socket.socket:
    """An upload whose body never finishes arriving: it holds its upload slot while the socket is open."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), source_address=(source, 0))
    sock.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                 b"Content-Length: 100000\r\n\r\n" + b"\0" * 100)
    return sock


def test_uploads_beyond_the_slots_get_503_with_retry_after(live_server):
    start, pics, _ = live_server
    base = start(upload_slots=2, upload_wait_s=0.3, searches_per_client=8)
    data = (pics / "b.png").read_bytes()
    held = [_hold_upload(base), _hold_upload(base)]
    try:
        time.sleep(0.3)  # both are in their slots
        response = httpx.post(base + "/api/search", content=data, headers={"Content-Type": "image/png"}, timeout=10)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "busy" and int(response.headers["retry-after"]) >= 1
        assert httpx.get(base + "/api/search", params={"q": "words need no slot"}, timeout=10).status_code == 200
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the held uploads end once their sockets close
        response = httpx.post(base + "/api/search", content=data, headers={"Content-Type": "image/png"}, timeout=10)
        if response.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert response.status_code == 200


# --- 5. out-of-range input: 4xx JSON, no traceback ---------------------------------------------------
@pytest.mark.parametrize("path, params, status", [
    ("/api/items/99999999999999999999", {}, 404),
    ("/api/items/-3/image", {}, 404),
    ("/api/items/99999999999999999999/similar", {}, 404),
    ("/api/search", {"like": "99999999999999999999"}, 404),
    ("/api/search", {"q": "x", "after": "0001-01-01"}, 400),
    ("/api/search", {"q": "x", "before": "0001-01-01T00:00:00+14:00"}, 400),
    ("/api/search", {"q": "x", "after": "9999-12-31T23:59:59-12:00"}, 400),
    ("/api/search", {"q": "x", "ext": [f"e{number}" for number in range(1500)]}, 400),
    ("/api/search", {"q": "x", "ext": "j%p*g"}, 400),
    ("/api/search", {"q": "1" + "0" * 40 + ":cat"}, 400),
    ("/api/search", {"q": "1" + "0" * 400 + ":cat"}, 400),
])
def test_out_of_range_input_is_a_4xx_json_error_without_a_traceback(shared, caplog, path, params, status):
    _, _, engine = shared
    with client_for(engine) as client, caplog.at_level(logging.WARNING):
        response = client.get(path, params=params)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] in ("not_found", "bad_query") and error["message"]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_dates_at_the_edges_of_the_range_still_filter(shared):
    _, _, engine = shared
    with client_for(engine) as client:
        everything = client.get("/api/search", params={"q": "x", "after": "0002-01-01", "before": "9998-12-31"})
        assert everything.status_code == 200 and len(everything.json()["results"]) == 4


def test_extensions_are_deduplicated_and_capped(shared):
    """Issue 14: `ext` repeated 1,500 times gave 503 (SQLite's expression depth limit)."""
    _, _, engine = shared
    with client_for(engine) as client:
        assert len(client.get("/api/search", params={"q": "x", "ext": ["PNG", ".png", "png,jpg"]}).json()["results"]) == 4
        repeated = client.get("/api/search", params={"q": "x", "ext": ["png"] * 1500})
        assert repeated.status_code == 200 and len(repeated.json()["results"]) == 4
        many = [f"e{number}" for number in range(33)]
        response = client.get("/api/search", params={"q": "x", "ext": many})
        assert response.status_code == 400 and "at most 32" in response.json()["error"]["message"]


# --- 6. heavy queries: terms capped, batched, one client cannot starve another ----------------------
def test_a_query_of_150_terms_is_refused_with_the_limit(shared):
    _, _, engine = shared
    query = " + ".join(f"w{number}" for number in range(150))
    assert len(query) < 2000
    with client_for(engine) as client:
        started = time.perf_counter()
        response = client.get("/api/search", params={"q": query})
        assert time.perf_counter() - started < 5
        assert response.status_code == 400 and "150 terms; the limit is 16" in response.json()["error"]["message"]
        assert client.get("/api/search", params={"q": " + ".join(f"w{n}" for n in range(16))}).status_code == 200


class CountingEncoder:
    """The engine's real text encoder, counting its calls; texts with "heavy" wait for `release`."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()

    def embed_texts(self, texts):
        self.calls.append(list(texts))
        if any("heavy" in text for text in texts):
            assert self.release.wait(30), "never released"
        return self.encoder.embed_texts(texts)


def test_the_terms_of_one_query_are_embedded_in_one_batch(shared):
    _, _, engine = shared
    counting = CountingEncoder(engine.text_encoder)
    engine.text_encoder = counting
    query = " + ".join(f"term number {n}" for n in range(16))
    try:
        with client_for(engine) as client:
            assert client.get("/api/search", params={"q": query}).status_code == 200
    finally:
        engine.text_encoder = counting.encoder
    assert len(counting.calls) == 1 and len(counting.calls[0]) == 16


def _heavy_client(base: str, numbers, results: list[int]) -> list[threading.Thread]:
    """One client (127.0.0.2) sending a search per number at once, each in its own thread."""
    def heavy(number: int) -> None:
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport, timeout=60) as client:
            results.append(client.get(base + "/api/search", params={"q": f"heavy query {number}"}).status_code)

    threads = [threading.Thread(target=heavy, args=(number,), daemon=True) for number in numbers]
    for thread in threads:
        thread.start()
    return threads


def test_one_client_with_many_heavy_searches_cannot_starve_another(live_server):
    """Issue 14: 8 clients of ~150-term queries took a normal query from 12 ms to 4-5 s. Here one client
    (127.0.0.2) sends more searches at once than there are model threads, each held on its model thread
    until released; another client (127.0.0.1) must still get its answer meanwhile."""
    start, _, engine = live_server
    counting = CountingEncoder(engine.text_encoder)
    counting.release.clear()
    engine.text_encoder = counting
    base = start()  # the default share: half the model threads for one client
    results: list[int] = []
    threads = _heavy_client(base, range(engine._model_workers + 3), results)  # texts never cached before
    try:
        deadline = time.monotonic() + 20
        while not counting.calls and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # the rest of the heavy searches arrive: they take every thread they may
        assert counting.calls and not results, results
        started = time.perf_counter()
        normal = httpx.get(base + "/api/search", params={"q": "a normal query from another client"}, timeout=15)
        assert normal.status_code == 200 and time.perf_counter() - started < 10
    finally:
        counting.release.set()
        for thread in threads:
            thread.join(timeout=30)
    assert set(results) <= {200, 429} and results.count(200) >= engine.searches_per_client


def test_searches_beyond_a_clients_share_wait_or_get_429(live_server):
    start, _, engine = live_server
    counting = CountingEncoder(engine.text_encoder)
    counting.release.clear()
    engine.text_encoder = counting
    base = start(searches_per_client=1, queued_per_client=2)
    results: list[int] = []
    threads = _heavy_client(base, range(100, 105), results)  # texts no other test embedded (none cached)
    try:
        deadline = time.monotonic() + 20
        while results.count(429) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert results == [429, 429], results  # 1 running, 2 waiting, the rest refused (after a delay)
        assert len(counting.calls) == 1
    finally:
        counting.release.set()
        for thread in threads:
            thread.join(timeout=30)
    assert sorted(results) == [200, 200, 200, 429, 429]


# --- 8. sign-in: guessing braked per client, strong tokens beyond localhost, logout ends the session ----
@pytest.fixture()
def locked_app(shared):
    _, _, engine = shared
    app = create_app(ServerConfig(db=engine.config.db, token=TOKEN, host="0.0.0.0"), engine=engine)
    now = [1000.0]
    app.state.throttle.clock = lambda: now[0]
    return app, now


def test_wrong_tokens_are_braked_per_client(locked_app):
    """Issue 14: 128 guesses/s on the API and 73/s on /login went unthrottled."""
    app, now = locked_app
    with TestClient(app, base_url=BASE_URL, client=("203.0.113.7", 5000)) as attacker, \
            TestClient(app, base_url=BASE_URL, client=("198.51.100.2", 5000)) as other:
        statuses = [attacker.get("/api/status", headers={"Authorization": f"Bearer guess-{n:04d}-xxxxxxxx"}).status_code
                    for n in range(40)]
        assert statuses[:5] == [401] * 5 and set(statuses[6:]) == {429}, statuses
        braked = attacker.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert braked.status_code == 429 and int(braked.headers["retry-after"]) >= 1  # even the right one, unchecked
        assert braked.json()["error"]["code"] == "too_many_requests"
        assert attacker.post("/login", data={"token": TOKEN}, follow_redirects=False).status_code == 429
        form = attacker.post("/login", data={"token": TOKEN}, headers={"Accept": "text/html"}, follow_redirects=False)
        assert form.status_code == 303 and "error=wait" in form.headers["location"]
        assert attacker.get("/api/status", params={"token": TOKEN}).status_code == 429
        assert other.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        now[0] += 16 * 60  # past the longest wait
        assert attacker.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert attacker.get("/api/status", headers={"Authorization": "Bearer wrong-again-xxxxxxxx"}).status_code == 401


def test_login_guesses_are_braked_and_a_session_survives_the_brake(locked_app):
    app, _ = locked_app
    with TestClient(app, base_url=BASE_URL, client=("203.0.113.8", 5000)) as client:
        assert client.post("/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303
        statuses = [client.post("/login", data={"token": f"guess-{n}"}, follow_redirects=False).status_code
                    for n in range(12)]
        assert statuses[:5] == [401] * 5 and set(statuses[6:]) == {429}, statuses
        assert client.get("/api/status").status_code == 200  # the session from the first login still works


def test_logout_ends_the_session_on_the_server(locked_app):
    """Issue 14: the session cookie still worked after /logout."""
    app, _ = locked_app
    with TestClient(app, base_url=BASE_URL) as client:
        login = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
        session = login.cookies[COOKIE_NAME]
        assert client.get("/api/status").status_code == 200
        assert client.post("/logout", follow_redirects=False).status_code == 303
        client.cookies.set(COOKIE_NAME, session)  # a copy of the cookie, kept by the client or anyone
        response = client.get("/api/status")
        assert response.status_code == 401 and "session has ended" in response.json()["error"]["message"]
        again = client.post("/login", data={"token": TOKEN}, follow_redirects=False).cookies[COOKIE_NAME]
        assert again != session


@pytest.mark.parametrize("token", ["password", "passwordpassword", "0000111122223333", "aaaaaaaaaaaaaaaaaaaaaaaa"])
def test_a_weak_token_is_refused_beyond_localhost(token):
    with pytest.raises(ServerConfigError, match="at least 16 characters"):
        ServerConfig(db=Path("x"), host="0.0.0.0", token=token).check()
    if len(token) >= 8:
        ServerConfig(db=Path("x"), host="127.0.0.1", token=token).check()


def test_cli_refuses_a_weak_token_with_a_public_host(tmp_path):
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--token", "password", "--db", str(tmp_path)])
    assert result.exit_code == 1 and "--generate-token" in result.stderr and "Traceback" not in result.output


def test_generated_tokens_are_strong_and_differ():
    from retrieval.server.config import new_token

    tokens = {new_token() for _ in range(5)}
    assert len(tokens) == 5
    for token in tokens:
        ServerConfig(db=Path("x"), host="0.0.0.0", token=token).check()
