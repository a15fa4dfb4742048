"""Who may ask.

- `AccessMiddleware`: with a token configured, every request but the login page and the static
  UI code must carry it (`Authorization: Bearer TOKEN`, or a `token` query parameter for scripts and
  <img> URLs) or a session cookie from /login (`sessions.SessionStore`). Wrong tokens are braked per
  client (`sessions.SignInThrottle`: 429 with Retry-After). Without a token (loopback only) it
  checks the Host header instead, against DNS rebinding.
- Which files may be served: `retrieval.server.files`.
"""
from __future__ import annotations

import hmac
import json
import logging
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers

from retrieval.server.errors import error_payload
from retrieval.server.gates import client_key
from retrieval.server.sessions import SESSION_LIFETIME_S, SessionStore, SignInThrottle

log = logging.getLogger(__name__)

COOKIE_NAME = "mmsearch_session"
TOKEN_PARAM = "token"
PUBLIC_PATHS = ("/login", "/logout", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)  # the UI's own HTML/JS/CSS: code, no collection data


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                     token.encode("utf-8", "surrogateescape"))


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
    """Pure ASGI: a token or session check (or a Host check) in front of every HTTP request."""

    def __init__(self, app, *, token: str | None, trusted_hosts: tuple[str, ...] | None,
                 sessions: SessionStore, throttle: SignInThrottle):
        self.app = app
        self.token = token
        self.trusted_hosts = trusted_hosts
        self.sessions = sessions
        self.throttle = throttle

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
        cookie = _cookies(headers).get(COOKIE_NAME)
        if self.sessions.valid(cookie):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        query_token = next((value for name, value in query if name == TOKEN_PARAM), None)
        bearer = headers.get("authorization", "")
        bearer_token = bearer[7:].strip() if bearer[:7].lower() == "bearer " else None
        if bearer_token is not None or query_token is not None:
            client = client_key(scope)
            wait = self.throttle.wait_s(client)
            if wait > 0:  # refused unchecked: a right guess must look like a wrong one
                await _send_throttled(send, wait)
                return
            if token_matches(bearer_token, self.token) or token_matches(query_token, self.token):
                self.throttle.succeeded(client)
                if query_token is not None and _is_page_load(scope, headers):
                    # a link like /?token=...: a session cookie instead, and the token off the address bar
                    rest = urlencode([(name, value) for name, value in query if name != TOKEN_PARAM])
                    await _send_redirect(send, path + (f"?{rest}" if rest else ""), cookie=self.sessions.start())
                    return
                await self.app(scope, receive, send)
                return
            wait = self.throttle.failed(client)
            log.warning("wrong token from %s%s", client, f"; it waits {wait:.0f} s" if wait else "")
        if _is_page_load(scope, headers):
            target = path + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
            await _send_redirect(send, "/login?" + urlencode({"next": safe_next(target)}))
            return
        if bearer_token is not None or query_token is not None:
            message = "a valid token is required"
        else:
            message = "the session has ended; sign in again" if cookie else "missing token"
        await _send_json(send, 401, error_payload("unauthorized", message + ": send Authorization: Bearer TOKEN"),
                         extra_headers=[(b"www-authenticate", b'Bearer realm="mmsearch"')])


async def _send_throttled(send, wait_s: float) -> None:
    retry_after = str(max(1, int(-(-wait_s // 1))))
    await _send_json(send, 429, error_payload("too_many_requests",
                                              f"too many wrong tokens from this address: try again in {retry_after} s"),
                     extra_headers=[(b"retry-after", retry_after.encode())])


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


def session_cookie_header(value: str, max_age: int = int(SESSION_LIFETIME_S)) -> str:
    return f"{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"


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
