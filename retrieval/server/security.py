"""Who may ask, and which files may be served.

- `AccessMiddleware`: with a token configured, every request but the login page and the static
  UI code must carry it: `Authorization: Bearer TOKEN`, the session cookie set by /login, or a
  `token` query parameter (for scripts and <img> URLs). Without a token (loopback only) it checks
  the Host header instead, against DNS rebinding.
- `FileGuard`: files are addressed by item id only, and an item's file is served only while its
  real path (every symlink resolved) lies inside a folder that was indexed and is an image.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers

from indexer.media.scan import image_extensions
from indexer.store.records import ItemRecord
from retrieval.server.errors import FileUnavailableError, ForbiddenFileError, error_payload

log = logging.getLogger(__name__)

COOKIE_NAME = "mmsearch_session"
TOKEN_PARAM = "token"
PUBLIC_PATHS = ("/login", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)  # the UI's own HTML/JS/CSS: code, no collection data


def session_cookie_value(token: str) -> str:
    """The cookie holds a keyed digest of the token, not the token itself."""
    return hmac.new(token.encode(), b"mmsearch-session-v1", hashlib.sha256).hexdigest()


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def cookie_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), session_cookie_value(token).encode())


def safe_next(target: str | None) -> str:
    """A same-site path to go back to after login (never another host: no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _cookies(headers: Headers) -> dict[str, str]:
    out = {}
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            out[name] = value
    return out


class AccessMiddleware:
    """Pure ASGI: a token check (or a Host check) in front of every HTTP request."""

    def __init__(self, app, *, token: str | None, trusted_hosts: tuple[str, ...] | None):
        self.app = app
        self.token = token
        self.trusted_hosts = trusted_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.trusted_hosts is not None and _host_name(headers.get("host", "")) not in self.trusted_hosts:
            await _send_json(send, 400, error_payload("bad_host", "this server answers only to localhost names"))
            return
        path = scope["path"]
        if self.token is None or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        query_token = next((value for name, value in query if name == TOKEN_PARAM), None)
        bearer = headers.get("authorization", "")
        bearer_token = bearer[7:].strip() if bearer[:7].lower() == "bearer " else None
        cookie = _cookies(headers).get(COOKIE_NAME)
        if token_matches(query_token, self.token) and _is_page_load(scope, headers):
            # a link like /?token=...: keep the token in a cookie, drop it from the address bar
            rest = urlencode([(name, value) for name, value in query if name != TOKEN_PARAM])
            await _send_redirect(send, path + (f"?{rest}" if rest else ""), cookie=session_cookie_value(self.token))
            return
        if token_matches(bearer_token, self.token) or token_matches(query_token, self.token) \
                or cookie_matches(cookie, self.token):
            await self.app(scope, receive, send)
            return
        if _is_page_load(scope, headers):
            target = path + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
            await _send_redirect(send, "/login?" + urlencode({"next": safe_next(target)}))
            return
        message = "a valid token is required" if (bearer_token or query_token or cookie) else "missing token"
        await _send_json(send, 401, error_payload("unauthorized", message + ": send Authorization: Bearer TOKEN"),
                         extra_headers=[(b"www-authenticate", b'Bearer realm="mmsearch"')])


def _is_page_load(scope, headers: Headers) -> bool:
    return scope["method"] == "GET" and not scope["path"].startswith("/api/") \
        and "text/html" in headers.get("accept", "")


async def _send_json(send, status: int, payload: dict, extra_headers=()) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), *extra_headers]})
    await send({"type": "http.response.body", "body": body})


async def _send_redirect(send, location: str, cookie: str | None = None) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0"), (b"cache-control", b"no-store")]
    if cookie is not None:
        headers.append((b"set-cookie", session_cookie_header(cookie).encode()))
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def session_cookie_header(value: str, max_age: int = 30 * 24 * 3600) -> str:
    return f"{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"


class FileGuard:
    """Maps an item to the real path of its file, refusing anything outside the indexed folders."""

    def __init__(self, library):
        self.library = library
        self._roots: tuple[int, tuple[str, ...]] | None = None

    def indexed_roots(self) -> tuple[str, ...]:
        """Real paths of every folder (or file) an `index` run was given; cached per generation."""
        generation = self.library.generation
        if self._roots is None or self._roots[0] != generation:
            roots = {os.path.realpath(root) for root in self.library.runs.indexed_roots()}
            self._roots = (generation, tuple(sorted(roots)))
        return self._roots[1]

    def resolve(self, record: ItemRecord) -> str:
        real = os.path.realpath(record.path)
        inside = any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.indexed_roots())
        if not inside:
            log.warning("refused item %d: %s resolves to %s, outside the indexed folders", record.id, record.path, real)
            raise ForbiddenFileError(f"the file of item {record.id} now resolves outside the indexed folders")
        if os.path.splitext(real)[1].lower() not in image_extensions():
            log.warning("refused item %d: %s resolves to %s, not an image file", record.id, record.path, real)
            raise ForbiddenFileError(f"the file of item {record.id} no longer resolves to an image file")
        if not os.path.isfile(real):
            raise FileUnavailableError(f"the file of item {record.id} is missing on disk")
        return real


class HeadersMiddleware:
    """Pure ASGI: adds `common` headers to every response and `html` ones to HTML pages."""

    def __init__(self, app, *, common: dict[str, str], html: dict[str, str], html_exempt: tuple[str, ...] = ()):
        self.app = app
        self.common = [(name.lower().encode(), value.encode()) for name, value in common.items()]
        self.html = [(name.lower().encode(), value.encode()) for name, value in html.items()]
        self.html_exempt = html_exempt

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exempt = scope["path"] in self.html_exempt

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                is_html = any(name.lower() == b"content-type" and value.startswith(b"text/html")
                              for name, value in headers)
                extra = self.common + (self.html if is_html and not exempt else [])
                headers.extend((name, value) for name, value in extra if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
