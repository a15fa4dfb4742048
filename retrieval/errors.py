"""Typed errors of the model and query layers (the shared base is `indexer.errors.MmsearchError`)."""
from __future__ import annotations

from indexer.errors import MmsearchError


class ModelNotFoundError(MmsearchError):
    """A model name, folder or config that cannot be resolved or loaded."""


class QueryError(MmsearchError):
    """A query that cannot be parsed or embedded (empty, bad weight, unreadable image)."""
