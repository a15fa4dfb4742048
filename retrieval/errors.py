"""Typed errors raised by mmsearch's core; the CLI turns them into friendly messages."""
from __future__ import annotations


class MmsearchError(Exception):
    """Base class: every error the core raises on purpose."""


class ModelNotFoundError(MmsearchError):
    """A model name, folder or config that cannot be resolved or loaded."""


class ModelMismatchError(MmsearchError):
    """The index was built with one model and is being used with another."""


class QueryError(MmsearchError):
    """A query that cannot be parsed or embedded (empty, bad weight, unreadable image)."""


class DecodeError(MmsearchError):
    """One media file that cannot be decoded; costs that file, never the run."""


class IndexLockedError(MmsearchError):
    """Another process holds the index's write lock."""


class StoreError(MmsearchError):
    """The metadata or vector store is unusable (schema too new, corrupt, not writable)."""
