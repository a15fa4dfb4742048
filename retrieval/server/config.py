"""What a server needs to know, resolved once by the CLI and passed down."""
from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from retrieval.server.errors import ServerConfigError

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_DECODE_BYTES = 256 * 1024 * 1024  # per upload: a 50 MP 8-bit PNG, a 13 MP 16-bit one, any JPEG
DEFAULT_UPLOAD_SLOTS = 2
DEFAULT_UPLOAD_WAIT_S = 5.0
DEFAULT_QUEUED_PER_CLIENT = 8
MIN_TOKEN_CHARS = 8
MIN_PUBLIC_TOKEN_CHARS = 16  # a server reachable from other machines
MIN_PUBLIC_TOKEN_DISTINCT = 8
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


def strong_enough(token: str) -> bool:
    """Long enough and varied enough for a server other machines can reach (guessing is also throttled)."""
    return len(token) >= MIN_PUBLIC_TOKEN_CHARS and len(set(token)) >= MIN_PUBLIC_TOKEN_DISTINCT


def new_token() -> str:
    """A random token for --generate-token: 32 URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


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
    upload_cache_size: int = 256  # uploaded images' vectors kept by upload id (a few kB each), for ?upload=
    torch_threads: int | None = 1  # intra-op threads per forward pass; None leaves torch's default
    # intra-op threads of the ONNX text tower (None: one per core, at most 4): one query's embedding
    # uses every core (a 512-wide text tower on 2 cores: 25.7 -> 19.9 ms p50), without spin-waiting
    text_threads: int | None = None
    text_backend: str = "auto"  # "auto": the index's ONNX text export when current, else torch; "torch"
    text_precision: str = "fp32"  # "int8": the export's int8 graph when it has one that passed its check
    allow_hard_links: bool = False  # serve files with more than one hard link (see retrieval.server.files)
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES  # memory one upload's decoding may take (estimated first)
    upload_slots: int = DEFAULT_UPLOAD_SLOTS  # uploads read and decoded at once; more wait, then get 503
    upload_wait_s: float = DEFAULT_UPLOAD_WAIT_S
    searches_per_client: int | None = None  # running at once per client; None: half the model threads
    queued_per_client: int = DEFAULT_QUEUED_PER_CLIENT  # waiting per client beyond that; more get 429

    def check(self) -> None:
        """Refuse a configuration that would expose the collection."""
        if self.token is not None:
            if len(self.token) < MIN_TOKEN_CHARS or any(ch.isspace() for ch in self.token):
                raise ServerConfigError(f"the token must be at least {MIN_TOKEN_CHARS} characters without spaces")
        if not is_loopback(self.host) and self.token is None:
            raise ServerConfigError(
                f"--host {self.host} makes the collection reachable from other machines: give --token "
                "(or --token-file, or $MMSEARCH_TOKEN) so every request must carry it, or --generate-token "
                "to have one made and shown once"
            )
        if not is_loopback(self.host) and not strong_enough(self.token):
            raise ServerConfigError(
                f"--host {self.host} makes the collection reachable from other machines: its token needs at "
                f"least {MIN_PUBLIC_TOKEN_CHARS} characters, {MIN_PUBLIC_TOKEN_DISTINCT} of them different "
                "(--generate-token makes one)"
            )
        if self.max_decode_bytes < 1 or self.upload_slots < 1 or self.upload_wait_s < 0:
            raise ServerConfigError("the decode limit and upload slots must be positive, the upload wait not negative")
        if (self.searches_per_client is not None and self.searches_per_client < 1) or self.queued_per_client < 0:
            raise ServerConfigError("searches per client must be at least 1, the queue per client not negative")
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
