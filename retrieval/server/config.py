"""What a server needs to know, resolved once by the CLI and passed down."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from retrieval.server.errors import ServerConfigError

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MIN_TOKEN_CHARS = 8
LOOPBACK_NAMES = ("localhost",)
TEXT_BACKENDS = ("auto", "torch")
TEXT_PRECISIONS = ("fp32", "int8")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and 'localhost' are loopback; every other name or address is not."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    db: Path
    model_name: str | None = None  # None: the index's own model
    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    preload_image_tower: bool = False
    text_cache_size: int = 512
    torch_threads: int | None = 1  # intra-op threads per forward pass; None leaves torch's default
    # intra-op threads of the ONNX text tower (None: one per core, at most 4): one query's embedding
    # uses every core (a 512-wide text tower on 2 cores: 25.7 -> 19.9 ms p50), without spin-waiting
    text_threads: int | None = None
    text_backend: str = "auto"  # "auto": the index's ONNX text export when current, else torch; "torch"
    text_precision: str = "fp32"  # "int8": the export's int8 graph when it has one that passed its check

    def check(self) -> None:
        """Refuse a configuration that would expose the collection."""
        if self.token is not None:
            if len(self.token) < MIN_TOKEN_CHARS or any(ch.isspace() for ch in self.token):
                raise ServerConfigError(f"the token must be at least {MIN_TOKEN_CHARS} characters without spaces")
        if not is_loopback(self.host) and self.token is None:
            raise ServerConfigError(
                f"--host {self.host} makes the collection reachable from other machines: give --token "
                "(or --token-file, or $MMSEARCH_TOKEN) so every request must carry it; e.g. "
                "--token \"$(python -c 'import secrets; print(secrets.token_urlsafe(24))')\""
            )
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ServerConfigError("--threads must be at least 1")
        if self.text_threads is not None and self.text_threads < 1:
            raise ServerConfigError("--text-threads must be at least 1")
        if self.text_backend not in TEXT_BACKENDS:
            raise ServerConfigError(f"text backend must be one of {', '.join(TEXT_BACKENDS)}")
        if self.text_precision not in TEXT_PRECISIONS:
            raise ServerConfigError(f"text precision must be one of {', '.join(TEXT_PRECISIONS)}")
        if self.max_upload_bytes < 1:
            raise ServerConfigError("the upload limit must be positive")

    @property
    def resolved_text_threads(self) -> int:
        return self.text_threads or max(1, min(os.cpu_count() or 1, 4))

    @property
    def thumbs_dir(self) -> Path:
        return Path(self.db) / "thumbs"

    @property
    def trusted_hosts(self) -> tuple[str, ...] | None:
        """Host header names accepted; None accepts any (a token protects a non-loopback server).

        Without a token a loopback server only answers Host: localhost / 127.0.0.1 / [::1], so a web
        page that rebinds its own domain name to 127.0.0.1 (DNS rebinding) gets nothing.
        """
        if self.token is not None:
            return None
        bound = self.host.strip().strip("[]").lower()
        return tuple(sorted({"localhost", "127.0.0.1", "::1", bound}))
