"""A FileResponse that sends a file the guard already opened and checked, never one found again by name."""
from __future__ import annotations

import mimetypes
import os

from starlette.responses import FileResponse

from retrieval.server.files import OpenedFile

_FD_FOLDER = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


def _header_safe(name: str) -> str:
    """A file name as valid UTF-8 (names stored byte for byte may not be)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class OpenFileResponse(FileResponse):
    """Starlette's FileResponse (ranges, HEAD, disconnects) over the open descriptor of `opened`.

    The path it reads is the descriptor's own magic link (/proc/self/fd/N): opening it opens that very
    file, whatever now has its name. The descriptor is closed once the response is sent.
    """

    def __init__(self, opened: OpenedFile, *, filename: str, headers: dict[str, str] | None = None):
        self.opened = opened
        media_type = mimetypes.guess_type(opened.real_path)[0] or "application/octet-stream"
        super().__init__(f"{_FD_FOLDER}/{opened.fd}", media_type=media_type, filename=_header_safe(filename),
                         content_disposition_type="inline", stat_result=opened.stat, headers=headers)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.opened.close()
