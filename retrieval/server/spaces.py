"""The server's query over every space of the index: pictures in the index model's, sounds in their audio model's.

retrieval.query.spaces does this for one CLI query and opens the audio model each time; a server
opens each space once (again only when the index records another audio model) and keeps its text
vectors. What a request's parts rank (the CLI's rule):
- words rank every space, each with its own text tower's vector (the main one where they share it);
- an uploaded picture or a picture's item ranks the index model's space only;
- a sound's item ("more like this sound") ranks the sounds' space only (words joining it).
Each space's scores go through its calibration (retrieval.query.spaces.Calibration) and the lists
are merged, one hit per item.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from retrieval.errors import QueryError
from retrieval.query.parse import combine
from retrieval.query.search import _merge, rank
from retrieval.query.spaces import Space, calibrated, foreign_encoders, open_spaces, wanted
from retrieval.server.vector_cache import VectorCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryParts:
    """One request's parts: weighted words (and their vectors by the index model's text tower), other
    vectors in the index model's space (pictures), and stored sounds' vectors by encoder."""

    texts: tuple[str, ...] = ()
    text_weights: tuple[float, ...] = ()
    text_vectors: tuple[np.ndarray, ...] = ()  # the words by the index model's text tower
    pictures: tuple[np.ndarray, ...] = ()  # uploads and pictures' items (weight 1 each)
    sounds: tuple[tuple[str, np.ndarray], ...] = ()  # (encoder, vector): items whose vectors are in another space

    def main_vector(self) -> np.ndarray | None:
        vectors = [*self.text_vectors, *self.pictures]
        if not vectors:
            return None
        return combine(np.stack(vectors), [*self.text_weights, *([1.0] * len(self.pictures))])


class ServerSpaces:
    """The index's other spaces, opened on first use and again when the recorded audio models change."""

    def __init__(self, library, model, device: str = "cpu", cache_size: int = 512):
        self.library = library
        self.model = model
        self.device = device
        self._key: tuple | None = None
        self._generation: int | None = None
        self._spaces: list[Space] = []
        self._lock = threading.Lock()
        self._text_cache = VectorCache(cache_size)

    def current(self) -> list[Space]:
        generation = self.library.generation
        if generation == self._generation:  # what the index records changes only with its generation
            return self._spaces
        foreign = foreign_encoders(self.library, self.model.info)
        key = tuple(sorted((name, info.fingerprint) for name, info in foreign.items()))
        if key != self._key:
            with self._lock:
                if key != self._key:
                    self._spaces = open_spaces(self.library, self.model, self.device, foreign) if foreign else []
                    self._key = key
                    log.info("query spaces: %s", [space.encoders for space in self._spaces])
        self._generation = generation
        return self._spaces

    def text_vectors(self, space: Space, texts: list[str], forward) -> np.ndarray:
        """`texts` by `space`'s own text tower (run through `forward`, the engine's model threads), cached."""
        found = {text: self._text_cache.get((space.info.fingerprint, text)) for text in texts}
        missing = sorted({text for text, vector in found.items() if vector is None})
        if missing:
            for text, vector in zip(missing, forward(space.text.embed_texts, missing)):
                self._text_cache.put((space.info.fingerprint, text), vector)
                found[text] = vector
        return np.stack([found[text] for text in texts])


def rank_parts(library, spaces: list[Space], parts: QueryParts, top: int, filters,
               embed_texts: Callable[[Space, list[str]], np.ndarray]) -> tuple[np.ndarray | None, list]:
    """(the query's vector in the index model's space, None when that space was not ranked; the merged hits).
    `embed_texts(space, texts)`: the words by the space's own text tower."""
    main_vector = None if parts.sounds else parts.main_vector()
    if parts.sounds and not any(wanted(space.encoders, filters) for space in spaces
                                if any(name in space.encoders for name, _ in parts.sounds)):
        raise QueryError("more like a sound ranks sounds, and this search's modality leaves them out")
    lists = []
    if main_vector is not None:
        lists.append(rank(library, main_vector, top, filters)[0])
    for space in spaces:
        if not wanted(space.encoders, filters):
            continue
        own = [vector for name, vector in parts.sounds if name in space.encoders]
        if parts.sounds and not own:
            continue  # a sound's item ranks its own space
        vectors, weights = list(own), [1.0] * len(own)
        if parts.texts:
            vectors.extend(parts.text_vectors if space.same_text else embed_texts(space, list(parts.texts)))
            weights.extend(parts.text_weights)
        if not vectors:
            continue  # a picture alone ranks pictures
        vector = combine(np.stack(vectors), weights)
        lists.append(calibrated(rank(library, vector, top, filters, encoders=space.encoders)[0], space.calibration))
    if not lists:
        return main_vector, []
    return main_vector, lists[0] if len(lists) == 1 else _merge(lists, top)
