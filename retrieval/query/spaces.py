"""One query over encoders that live in different spaces: each space's own query vector, calibrated scores.

An index's encoders either share the index model's space (its text tower's vectors rank them:
pictures, video frames) or come from a model of their own (sounds from CLAP, or from the bundled
audio tower beside a CLIP image model). For those, the query is embedded again with the text
tower that belongs to their vectors, and their cosines are mapped onto the index model's scale
by the audio model's calibration (an affine map measured on held-out data, recorded in its card:
a CLAP cosine of 0.3 and a CLIP cosine of 0.3 do not mean the same) before the lists are merged,
one hit per item. Where two spaces' text towers are the same (the bundled audio tower beside the
bundled model), the query vector is reused and only the calibration applies.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from indexer.store.library import Library
from indexer.store.records import ModelInfo
from retrieval.errors import QueryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """score -> scale * score + shift, onto the index model's scale."""

    scale: float = 1.0
    shift: float = 0.0

    def apply(self, score: float) -> float:
        return float(min(1.0, max(-1.0, self.scale * score + self.shift)))


@dataclass
class Space:
    encoders: list[str]
    info: ModelInfo  # the model recorded for these encoders
    text: object  # embed_texts(list[str]) -> unit vectors in this space
    same_text: bool  # its text tower is the index model's: the main query vector serves
    calibration: Calibration


def foreign_encoders(library: Library, main: ModelInfo) -> dict[str, ModelInfo]:
    """Encoders whose vectors are not in `main`'s space, with the model recorded for each; one whose
    saved file holds no vectors (an audio tower bound by runs that met no sound) is left out: opening
    its space would load its model (torch) for nothing."""
    out = {}
    for name in library.encoders():
        info = library.model(name)
        if info is not None and info.fingerprint != main.fingerprint and library.saved_vectors(name) != 0:
            out[name] = info
    return out


def open_spaces(library: Library, main_model, device: str = "cpu", encoders: dict[str, ModelInfo] | None = None) -> list[Space]:
    """The other spaces of `library` (audio models), each able to embed a text query."""
    from retrieval.media import open_audio_model

    spaces = []
    for name, info in (encoders if encoders is not None else foreign_encoders(library, main_model.info)).items():
        audio = open_audio_model(info.name, _full_if_loaded(main_model), device=device)
        if audio.info.fingerprint != info.fingerprint:
            raise QueryError(f"the {name} vectors of this index were made by {info.name} ({info.weights}); that model "
                             f"now loads with other weights, so queries would miss: index again with "
                             f"--audio-model {info.name} after `mmsearch forget` of the sounds, or keep the old version")
        calibration = Calibration(**getattr(audio, "card", {}).get("calibration", {}))
        same = getattr(audio, "text_fingerprint", None) == main_model.info.fingerprint
        spaces.append(Space([name], info, audio.text if not same else None, same, calibration))
    return spaces


def _full_if_loaded(model):
    """The model to lend its text tower: the full model when a search model already holds one."""
    return getattr(model, "__dict__", {}).get("full", model) if hasattr(model, "full") else model


def space_vectors(space: Space, texts: list[str], weights: list[float], main_vector: np.ndarray | None) -> np.ndarray:
    """The query vector of one space: the main one when the text tower is shared, else the weighted
    text terms embedded by its own tower (image terms have no meaning there and are left out)."""
    from retrieval.query.parse import combine

    if space.same_text:
        return main_vector
    if not texts:
        raise QueryError("nothing to search sounds with: give words (an image ranks only pictures)")
    return combine(space.text.embed_texts(texts), weights)


def calibrated(hits, calibration: Calibration):
    if calibration == Calibration():
        return hits
    return [replace(hit, score=calibration.apply(hit.score),
                    moments=tuple((start, calibration.apply(score)) for start, score in hit.moments)) for hit in hits]


# the modalities an encoder's vectors can belong to: an audio tower embeds sounds and videos' soundtracks
HELD_BY = {"audio": ("audio", "video")}


def wanted(space_encoders: list[str], filters) -> bool:
    return not filters.modalities or any(modality in filters.modalities
                                         for name in space_encoders for modality in HELD_BY.get(name, (name,)))


def embed_sound_file(audio, path: str, max_seconds: float = 60.0) -> np.ndarray:
    """A query sound (its first minute): the normalised mean of its windows' vectors."""
    import os

    from indexer.errors import DecodeError
    from indexer.media.audio import decode_samples
    from indexer.media.audio_reader import cut_windows

    try:
        samples, _ = decode_samples(os.path.expanduser(path), audio.windowing.sample_rate, max_seconds=max_seconds)
        windows, _ = cut_windows([samples], audio.windowing, lambda window: audio.features(window.samples))
    except DecodeError as exc:
        raise QueryError(f"query sound {path}: {exc}") from None
    vectors = audio.embed_windows([payload for _, payload in windows])
    mean = vectors.mean(axis=0)
    return (mean / max(1e-12, float(np.linalg.norm(mean)))).astype(np.float32)


def rank_spaces(library: Library, model, queries: list[list], main_vectors: np.ndarray | None, top: int, filters,
                device: str = "cpu", sounds: tuple[str, ...] = ()) -> list[list]:
    """Hits for each query (its terms), over every space of the index, merged (see the module docstring).

    `main_vectors`: the queries' vectors in the index model's space (None: rank no encoder there).
    `sounds`: query sound files (one query): they and the words rank the sounds' space only."""
    from retrieval.query.search import _merge, rank

    # the index model's encoders hold several modalities (pictures and video frames), an audio model's
    # sounds and videos' soundtracks (HELD_BY): --modality is applied to their items by rank()
    main_encoders = library.encoders_sharing(model.info) if model.info is not None else []
    per_query: list[list[list]] = [[] for _ in queries]
    if main_vectors is not None and main_encoders and not sounds:
        for row, hits in enumerate(rank(library, main_vectors, top, filters, encoders=main_encoders)):
            per_query[row].append(hits)
    foreign = {name: info for name, info in foreign_encoders(library, model.info).items() if wanted([name], filters)}
    if sounds and not foreign:
        raise QueryError("--audio finds sounds, and this index has none" + (
            " of the kinds --modality names" if filters.modalities else
            ": index a folder with sound files (wav, mp3, flac ...) first"))
    if foreign:
        for space in open_spaces(library, model, device, foreign):
            vectors = []
            for row, terms in enumerate(queries):
                texts = [term.value for term in terms if not term.is_image]
                weights = [term.weight for term in terms if not term.is_image]
                if sounds:
                    from retrieval.media import open_audio_model
                    from retrieval.query.parse import combine

                    audio = open_audio_model(space.info.name, _full_if_loaded(model), device=device)
                    parts = [embed_sound_file(audio, path) for path in sounds]
                    if texts:
                        parts.append(space_vectors(space, texts, weights, None if main_vectors is None else main_vectors[row]))
                    vectors.append(combine(np.stack(parts), [1.0] * len(sounds) + ([1.0] if texts else [])))
                elif space.same_text:
                    vectors.append(main_vectors[row])
                elif texts:
                    vectors.append(space_vectors(space, texts, weights, None))
                else:
                    vectors.append(None)
            live = [row for row, vector in enumerate(vectors) if vector is not None]
            if not live:
                continue
            ranked = rank(library, np.stack([vectors[row] for row in live]), top, filters, encoders=space.encoders)
            for row, hits in zip(live, ranked):
                per_query[row].append(calibrated(hits, space.calibration))
    return [_merge(lists, top) if len(lists) != 1 else lists[0] for lists in per_query]
