"""The embed pipeline: files -> (read, hash, decode) in workers -> batches -> vectors.

A chain of generators (rclip's shape). Workers run with a bounded look-ahead so decoding the
next batches overlaps inference on this one while memory stays flat. A file whose content hash
is already in the index is not decoded at all: its vector is reused (renames, copies).
"""
from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

import numpy as np

from indexer.decode import DecodeOptions, Decoded, content_hash, decode_image, read_file
from indexer.scan import FoundFile
from indexer.store_meta import NewItem
from retrieval.errors import DecodeError
from retrieval.preprocess import PreprocessConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 32
    workers: int = field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)))
    lookahead_batches: int = 2
    decode: DecodeOptions = DecodeOptions()
    max_pending_rows: int = 512  # reused/failed rows written at least this often


@dataclass(frozen=True)
class Prepared:
    """One file after its worker: decoded pixels, a vector to reuse, or an error."""

    file: FoundFile
    content_hash: str | None = None
    decoded: Decoded | None = None
    reuse_from: int | None = None
    error: str | None = None


def prepare_file(file: FoundFile, known_hashes: Mapping[str, int], preprocess: PreprocessConfig,
                 options: DecodeOptions) -> Prepared:
    try:
        data = read_file(file.path)
    except DecodeError as exc:
        return Prepared(file, error=str(exc))
    digest = content_hash(data)
    source = known_hashes.get(digest)
    if source is not None:
        return Prepared(file, content_hash=digest, reuse_from=source)
    try:
        return Prepared(file, content_hash=digest, decoded=decode_image(data, preprocess, options))
    except DecodeError as exc:
        return Prepared(file, content_hash=digest, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a decoder bug costs one file, never the run
        log.exception("unexpected error decoding %s", file.path)
        return Prepared(file, content_hash=digest, error=f"unexpected decode error: {exc!r}")


def prepare_files(files: Iterable[FoundFile], known_hashes: Mapping[str, int], preprocess: PreprocessConfig,
                  config: PipelineConfig) -> Iterator[Prepared]:
    """prepare_file over files in a thread pool, in order, with a bounded window in flight."""
    window = max(1, config.batch_size * config.lookahead_batches)
    with ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="decode") as pool:
        in_flight: deque = deque()
        for file in files:
            in_flight.append(pool.submit(prepare_file, file, known_hashes, preprocess, config.decode))
            if len(in_flight) >= window:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def _as_row(prepared: Prepared, vector: np.ndarray | None = None) -> NewItem:
    decoded = prepared.decoded
    return NewItem(
        path=prepared.file.path, size=prepared.file.size, mtime=prepared.file.mtime,
        content_hash=prepared.content_hash,
        width=decoded.width if decoded else None, height=decoded.height if decoded else None,
        format=decoded.format if decoded else None,
        vector=vector, reuse_from=prepared.reuse_from, error=prepared.error,
    )


def embed_batches(prepared: Iterable[Prepared], embed_pixels, config: PipelineConfig) -> Iterator[list[NewItem]]:
    """Group prepared files into write batches; the decoded ones are embedded together."""
    to_embed: list[Prepared] = []
    others: list[NewItem] = []

    def flush() -> list[NewItem]:
        rows = list(others)
        if to_embed:
            vectors = embed_pixels(np.stack([item.decoded.pixels for item in to_embed]))
            rows.extend(_as_row(item, vector) for item, vector in zip(to_embed, vectors))
        to_embed.clear()
        others.clear()
        return rows

    for item in prepared:
        if item.decoded is not None:
            to_embed.append(item)
        else:
            others.append(_as_row(item))
        if len(to_embed) >= config.batch_size or len(others) >= config.max_pending_rows:
            yield flush()
    if to_embed or others:
        yield flush()
