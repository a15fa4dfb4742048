"""Admission: how much of the server one client, and all uploads together, may hold at once.

- `ClientGate`: at most `running` searches of one client run at once and `queued` more wait (in the
  event loop: a waiting request holds no thread); beyond that the client gets 429. The model
  threads outnumber one client's share, so a client sending heavy queries on many connections
  never leaves another client's query queued behind all of them. `SearchGateMiddleware` applies it
  in front of the search routes, before any parsing, and answers a refusal only after
  `reject_delay_s`: a client that ignores Retry-After gets at most one 429 per connection per delay.
- `UploadSlots`: at most `slots` image uploads are read, decoded and embedded at once, whoever
  sends them; a request waits `wait_s` for a slot, then gets 503. With the per-upload decode budget
  (`decode_budget`) this bounds the memory uploads can take.

A client is its peer address (`client_key`): an IPv4 address, or the /64 network of an IPv6 one
(one host usually holds a whole /64). Behind a proxy every client shares the proxy's address
unless the server trusts its X-Forwarded-For (`mmsearch serve --proxy`).
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from retrieval.server.errors import ServerBusyError, TooManyRequestsError, error_payload

SEARCH_PATHS = re.compile(r"^/api/(search|items/[^/]+/similar)$")
REJECT_DELAY_S = 1.0


def client_key(scope) -> str:
    client = scope.get("client")
    host = client[0] if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class _Client:
    running: int = 0
    waiting: int = 0
    freed: asyncio.Condition = field(default_factory=asyncio.Condition)


class ClientGate:
    def __init__(self, running: int, queued: int):
        if running < 1 or queued < 0:
            raise ValueError("a client needs at least one running search and a non-negative queue")
        self.running = running
        self.queued = queued
        self._clients: dict[str, _Client] = {}

    @asynccontextmanager
    async def slot(self, client: str):
        state = self._clients.get(client)
        if state is None:
            state = self._clients[client] = _Client()
        if state.running >= self.running and state.waiting >= self.queued:
            raise TooManyRequestsError(
                f"this client already has {state.running} searches running and {state.waiting} waiting; "
                "send fewer at once", retry_after=1)
        state.waiting += 1
        try:
            async with state.freed:
                await state.freed.wait_for(lambda: state.running < self.running)
                state.running += 1
        finally:
            state.waiting -= 1
        try:
            yield
        finally:
            async with state.freed:
                state.running -= 1
                state.freed.notify()
            if state.running == 0 and state.waiting == 0:
                self._clients.pop(client, None)

    def load(self, client: str) -> tuple[int, int]:
        """(running, waiting) searches of a client."""
        state = self._clients.get(client)
        return (state.running, state.waiting) if state else (0, 0)


class SearchGateMiddleware:
    """Pure ASGI: every search request passes `gate` for its client; a refusal is a delayed 429."""

    def __init__(self, app, *, gate: ClientGate, reject_delay_s: float = REJECT_DELAY_S):
        self.app = app
        self.gate = gate
        self.reject_delay_s = reject_delay_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not SEARCH_PATHS.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            slot = self.gate.slot(client_key(scope))
            await slot.__aenter__()
        except TooManyRequestsError as exc:
            await asyncio.sleep(self.reject_delay_s)
            body = json.dumps(error_payload("too_many_requests", str(exc))).encode()
            await send({"type": "http.response.start", "status": 429, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(exc.retry_after).encode()), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            await slot.__aexit__(None, None, None)


class UploadSlots:
    def __init__(self, slots: int, wait_s: float):
        if slots < 1:
            raise ValueError("at least one upload slot")
        self.slots = slots
        self.wait_s = wait_s
        self._semaphore: asyncio.Semaphore | None = None
        self.in_use = 0

    @asynccontextmanager
    async def slot(self):
        if self._semaphore is None:  # made in the server's event loop, on first use
            self._semaphore = asyncio.Semaphore(self.slots)
        try:
            await asyncio.wait_for(self._semaphore.acquire(), timeout=self.wait_s)
        except (asyncio.TimeoutError, TimeoutError):
            raise ServerBusyError(f"the server is decoding {self.slots} uploads already; try again shortly",
                                  retry_after=max(1.0, self.wait_s)) from None
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
            self._semaphore.release()
