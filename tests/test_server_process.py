"""The API over real HTTP: `mmsearch serve` as a subprocess on a free localhost port."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from test_server import build_index

from conftest import write_image

TOKEN = "process-test-token-123"
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mmsearch_command() -> list[str]:
    script = Path(sys.executable).with_name("mmsearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.app"]


def start_server(db: Path, *args: str, headers: dict | None = None, log: Path) -> tuple[subprocess.Popen, str]:
    """Start `mmsearch serve` and wait until it answers; returns (process, base URL)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("MMSEARCH_TOKEN", None)
    handle = open(log, "wb")
    process = subprocess.Popen([*mmsearch_command(), "serve", "--db", str(db), "--port", str(port), *args],
                               stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mmsearch serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(base + "/api/health", headers=headers, timeout=2).status_code in (200, 401):
                return process, base
        except httpx.TransportError:
            time.sleep(0.25)
    stop_server(process)
    raise RuntimeError(f"mmsearch serve did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port`, read from /proc (no traffic sent)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("served")
    pics = root / "pics"
    for i in range(5):
        write_image(pics / f"img{i}.png", seed=i)
    (root / "secret.txt").write_text("top secret")
    db = root / "db"
    build_index(pics, db, tiny_model)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    process, base = start_server(db, "--token", TOKEN, "--max-upload-mb", "0.05", headers=auth, log=root / "serve.log")
    client = httpx.Client(base_url=base, headers=auth, timeout=30)
    client.log_path = root / "serve.log"  # what the server wrote: checked for tracebacks
    yield client, pics, process, base
    client.close()
    stop_server(process)


def ids_by_name(client) -> dict[str, int]:
    hits = client.get("/api/search", params={"q": "x", "limit": 50}).json()["results"]
    return {hit["name"]: hit["id"] for hit in hits}


def raw_get(base: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """A GET with the path sent exactly as written (no client-side normalisation of `..`)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_listens_on_loopback_only_by_default(server):
    _, _, _, base = server
    port = int(base.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, little-endian hex


def test_search_over_http(server):
    client, _, _, _ = server
    response = client.get("/api/search", params={"q": "sunset + beach - people", "limit": 3})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    page = response.json()
    assert len(page["results"]) == 3 and page["has_more"] is True
    second = client.get("/api/search", params={"q": "sunset + beach - people", "offset": 3, "limit": 3}).json()
    assert len(second["results"]) == 2 and second["has_more"] is False


def test_upload_similar_item_thumb_and_image_over_http(server):
    client, pics, _, _ = server
    ids = ids_by_name(client)
    data = (pics / "img2.png").read_bytes()
    first = client.post("/api/search", files={"image": ("q.png", data, "image/png")}).json()["results"][0]
    assert first["id"] == ids["img2.png"] and first["score"] == pytest.approx(1.0, abs=1e-4)
    similar = client.get(f"/api/items/{ids['img3.png']}/similar").json()["results"]
    assert len(similar) == 4 and ids["img3.png"] not in [hit["id"] for hit in similar]  # the item itself left out
    assert client.get(f"/api/items/{ids['img1.png']}").json()["path"] == str(pics / "img1.png")
    thumb = client.get(f"/api/items/{ids['img1.png']}/thumb")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert client.get(f"/api/items/{ids['img1.png']}/thumb", headers={"If-None-Match": thumb.headers["etag"]}).status_code == 304
    assert client.get(f"/api/items/{ids['img1.png']}/image").content == (pics / "img1.png").read_bytes()
    assert client.get("/api/status").json()["items"] == 5


def test_errors_over_http(server):
    client, _, _, base = server
    assert httpx.get(base + "/api/status").status_code == 401
    assert httpx.get(base + "/api/status", params={"token": TOKEN}).status_code == 200
    assert client.get("/api/items/4242").status_code == 404
    assert client.get("/api/search", params={"q": "- nothing"}).status_code == 400
    assert client.get("/api/search", params={"q": "x", "limit": "many"}).status_code == 422
    big = client.post("/api/search", content=b"\0" * 60_000, headers={"Content-Type": "image/png"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize("path", [
    "/api/items/../../../../etc/passwd",
    "/api/items/1/../../../../../etc/passwd",
    "/static/../../../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2fsecret.txt",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/api/items/%2e%2e%2f%2e%2e%2fsecret.txt/image",
    "/../../../../etc/passwd",
])
def test_raw_path_traversal_gets_nothing(server, path):
    _, _, process, base = server
    status, body = raw_get(base, path, {"Authorization": f"Bearer {TOKEN}"})
    assert status in (400, 404, 422), (path, status)
    assert b"root:" not in body and b"top secret" not in body
    assert process.poll() is None


@pytest.mark.parametrize("path, params, status", [
    ("/api/items/99999999999999999999", {}, 404),
    ("/api/search", {"q": "x", "after": "0001-01-01"}, 400),
    ("/api/search", {"q": "x", "before": "0001-01-01T00:00:00+14:00"}, 400),
    ("/api/search", {"q": "x", "after": "9999-12-31T23:59:59-12:00"}, 400),
    ("/api/search", {"q": "x", "ext": [f"e{number}" for number in range(1500)]}, 400),
    ("/api/search", {"q": "1" + "0" * 40 + ":cat"}, 400),
])
def test_out_of_range_input_is_4xx_json_on_a_kept_connection_without_a_traceback(server, path, params, status):
    """Issue 14: each of these gave 500, ~107 traceback lines in the log and a reset keep-alive connection."""
    client, _, process, base = server
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path + ("?" + urlencode(params, doseq=True) if params else ""),
                           headers={"Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        body = json.loads(response.read())
        assert response.status == status, body
        assert body["error"]["code"] in ("not_found", "bad_query")
        assert response.getheader("connection", "").lower() != "close"
        kept = connection.sock
        connection.request("GET", "/api/health", headers={"Authorization": f"Bearer {TOKEN}"})
        again = connection.getresponse()
        assert again.status == 200 and json.loads(again.read()) == {"ok": True}
        assert connection.sock is kept  # the same kept-alive connection, not a new one
    finally:
        connection.close()
    assert "Traceback" not in client.log_path.read_text(errors="replace") and process.poll() is None


def test_generate_token_shows_one_strong_token_that_works(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    write_image(pics / "a.png", seed=1)
    build_index(pics, tmp_path / "db", tiny_model)
    log = tmp_path / "serve.log"
    process, base = start_server(tmp_path / "db", "--generate-token", log=log)
    try:
        lines = [line for line in log.read_text().splitlines() if line.startswith("token for this run: ")]
        assert len(lines) == 1
        token = lines[0].removeprefix("token for this run: ").strip()
        assert len(token) >= 32
        assert httpx.get(base + "/api/status", timeout=10).status_code == 401
        assert httpx.get(base + "/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    finally:
        stop_server(process)


def test_a_busy_port_is_one_error_line_before_anything_is_announced_or_loaded(tmp_path, tiny_model):
    """Issue 13: `serve` on a busy port printed "serving http://..." after loading, then exited 3."""
    pics = tmp_path / "pics"
    write_image(pics / "a.png", seed=1)
    build_index(pics, tmp_path / "db", tiny_model)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
        env.pop("MMSEARCH_TOKEN", None)
        done = subprocess.run([*mmsearch_command(), "serve", "--db", str(tmp_path / "db"), "--port", str(port)],
                              capture_output=True, text=True, env=env, timeout=START_TIMEOUT_S)
    assert done.returncode == 1, done
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: port ") and "already in use" in lines[0], done.stderr
    assert "serving" not in done.stderr and "loading" not in done.stderr


def test_an_address_of_another_machine_is_one_error_line(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("MMSEARCH_TOKEN", None)
    done = subprocess.run([*mmsearch_command(), "serve", "--db", str(tmp_path / "db"), "--host", "192.0.2.1",
                           "--token", "a-long-enough-token-1234", "--port", str(free_port())],
                          capture_output=True, text=True, env=env, timeout=START_TIMEOUT_S)
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "192.0.2.1 is not an address of this machine" in lines[0], done.stderr
