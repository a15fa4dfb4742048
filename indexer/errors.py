"""Typed errors raised on purpose by mmsearch's core; only `cli/` turns them into messages and exit codes.

The base of every layer's errors lives here, in the lowest package, so `indexer` never imports
`retrieval` to raise one; `retrieval.errors` adds the errors of the model and query layers.
"""
from __future__ import annotations


class MmsearchError(Exception):
    """Base class: every error the core raises on purpose."""


class ModelMismatchError(MmsearchError):
    """The index was built with one model and is being used with another."""


class DecodeError(MmsearchError):
    """One media file that cannot be decoded; costs that file, never the run."""


class IndexLockedError(MmsearchError):
    """Another process holds the index's write lock."""


class StoreError(MmsearchError):
    """The metadata or vector store is unusable (schema too new, corrupt, not writable)."""


class DatabaseURLError(StoreError):
    """A database URL that is not one mmsearch can use (unparsable, another database, a missing driver)."""


class DatabaseUnreachableError(StoreError):
    """The index's database server cannot be reached or refuses the connection (down, wrong host, port,
    user or password)."""
