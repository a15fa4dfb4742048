"""Security rules of the web server, each tested: loopback by default, token for anything else,
files only by item id and only inside the indexed folders, upload limit, no CORS, Host check."""
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_server import build_index, client_for, open_engine
from typer.testing import CliRunner

from cli.app import app as cli_app
from conftest import write_image
from retrieval.server import ServerConfig, create_app
from retrieval.server.config import is_loopback
from retrieval.server.errors import ServerConfigError
from retrieval.server.security import COOKIE_NAME

TOKEN = "correct-horse-battery-staple"


@pytest.fixture()
def collection(tmp_path, tiny_model):
    """A fresh, mutable collection: pics/a.png, pics/b.png, pics/sub/c.png; a secret image outside."""
    pics = tmp_path / "pics"
    for name, seed in (("a.png", 1), ("b.png", 2), ("sub/c.png", 3)):
        write_image(pics / name, seed=seed)
    secret = write_image(tmp_path / "outside" / "secret.png", seed=99)
    (tmp_path / "outside" / "passwords.txt").write_text("hunter2")
    db = tmp_path / "db"
    build_index(pics, db, tiny_model)
    engine = open_engine(db, tiny_model)
    yield pics, db, engine, secret
    engine.close()


def ids_by_name(engine) -> dict[str, int]:
    return {Path(record.path).name: record.id for record in engine.library.reads.items(list(range(1, 50))).values()}


# --- rule: loopback by default; anything else needs a token ------------------------------------
@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("10.0.0.1", False), ("example.com", False),
])
def test_what_counts_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_default_host_is_loopback():
    assert ServerConfig(db=Path("x")).host == "127.0.0.1"
    ServerConfig(db=Path("x")).check()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "my-laptop.local"])
def test_public_host_without_token_is_refused(host):
    with pytest.raises(ServerConfigError, match="--token"):
        ServerConfig(db=Path("x"), host=host).check()
    ServerConfig(db=Path("x"), host=host, token=TOKEN).check()


@pytest.mark.parametrize("token", ["short", "has a space in it"])
def test_weak_tokens_are_refused(token):
    with pytest.raises(ServerConfigError, match="token"):
        ServerConfig(db=Path("x"), token=token).check()


def test_cli_refuses_public_host_without_token(tmp_path):
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--db", str(tmp_path)], env={"MMSEARCH_TOKEN": None})
    assert result.exit_code == 1 and "Error:" in result.stderr and "--token" in result.stderr


def test_cli_refuses_token_and_token_file_together(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    result = CliRunner().invoke(cli_app, ["serve", "--token", TOKEN, "--token-file", str(token_file), "--db", str(tmp_path)])
    assert result.exit_code == 1 and "not several" in result.stderr
    result = CliRunner().invoke(cli_app, ["serve", "--token", TOKEN, "--generate-token", "--db", str(tmp_path)])
    assert result.exit_code == 1 and "not several" in result.stderr


# --- rule: with a token, every request needs it ---------------------------------------------------
@pytest.fixture()
def locked(collection):
    pics, db, engine, secret = collection
    with client_for(engine, token=TOKEN, host="0.0.0.0") as client:
        yield client, ids_by_name(engine)


@pytest.mark.parametrize("path", ["/api/search?q=x", "/api/status", "/api/health", "/api/items/1", "/api/items/1/thumb",
                                  "/api/items/1/image", "/api/items/1/similar", "/openapi.json", "/docs"])
def test_every_request_without_the_token_is_401(locked, path):
    client, _ = locked
    response = client.get(path)
    assert response.status_code == 401, path
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert client.get(path, headers={"Authorization": "Bearer wrong-token-value"}).status_code == 401


def test_upload_without_token_is_401_before_reading_it(locked):
    client, _ = locked
    response = client.post("/api/search", content=b"x" * 1000, headers={"Content-Type": "image/png"})
    assert response.status_code == 401


def test_bearer_header_query_parameter_and_cookie_each_work(locked):
    client, ids = locked
    assert client.get("/api/search", params={"q": "x"}, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get(f"/api/items/{ids['a.png']}/thumb", params={"token": TOKEN}).status_code == 200
    session = client.app.state.sessions.start()
    client.cookies.set(COOKIE_NAME, session)
    assert client.get("/api/status").status_code == 200
    client.cookies.set(COOKIE_NAME, TOKEN)  # the raw token is not a session cookie
    assert client.get("/api/status").status_code == 401


def test_login_page_sets_an_httponly_cookie(locked):
    client, _ = locked
    assert client.get("/login").status_code == 200
    response = client.post("/login", data={"token": TOKEN, "next": "/?q=cat"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/?q=cat"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    assert client.get("/api/status").status_code == 200  # the client kept the cookie
    logout = client.post("/logout", follow_redirects=False)
    assert "Max-Age=0" in logout.headers["set-cookie"]


def test_wrong_login_is_refused_and_next_cannot_leave_the_site(locked):
    client, _ = locked
    wrong = client.post("/login", data={"token": "not-the-token"}, follow_redirects=False)
    assert wrong.status_code == 401 and COOKIE_NAME not in wrong.headers.get("set-cookie", "")
    html = client.post("/login", data={"token": "not-the-token"}, headers={"Accept": "text/html"}, follow_redirects=False)
    assert html.status_code == 303 and html.headers["location"].startswith("/login?")
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        response = client.post("/login", data={"token": TOKEN, "next": target}, follow_redirects=False)
        assert response.headers["location"] == "/"


def test_page_load_redirects_to_login_and_token_link_sets_cookie(locked):
    client, _ = locked
    html = {"Accept": "text/html"}
    response = client.get("/", headers=html, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    response = client.get("/", params={"token": TOKEN, "q": "cat"}, headers=html, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/?q=cat"  # token dropped from the URL
    session = response.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    assert client.app.state.sessions.valid(session) and TOKEN not in response.headers["set-cookie"]


def test_static_ui_code_is_public_but_holds_no_data(locked):
    client, _ = locked
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../api/status").status_code in (401, 404)


# --- rule: only indexed files, by item id ---------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/api/items/..%2F..%2F..%2Fetc%2Fpasswd/image",
    "/api/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd/image",
    "/api/items/1%2F..%2F..%2Fpasswords.txt/image",
    "/static/..%2F..%2F..%2Fserver%2Fapp.py",
    "/static/%2e%2e/%2e%2e/config.py",
    "/static/%2e%2e%2f%2e%2e%2fconfig.py",
    "/docs-assets/..%2F..%2Ffastapi%2F__init__.py",
])
def test_encoded_dot_dot_never_reaches_a_file(collection, path):
    _, _, engine, _ = collection
    with client_for(engine) as client:
        response = client.get(path)
    assert response.status_code in (400, 404, 422), path
    assert b"hunter2" not in response.content and b"import" not in response.content


def test_path_parameters_are_ignored_files_come_by_id_only(collection):
    pics, _, engine, secret = collection
    ids = ids_by_name(engine)
    with client_for(engine) as client:
        response = client.get(f"/api/items/{ids['a.png']}/image", params={"path": str(secret)})
        assert response.content == (pics / "a.png").read_bytes()
        assert client.get("/api/items/999/image").status_code == 404


def test_indexed_file_swapped_for_a_symlink_out_of_the_collection_is_refused(collection):
    pics, _, engine, secret = collection
    ids = ids_by_name(engine)
    (pics / "a.png").unlink()
    os.symlink(secret, pics / "a.png")
    with client_for(engine) as client:
        for kind in ("image", "thumb"):
            response = client.get(f"/api/items/{ids['a.png']}/{kind}")
            assert response.status_code == 403, kind
            assert response.json()["error"]["code"] == "forbidden_file"
            assert secret.read_bytes()[:64] not in response.content
        assert client.get(f"/api/items/{ids['b.png']}/image").status_code == 200


def test_folder_swapped_for_a_symlink_out_of_the_collection_is_refused(collection, tmp_path):
    pics, _, engine, secret = collection
    ids = ids_by_name(engine)
    elsewhere = tmp_path / "elsewhere"
    write_image(elsewhere / "c.png", seed=5)
    (pics / "sub" / "c.png").unlink()
    (pics / "sub").rmdir()
    os.symlink(elsewhere, pics / "sub")
    with client_for(engine) as client:
        assert client.get(f"/api/items/{ids['c.png']}/image").status_code == 403


def test_symlink_to_a_non_image_inside_the_collection_is_refused(collection):
    pics, _, engine, _ = collection
    ids = ids_by_name(engine)
    (pics / "notes.txt").write_text("private notes")
    (pics / "b.png").unlink()
    os.symlink(pics / "notes.txt", pics / "b.png")
    with client_for(engine) as client:
        response = client.get(f"/api/items/{ids['b.png']}/image")
        assert response.status_code == 403 and b"private notes" not in response.content


def test_symlink_to_another_image_inside_the_collection_is_served(collection):
    pics, _, engine, _ = collection
    ids = ids_by_name(engine)
    (pics / "b.png").unlink()
    os.symlink(pics / "sub" / "c.png", pics / "b.png")
    with client_for(engine) as client:
        response = client.get(f"/api/items/{ids['b.png']}/image")
        assert response.status_code == 200 and response.content == (pics / "sub" / "c.png").read_bytes()


# --- rule: upload size limit ----------------------------------------------------------------------
def test_upload_over_the_limit_is_413(collection):
    pics, _, engine, _ = collection
    data = (pics / "a.png").read_bytes()
    with client_for(engine, max_upload_bytes=len(data) - 1) as client:
        raw = client.post("/api/search", content=data, headers={"Content-Type": "image/png"})
        assert raw.status_code == 413 and raw.json()["error"]["code"] == "too_large"
        form = client.post("/api/search", files={"image": ("a.png", data, "image/png")})
        assert form.status_code == 413
    with client_for(engine, max_upload_bytes=len(data)) as client:
        assert client.post("/api/search", content=data, headers={"Content-Type": "image/png"}).status_code == 200


def test_chunked_upload_without_length_is_cut_at_the_limit(collection):
    _, _, engine, _ = collection
    sent = []

    def body():
        for _ in range(100):
            sent.append(1)
            yield b"\0" * 1024

    with client_for(engine, max_upload_bytes=10 * 1024) as client:
        response = client.post("/api/search", content=body(), headers={"Content-Type": "image/png"})
    assert response.status_code == 413


def test_default_upload_limit_is_20_mb():
    assert ServerConfig(db=Path("x")).max_upload_bytes == 20 * 1024 * 1024


# --- rule: no CORS by default; Host check without a token -------------------------------------------
def test_no_cors_headers_for_other_origins(collection):
    _, _, engine, _ = collection
    with client_for(engine) as client:
        preflight = client.options("/api/search", headers={"Origin": "https://evil.example",
                                                           "Access-Control-Request-Method": "POST"})
        simple = client.get("/api/search", params={"q": "x"}, headers={"Origin": "https://evil.example"})
    for response in (preflight, simple):
        assert not any(name.lower().startswith("access-control-") for name in response.headers)


def test_foreign_host_header_is_refused_without_a_token(collection):
    _, _, engine, _ = collection
    with client_for(engine) as client:
        assert client.get("/api/status", headers={"Host": "attacker.example:8000"}).status_code == 400
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            assert client.get("/api/status", headers={"Host": host}).status_code == 200, host


def test_security_headers(collection):
    _, _, engine, _ = collection
    with client_for(engine) as client:
        page = client.get("/")
        api = client.get("/api/status")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for response in (page, api):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


def test_app_refuses_an_unsafe_config_before_loading_anything(tmp_path):
    with pytest.raises(ServerConfigError):
        create_app(ServerConfig(db=tmp_path, host="0.0.0.0"))


def test_token_server_accepts_any_host_name(collection):
    _, _, engine, _ = collection
    with TestClient(create_app(ServerConfig(db=engine.config.db, token=TOKEN, host="0.0.0.0"), engine=engine),
                    base_url="http://photos.lan:8000") as client:
        assert client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

