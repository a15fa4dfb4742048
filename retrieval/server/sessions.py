"""Sign-in state: server-side sessions, and a per-client brake on wrong tokens.

- `SessionStore`: /login (or a `?token=` link) starts a session whose random id is the cookie;
  /logout ends it, so a copied cookie stops working at once. Sessions live in this process: a
  restart signs everyone out. Ids are kept as SHA-256 digests (a lookup leaks nothing useful).
- `SignInThrottle`: a client (see `gates.client_key`) gets FREE_FAILURES wrong tokens, then waits
  1 s, 2 s, 4 s ... (at most MAX_DELAY_S) after each further one; while it waits every token it
  sends is refused unchecked (429 with Retry-After), so even the right token cannot be confirmed.
  A right token clears its record; a record is forgotten FORGET_AFTER_S after its last failure.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

SESSION_LIFETIME_S = 30 * 24 * 3600
MAX_SESSIONS = 10_000
FREE_FAILURES = 5
BASE_DELAY_S = 1.0
MAX_DELAY_S = 15 * 60.0
FORGET_AFTER_S = 24 * 3600.0
MAX_TRACKED_CLIENTS = 10_000


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


class SessionStore:
    def __init__(self, lifetime_s: float = SESSION_LIFETIME_S, max_sessions: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.time):
        self.lifetime_s = lifetime_s
        self.max_sessions = max_sessions
        self.clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()  # digest -> expiry, oldest first
        self._lock = threading.Lock()

    def start(self) -> str:
        """A new session; returns its id (the cookie value)."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._expiry[_digest(session_id)] = self.clock() + self.lifetime_s
            while len(self._expiry) > self.max_sessions:
                self._expiry.popitem(last=False)
        return session_id

    def valid(self, session_id: str | None) -> bool:
        if not session_id:
            return False
        key = _digest(session_id)
        with self._lock:
            expiry = self._expiry.get(key)
            if expiry is None:
                return False
            if expiry <= self.clock():
                del self._expiry[key]
                return False
            return True

    def end(self, session_id: str | None) -> bool:
        if not session_id:
            return False
        with self._lock:
            return self._expiry.pop(_digest(session_id), None) is not None

    def __len__(self) -> int:
        return len(self._expiry)


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class SignInThrottle:
    def __init__(self, free_failures: int = FREE_FAILURES, base_delay_s: float = BASE_DELAY_S,
                 max_delay_s: float = MAX_DELAY_S, forget_after_s: float = FORGET_AFTER_S,
                 max_clients: int = MAX_TRACKED_CLIENTS, clock: Callable[[], float] = time.monotonic):
        self.free_failures = free_failures
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.forget_after_s = forget_after_s
        self.max_clients = max_clients
        self.clock = clock
        self._clients: OrderedDict[str, _Failures] = OrderedDict()  # least recently failed first
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """Seconds this client must wait before a token it sends is checked again (0: now)."""
        with self._lock:
            record = self._current(client)
            return max(0.0, record.locked_until - self.clock()) if record else 0.0

    def failed(self, client: str) -> float:
        """Count a wrong token; returns the wait it now has (0 while within the free failures)."""
        now = self.clock()
        with self._lock:
            record = self._current(client) or _Failures()
            record.count += 1
            record.last = now
            over = record.count - self.free_failures
            if over > 0:
                record.locked_until = now + min(self.max_delay_s, self.base_delay_s * 2 ** min(over - 1, 40))
            self._clients[client] = record
            self._clients.move_to_end(client)
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
            return max(0.0, record.locked_until - now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)

    def _current(self, client: str) -> _Failures | None:
        record = self._clients.get(client)
        if record is not None and self.clock() - record.last > self.forget_after_s:
            del self._clients[client]
            return None
        return record
