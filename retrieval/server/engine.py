"""The warm search engine behind the web server: model, index and caches loaded once.

`SearchEngine.open(config)` loads the index's model (text tower at once, image tower on first
image query unless preloaded) and the FAISS index; queries then only embed and rank. The FAISS
index stays in memory (`WarmLibrary`) and is reloaded only when the database generation changes.
Sounds embedded by an audio model of their own are ranked in their space beside the pictures
(retrieval.server.spaces).

Text queries run on the ONNX export of the text tower that `mmsearch index` writes beside the index
(`retrieval.models.onnx_text`, one intra-op thread per call, trimmed to the query's real tokens) when its
model fingerprint matches; without one (or when it cannot be opened) on the torch tower.

It is one module (about 400 lines) because one request's path runs through all of it: check the
index's model, embed the query's parts, rank, leave out, add relevance, page; the caches and the
response models already live apart (vector_cache, responses).
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np

from indexer.errors import DecodeError, ModelMismatchError
from indexer.media.image import DecodeOptions, decode_image
from indexer.store.library import Library
from indexer.store.records import ItemRecord
from indexer.store.vectors import choose_index_spec
from retrieval.errors import QueryError
from retrieval.index_model import choose_model, open_model
from retrieval.models.encoders import Model
from retrieval.query.parse import combine, parse_query
from retrieval.query.relevance import IMAGE_QUERY, TEXT, above, add_relevance
from retrieval.query.search import Filters, Hit, rank
from retrieval.query.spaces import foreign_encoders
from retrieval.server.config import ServerConfig
from retrieval.server.decode_budget import check_decode_budget
from retrieval.server.errors import ItemNotFoundError, UploadExpiredError
from retrieval.server.spaces import QueryParts, ServerSpaces, rank_parts
from retrieval.server.vector_cache import VectorCache, upload_id
from retrieval.server.warm_library import STALE_REBUILD_INTERVAL_S, WarmLibrary  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

MAX_OFFSET = 10_000
MAX_LIMIT = 200
MAX_LIKE_IDS = 16
MAX_ITEM_ID = 2**63 - 1  # SQLite's largest integer
MAX_UPLOAD_IDS = 4
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
MIN_MODEL_WORKERS = 2  # so a second client's query never waits for a first client's to finish


@dataclass(frozen=True)
class SearchRequest:
    """One query: weighted text terms, items' stored vectors, uploaded images (their bytes, or the ids
    of images uploaded before); filters; a page. `exclude_ids` never appear in the results."""

    text: str | None = None
    like_ids: tuple[int, ...] = ()
    images: tuple[bytes, ...] = ()
    upload_ids: tuple[str, ...] = ()
    exclude_ids: tuple[int, ...] = ()
    filters: Filters = Filters()
    offset: int = 0
    limit: int = 48
    words: str | None = None  # only pictures whose words (OCR, read at index time) match these
    max_decode_bytes: int | None = None  # per uploaded image; None: the engine's config
    min_relevance: float = 0.0  # hits below this relevance are left out (counted in SearchPage.weaker_hidden)


@dataclass(frozen=True)
class SearchPage:
    hits: list[Hit]
    offset: int
    limit: int
    has_more: bool
    took_ms: float
    upload_ids: tuple[str, ...] = ()  # one per uploaded image: give them as `upload` to search by it again
    weaker_hidden: int = 0  # hits ranked within the page's reach but below min_relevance


def open_text_encoder(library: Library, model: Model, config: ServerConfig):
    """(encoder, backend name): the index's current ONNX text export when there is one, else the torch tower.

    The backend is "onnx-trimmed" (runs on the real tokens only), "onnx" (an export at the fixed
    context length: older, or a tower that cannot be trimmed) or "torch"; "-int8" is appended when
    `config.text_precision` asks for int8 and the export has a checked int8 graph.
    """
    folder = library.text_export_path
    if config.text_backend == "auto":
        from retrieval.models.onnx_text import OnnxTextEncoder, exported_fingerprint

        if exported_fingerprint(folder) == model.info.fingerprint:
            try:
                threads = config.resolved_text_threads
                encoder = OnnxTextEncoder(folder, threads=threads, precision=config.text_precision, spin=threads == 1)
            except Exception as exc:  # noqa: BLE001 - onnxruntime missing or a damaged export: torch does the same job
                log.warning("text export %s not usable (%s); text queries use the torch tower", folder, exc)
            else:
                backend = "onnx-trimmed" if encoder.trims else "onnx"
                return encoder, backend + ("-int8" if encoder.precision == "int8" else "")
    return model.text, "torch"


class SearchEngine:
    """What the HTTP routes call: search, items, files, status. Thread-safe."""

    def __init__(self, library: WarmLibrary, model: Model, config: ServerConfig):
        self.library = library
        self.model = model
        self.config = config
        self.text_encoder, self.text_backend = open_text_encoder(library, model, config)
        self._text_cache = VectorCache(config.text_cache_size)
        self._upload_cache = VectorCache(config.upload_cache_size)  # upload id -> the uploaded image's vector
        self._tower_lock = threading.Lock()  # the image tower is built once, by one thread
        # Forward passes run on a few dedicated threads (enough to keep every core busy), not on
        # whichever of the web server's many threads took the request: torch's per-thread state and
        # buffers then exist a few times over, not once per request thread, and memory stays flat.
        self._model_workers = max(MIN_MODEL_WORKERS, (os.cpu_count() or 1) // (config.torch_threads or 1))
        self._model_pool = ThreadPoolExecutor(max_workers=self._model_workers, thread_name_prefix="mmsearch-model")
        self._status_cache: tuple[int, dict] | None = None
        self.spaces = ServerSpaces(library, model, config.device, config.text_cache_size)  # sounds' spaces
        self._model_checked_generation: int | None = None

    @classmethod
    def open(cls, config: ServerConfig) -> "SearchEngine":
        """Open the index, load its model and FAISS index, and warm both up."""
        if config.torch_threads is not None:
            import torch

            # one intra-op thread per forward pass: concurrent requests already spread over the cores,
            # and OpenMP threads spinning beside them (or beside another busy process) cost far more
            torch.set_num_threads(config.torch_threads)
        library = WarmLibrary(config.db)
        try:
            # the index's model, checked, its image tower at the index's precision (uploads are embedded
            # like the indexed files)
            model = open_model(library, choose_model(library, config.model_name).name, device=config.device)
            engine = cls(library, model, config)
            engine.warm()
        except BaseException:
            library.close()
            raise
        return engine

    def warm(self) -> None:
        started = time.perf_counter()
        text = self.text_encoder  # built at start, once; then every model thread runs it once
        warm_ups = [self._model_pool.submit(text.embed_texts, [f"warm up {n}"]) for n in range(self._model_workers)]
        for future in warm_ups:
            future.result()
        if self.config.preload_image_tower:
            self.image_encoder()
        self.library.vectors_for_search()
        log.info("model %s (text: %s) and index warm in %.2f s", self.model.info.name, self.text_backend,
                 time.perf_counter() - started)

    @property
    def searches_per_client(self) -> int:
        """One client's share of the model threads (the server's default for ClientGate)."""
        return max(1, self._model_workers // 2)

    def close(self) -> None:
        self._model_pool.shutdown(wait=True, cancel_futures=True)
        self.library.close()

    def _forward(self, function, *args):
        """Run a model call on the model threads and wait for it."""
        return self._model_pool.submit(function, *args).result()

    # --- search -------------------------------------------------------------------------
    def search(self, request: SearchRequest) -> SearchPage:
        """Rank the top offset+limit (+1 to know if more follow) and return the requested slice."""
        if not 0 <= request.offset <= MAX_OFFSET:
            raise QueryError(f"offset must be between 0 and {MAX_OFFSET}")
        if not 1 <= request.limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        if len(request.exclude_ids) > MAX_LIKE_IDS:
            raise QueryError(f"at most {MAX_LIKE_IDS} items to leave out")
        started = time.perf_counter()
        self._check_index_model()
        wanted = request.offset + request.limit
        excluded = set(request.exclude_ids)
        query_vector = None
        if request.words is not None and request.words.strip():
            hits = self._search_words(request, wanted + 1 + len(excluded))
        else:
            query_vector, hits = self._rank(request, wanted + 1 + len(excluded))
        hits = [hit for hit in hits if hit.item_id not in excluded][:wanted + 1]
        if query_vector is not None:  # by the words alone (or a sound alone) there is no vector to calibrate
            kind = IMAGE_QUERY if (request.images or request.like_ids or request.upload_ids) else TEXT
            hits = add_relevance(self.library, [hits], query_vector, [kind])[0]
        shown = above(hits, request.min_relevance) if query_vector is not None else hits
        return SearchPage(shown[request.offset:wanted], request.offset, request.limit, len(shown) > wanted,
                          round((time.perf_counter() - started) * 1000, 2),
                          tuple(upload_id(data) for data in request.images), weaker_hidden=len(hits) - len(shown))

    def _search_words(self, request: SearchRequest, top: int) -> list[Hit]:
        """By the words alone, or (with words, items or images) among the pictures holding the words."""
        from retrieval.query.words import rank_by_words, with_words, words_matches

        if len(request.words) > 2000:
            raise QueryError("words: at most 2000 characters")
        if not ((request.text and request.text.strip()) or request.like_ids or request.images):
            return rank_by_words(self.library, request.words, top, request.filters)[0]
        matches = words_matches(self.library, request.words)
        filters = replace(request.filters, item_ids=tuple(matches))
        return with_words(rank(self.library, self.query_vector(request), top, filters)[0], matches)

    def _rank(self, request: SearchRequest, top: int) -> tuple[np.ndarray | None, list[Hit]]:
        """(the query's vector in the index model's space, or None where only sounds were ranked; the hits)."""
        spaces = self.spaces.current()
        if not spaces:
            vector = self.query_vector(request)
            return vector, rank(self.library, vector, top, request.filters)[0]
        return rank_parts(self.library, spaces, self.query_parts(request, sounds=True), top, request.filters,
                          lambda space, texts: self.spaces.text_vectors(space, texts, self._forward))

    def query_vector(self, request: SearchRequest) -> np.ndarray:
        """The query in the index model's space (words, pictures' items, uploads)."""
        return self.query_parts(request).main_vector()

    def query_parts(self, request: SearchRequest, sounds: bool = False) -> QueryParts:
        """The request's parts; with `sounds`, items whose vectors are in another space (sounds) go apart."""
        if len(request.like_ids) > MAX_LIKE_IDS:
            raise QueryError(f"at most {MAX_LIKE_IDS} items in one query")
        if len(request.upload_ids) + len(request.images) > MAX_UPLOAD_IDS:
            raise QueryError(f"at most {MAX_UPLOAD_IDS} uploaded images in one query")
        texts: list[str] = []
        weights: list[float] = []
        if request.text is not None and request.text.strip():
            # parse_query, not build_terms: over HTTP a term is always text, never a server path
            terms = parse_query(request.text)
            texts = [term.value for term in terms]
            weights = [term.weight for term in terms]
        pictures, stored_sounds = [], []
        for item_id in request.like_ids:
            encoder, vector = self.stored_vector_of(item_id, sounds)
            (pictures if encoder is None else stored_sounds).append(vector if encoder is None else (encoder, vector))
        pictures.extend(self.image_vector(data, request.max_decode_bytes) for data in request.images)
        pictures.extend(self.uploaded_vector(key) for key in request.upload_ids)
        if not (texts or pictures or stored_sounds):
            raise QueryError("nothing to search for: give q (words), like (an item id) or an image")
        return QueryParts(tuple(texts), tuple(weights), tuple(self.text_vectors(texts)) if texts else (),
                          tuple(pictures), tuple(stored_sounds))

    def text_vectors(self, texts: list[str]) -> list[np.ndarray]:
        """One vector per text: from the cache, the rest embedded in one batch."""
        found = {text: self._text_cache.get(text) for text in texts}
        missing = sorted({text for text, vector in found.items() if vector is None})
        if missing:
            embedded = self._forward(self.text_encoder.embed_texts, missing)
            for text, vector in zip(missing, embedded):
                self._text_cache.put(text, vector)
                found[text] = vector
        return [found[text] for text in texts]

    def image_vector(self, data: bytes, max_decode_bytes: int | None = None) -> np.ndarray:
        """An uploaded image's vector, kept by its upload id; refused (413) first when decoding it would
        pass the memory budget (checked on every upload, kept or not: the same rule for every request)."""
        check_decode_budget(data, self.model.preprocess.image_size, max_decode_bytes or self.config.max_decode_bytes)
        key = upload_id(data)
        known = self._upload_cache.get(key)
        if known is not None:
            return known
        vector = self._embed_upload(data)
        self._upload_cache.put(key, vector)
        return vector

    def uploaded_vector(self, key: str) -> np.ndarray:
        """The vector of an image uploaded before (`SearchPage.upload_ids`), while this server keeps it."""
        if not UPLOAD_ID.match(key):
            raise QueryError("upload: not an upload id (32 hex digits, from an earlier upload's upload_ids)")
        vector = self._upload_cache.get(key)
        if vector is None:
            raise UploadExpiredError("this server no longer has that uploaded image (it keeps the last "
                                     f"{self.config.upload_cache_size}, until it restarts): upload it again")
        return vector

    def _embed_upload(self, data: bytes) -> np.ndarray:
        try:
            decoded = decode_image(data, self.model.preprocess, DecodeOptions())
        except DecodeError as exc:
            raise QueryError(f"uploaded image: {exc}") from None
        encoder = self.image_encoder()
        return self._forward(encoder.embed_pixels, decoded.pixels[None])[0]

    def image_encoder(self):
        if not self.model.image_built:
            with self._tower_lock:
                return self.model.image
        return self.model.image

    def stored_vector(self, item_id: int) -> np.ndarray:
        """The vector the index holds for an item ("more like this") in the index model's space."""
        return self.stored_vector_of(item_id)[1]

    def stored_vector_of(self, item_id: int, other_spaces: bool = False) -> tuple[str | None, np.ndarray]:
        """(None, its vector) for an item in the index model's space; with `other_spaces`, (encoder,
        vector) for one whose vectors another model made (a sound)."""
        if not 1 <= item_id <= MAX_ITEM_ID:
            raise ItemNotFoundError(f"no item with id {item_id}")
        vectors = self.library.reads.item_vectors(item_id, self.model.info.dim)
        if len(vectors):
            return None, combine(vectors, [1.0] * len(vectors))  # a video: the mean of its moments
        for encoder, info in foreign_encoders(self.library, self.model.info).items():
            found = self.library.reads.item_vectors(item_id, info.dim, encoder)
            if len(found):
                if not other_spaces:
                    raise QueryError(f"item {item_id} is a sound: more like it ranks sounds, not with --modality "
                                     "that leaves sounds out")
                return encoder, combine(found, [1.0] * len(found))  # a sound: the mean of its windows
        self.item(item_id)  # raises ItemNotFoundError when there is no such item
        raise QueryError(f"item {item_id} has no vector (it failed to index)")

    def _check_index_model(self) -> None:
        """Refuse to rank when the index switched models (`mmsearch reindex`) under a running server."""
        generation = self.library.generation
        if generation == self._model_checked_generation:
            return
        recorded = self.library.model()
        if recorded is not None and (recorded.fingerprint != self.model.info.fingerprint
                                     or recorded.dim != self.model.info.dim):
            raise ModelMismatchError(
                f"the index now holds vectors of model {recorded.name} ({recorded.dim}-d) but this server "
                f"loaded {self.model.info.name}: restart `mmsearch serve`")
        self._model_checked_generation = generation

    # --- items --------------------------------------------------------------------------
    def item(self, item_id: int) -> ItemRecord:
        if not 1 <= item_id <= MAX_ITEM_ID:
            raise ItemNotFoundError(f"no item with id {item_id}")
        record = self.library.reads.items([item_id]).get(item_id)
        if record is None:
            raise ItemNotFoundError(f"no item with id {item_id}")
        return record

    def nearest_moment(self, item_id: int, seconds: float) -> float:
        """The item's stored moment closest to `seconds` (0.0 when it has none): a video's thumbnails
        are made only at moments the index holds, so a client cannot have one made per millisecond."""
        starts = self.library.reads.moment_starts(item_id)
        return min(starts, key=lambda start: abs(start - seconds)) if starts else 0.0

    # --- status -------------------------------------------------------------------------
    def status(self) -> dict:
        """The index summary (cached per generation) plus what this server has loaded.

        The keys follow `indexer.status.read_status`, but the FAISS facts come from its JSON sidecar
        and the index in memory: read_status loads the whole FAISS file to read them.
        """
        generation = self.library.generation
        cached = self._status_cache
        if cached is None or cached[0] != generation:
            cached = (generation, self._index_summary(generation))
            self._status_cache = cached
        index = self.library.cached_index
        server = {
            "model": self.model.info.name,
            "generation": generation,
            "loaded_index": None if index is None else {
                "spec": index.spec, "vectors": index.ntotal, "generation": index.generation},
            "index_reloads": self.library.reloads,
            "image_tower_loaded": self.model.image_built,
            "text_encoder": self.text_backend,
        }
        return {**cached[1], "server": server}

    def _index_summary(self, generation: int) -> dict:
        library = self.library
        counts = library.reads.counts()
        model = library.model()
        saved = library.saved_index_info()
        return {
            "db": str(self.library.folder),
            "items": counts["items"],
            "rows": counts["rows"],
            "failed": counts["failed"],
            "model": asdict(model) if model else None,
            "vectors": counts["vectors"],
            "modalities": library.reads.counts_by_modality(),
            "image_precision": library.image_precision,
            "index_type": saved["spec"] if saved else choose_index_spec(counts["vectors"], library.index_type),
            "index_type_setting": library.index_type,
            "index_kind": saved.get("kind", "memory") if saved else None,  # "memory" or "ondisk"
            "vectors_in_index": saved.get("ntotal") if saved else None,
            "index_up_to_date": bool(saved) and saved.get("generation") == generation,
            "size_bytes": library.size_on_disk(),
            "last_run": library.runs.last(),
            "failures": [{"path": path, "error": error} for path, error in library.reads.failures(5)],
        }
