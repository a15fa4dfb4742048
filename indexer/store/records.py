"""The plain records the stores take and give: a model's identity, a file's outcome, an item.

No SQLAlchemy, no sqlite3 here: the search path's sqlite3 reader, the pipeline and the model layer
all use these without importing a database layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IMAGE = "image"  # the modality of a still picture, and the name of the image tower's encoder


@dataclass(frozen=True)
class ModelInfo:
    """What an index records about the model that filled it."""

    name: str
    weights: str
    dim: int
    fingerprint: str


@dataclass(frozen=True)
class ItemRecord:
    """One indexed item's metadata."""

    id: int
    path: str
    size: int
    mtime: float
    width: int | None
    height: int | None
    format: str | None
    modality: str
    indexed_at: float
    taken_at: float | None = None


@dataclass(frozen=True)
class KnownFile:
    """What the store remembers of a path: enough to tell if it changed."""

    item_id: int
    size: int
    mtime: float
    failed: bool


@dataclass(slots=True)
class NewItem:
    """One file's outcome, ready to be written: a vector, a reused vector, or an error.

    Not frozen: one is made per file on the indexing hot path, and a frozen dataclass's
    __init__ costs several times as much."""

    path: str
    size: int
    mtime: float
    content_hash: str | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    vector: np.ndarray | None = None
    reuse_from: int | None = None
    error: str | None = None
    modality: str = IMAGE
    taken_at: float | None = None
