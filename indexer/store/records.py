"""The plain records the stores take and give: a model's identity, a file's outcome, an item.

No SQLAlchemy, no sqlite3 here: the search path's sqlite3 reader, the pipeline and the model layer
all use these without importing a database layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from indexer.errors import ModelMismatchError

IMAGE = "image"  # the modality of a still picture, and the name of the image tower's encoder


@dataclass(frozen=True)
class ModelInfo:
    """What an index records about the model that filled it."""

    name: str
    weights: str
    dim: int
    fingerprint: str


def check_same_model(recorded: ModelInfo, wanted: ModelInfo) -> None:
    if recorded.fingerprint != wanted.fingerprint or recorded.dim != wanted.dim:
        raise ModelMismatchError(
            f"this index was built with model {recorded.name} ({recorded.dim}-d); you asked for "
            f"{wanted.name} ({wanted.dim}-d). Search without --model to use the index's own model, "
            f"or re-embed the index with `mmsearch reindex --model {wanted.name}`"
        )


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
    duration_s: float | None = None


@dataclass(frozen=True)
class KnownFile:
    """What the store remembers of a path: enough to tell if it changed."""

    item_id: int
    size: int
    mtime: float
    failed: bool


@dataclass(slots=True)
class Embedded:
    """One vector of an item: which encoder made it, for which moment (None: the whole item)."""

    encoder: str
    start_s: float | None
    vector: np.ndarray


def single_vector(vector: np.ndarray, encoder: str = IMAGE) -> list[Embedded]:
    """The vectors of a still picture: one, for the whole item."""
    return [Embedded(encoder, None, vector)]


@dataclass(slots=True)
class NewItem:
    """One file's outcome, ready to be written: its vectors, a source to reuse them from, or an error.

    Not frozen: one is made per file on the indexing hot path, and a frozen dataclass's
    __init__ costs several times as much."""

    path: str
    size: int
    mtime: float
    content_hash: str | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    vectors: list[Embedded] | None = None
    reuse_from: int | None = None  # an item id whose vectors this file shares (same content hash)
    error: str | None = None
    modality: str = IMAGE
    taken_at: float | None = None
    duration_s: float | None = None
    text_screen: object | None = None  # the text test's answer from the decode (not stored: for the words pass)


@dataclass(slots=True)
class WriteResult:
    """What one write changed: for the vector files' incremental update and the run's hash table."""

    hashes: dict[int, str | None] = field(default_factory=dict)  # item id -> content hash, of items given vectors
    added: list[int] = field(default_factory=list)  # vector ids written
    removed: list[int] = field(default_factory=list)  # vector ids dropped (replaced or deleted)
    deleted_items: list[int] = field(default_factory=list)  # item ids deleted (sweep, forget)


@dataclass(frozen=True)
class VectorHit:
    """What a vector id in a vector file stands for."""

    item: ItemRecord
    start_s: float | None
