"""The server's listening socket, bound before anything is announced or loaded.

`mmsearch serve` binds first, so a busy port or an address this machine does not have is one clear
error before the model loads, and "serving http://..." is printed only once the address is ours.
The socket is bound, not yet listening: uvicorn's `create_server` starts listening once the app is
up, so a client that connects while the model loads is refused (and retries) rather than left hanging.
"""
from __future__ import annotations

import errno
import socket

from retrieval.server.errors import ServerConfigError


class AddressUnavailableError(ServerConfigError):
    """The host and port cannot be bound: in use by another program, or not an address of this machine."""


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), as uvicorn binds one (IPv6 when the host has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart past TIME_WAIT
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise AddressUnavailableError(_explain(host, port, exc)) from None
    return sock


def _explain(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}" if ":" not in host else f"[{host.strip('[]')}]:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use on {host} (another server?): stop it, or give --port with another number"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {where}: ports below 1024 need privileges; give --port 1024 or above"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: {host} is not an address of this machine"
    return f"cannot listen on {where}: {exc.strerror or exc}"
