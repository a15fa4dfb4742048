"""Query vectors kept in memory by key: a text's embedding, an uploaded image's (by its upload id)."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np


def upload_id(data: bytes) -> str:
    """An uploaded image's id: a hash of its bytes (the same picture uploaded twice is embedded once)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class VectorCache:
    """A bounded LRU of a key (a text, an upload id) -> unit vector (paging through one query embeds it once)."""

    size: int
    entries: OrderedDict = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, text: str) -> np.ndarray | None:
        with self.lock:
            vector = self.entries.get(text)
            if vector is not None:
                self.entries.move_to_end(text)
            return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        if self.size <= 0:
            return
        with self.lock:
            self.entries[text] = vector
            self.entries.move_to_end(text)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
