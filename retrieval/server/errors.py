"""Typed errors of the web server; `app.py` maps each to a JSON error with its HTTP status."""
from __future__ import annotations

from indexer.errors import MmsearchError


class ServerConfigError(MmsearchError):
    """Options that would start an unsafe or unusable server (public bind without a token...)."""


class ItemNotFoundError(MmsearchError):
    """No indexed item has this id."""


class UploadExpiredError(MmsearchError):
    """A search names an upload id this server does not keep (any more): the image must be sent again."""


class FileUnavailableError(MmsearchError):
    """The item exists but its file is gone or cannot be decoded for a thumbnail."""


class ForbiddenFileError(MmsearchError):
    """The item's file now resolves outside the indexed folders (a symlink swapped in): never served."""


class UploadTooLargeError(MmsearchError):
    """A request body over the upload limit."""


class UnauthorizedError(MmsearchError):
    """A missing or wrong token."""


class RetryLaterError(MmsearchError):
    """Refused for now; `retry_after` (seconds) goes out as the Retry-After header."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = max(1, int(-(-retry_after // 1)))  # whole seconds, rounded up, at least 1


class TooManyRequestsError(RetryLaterError):
    """This client sent too many wrong tokens, or has too many searches running or waiting (429)."""


class ServerBusyError(RetryLaterError):
    """Every upload slot is taken (503)."""


def error_payload(code: str, message: str, **extra) -> dict:
    """The JSON body of every error the server returns: {"error": {"code", "message", ...}}."""
    return {"error": {"code": code, "message": message, **extra}}
