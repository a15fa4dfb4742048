"""The seam between media and the pipeline: readers turn a file's bytes into segments, encoders embed them.

A *reader* serves one modality (image, audio, video, ...) and the file extensions it takes; it
turns a file's bytes into a `DecodedItem`: the facts to store (size, format, capture time,
duration) and one or more `Segment`s, each the input of one *encoder* (the image tower, an audio
tower) for one moment of the item. An *encoder* embeds a list of its segments' payloads. The
pipeline, the stores and the query layer only see these types: adding a modality adds a reader
(and maybe an encoder), it does not edit them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

from indexer.store.records import ModelInfo


@dataclass(slots=True)
class Segment:
    encoder: str  # the encoder that embeds it
    start_s: float | None  # where in the item (None: the whole item)
    payload: object  # that encoder's input: an array, or something it decodes itself (a GPU JPEG)


@dataclass(slots=True)
class DecodedItem:
    """One file, decoded: what to store about it and what to embed. Not frozen: one per file, hot path."""

    segments: list[Segment]
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: float | None = None
    duration_s: float | None = None
    deferred: bool = False  # its payloads wait for a device to decode them (the GPU's share of the work)
    # what the text test saw on the pixels decoded for the vector (indexer.media.text_gate.TextScreen),
    # when the run reads words (--ocr auto|on); None: not tested here (the words pass tests it)
    text_screen: object | None = None


class Reader(Protocol):
    modality: str
    extensions: frozenset[str]
    defers: bool  # leaves some decoding to a device (its DecodedItems may be `deferred`)
    # True: the reader streams the file from its path (`read_path`), which is hashed by samples
    # (indexer.media.files.sample_file_checked) instead of being read whole into memory first
    streams: bool

    def read(self, data: bytes, busy: Callable[[], bool]) -> DecodedItem:
        """Decode `data` (raise indexer.errors.DecodeError for a file it cannot take). `busy()` says
        whether deferred work already waits a full batch deep (then decode it here, if possible)."""

    def read_path(self, path: str, busy: Callable[[], bool]) -> DecodedItem:
        """As `read`, from the file at `path` (readers that stream: long sounds, videos)."""


class Encoder(Protocol):
    info: ModelInfo  # the model whose vectors it makes (recorded in the index)

    def warm(self) -> None:
        """Build what embedding needs (load weights, export a faster variant): seconds, once. The
        pipeline calls it before the first batch, as a step of its own, only when there is work."""

    def embed(self, payloads: Sequence[object]) -> list[np.ndarray | str]:
        """One unit vector per payload, in order, or a reason it could not be embedded."""


@dataclass(frozen=True)
class Media:
    """What an index run reads and embeds: readers by extension, encoders by name."""

    readers: tuple[Reader, ...]
    encoders: Mapping[str, Encoder]

    @property
    def extensions(self) -> frozenset[str]:
        return frozenset(extension for reader in self.readers for extension in reader.extensions)

    @property
    def defers(self) -> bool:
        return any(reader.defers for reader in self.readers)

    def by_extension(self) -> dict[str, Reader]:
        return {extension: reader for reader in self.readers for extension in reader.extensions}

    def encoders_for(self, extensions) -> list[str]:
        """The encoders that files of `extensions` reach (a reader's `encoders`; all, for a reader that
        does not say): the ones worth setting up for a run over those files."""
        names: set[str] = set()
        readers = self.by_extension()
        for extension in extensions:
            reader = readers.get(extension)
            if reader is not None:
                names.update(getattr(reader, "encoders", None) or self.encoders)
        return [name for name in self.encoders if name in names]
