"""Relevance: an estimated probability that a hit is what was asked for, from its score and the query's.

A raw cosine means different things for different queries and models: one text query's best match
sits at 0.31, another's unrelated tail at 0.30. Two numbers place a score:

- the score itself (s), and
- where it sits among the query's scores over the whole collection: z = (s - mean) / std, where
  mean and std are those of the query's cosine to a random sample of the collection's vectors
  (SAMPLE_SIZE, seeded by the index generation, so a search gives the same answer until the
  index changes). The FAISS top-k gives the hits; the sample gives the bulk they stand out from.

A calibration maps them to a probability with a logistic curve, P = sigmoid(a*s + b*z + c), fitted
per model and per query kind (words, or pictures) on caption pairs, where a hit "matches" when it
is the query's picture (tools/bundled/calibrate.py fits the bundled model's; `mmsearch calibrate`
fits one on a user's own pairs and stores it in the index). A model without one gets a
label-free estimate from z and the collection size alone (`label_free_relevance`): the odds that
a hit is not just the best of the bulk by chance. docs/RELEVANCE.md says what each is worth.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.store.records import ModelInfo

log = logging.getLogger(__name__)

SAMPLE_SIZE = 1000  # vectors drawn from the collection to place a query's scores (mean and std: ~3% error)
CALIBRATION_FILE = "calibration.json"  # in a model folder (the bundled model ships one)
CALIBRATIONS_DIR = Path(__file__).resolve().parents[1] / "models" / "calibrations"  # open_clip models' (ARCH_TAG.json)
INDEX_CALIBRATION_KEY = "relevance_calibration"  # an index's own (library info), which wins over the model's
TEXT, IMAGE_QUERY = "text", "image"
MIN_STD = 1e-4


@dataclass(frozen=True)
class QueryStats:
    """Per query: the mean and std of its cosine over the collection (from a sample), and the collection's size."""

    mean: np.ndarray  # (queries,)
    std: np.ndarray  # (queries,)
    count: int  # vectors in the collection


def query_stats(sample: np.ndarray, query_vectors: np.ndarray, count: int) -> QueryStats:
    query_vectors = np.atleast_2d(query_vectors).astype(np.float32)
    if len(sample) < 2:
        zeros = np.zeros(len(query_vectors), np.float32)
        return QueryStats(zeros, np.ones_like(zeros), count)
    scores = query_vectors @ np.asarray(sample, dtype=np.float32).T
    return QueryStats(scores.mean(axis=1), np.maximum(scores.std(axis=1), MIN_STD), count)


def z_scores(scores: np.ndarray, mean: float, std: float) -> np.ndarray:
    return (np.asarray(scores, dtype=np.float64) - mean) / max(std, MIN_STD)


@dataclass(frozen=True)
class LogisticMap:
    """P(match) = sigmoid(score_weight * cosine + z_weight * z + bias)."""

    score_weight: float
    z_weight: float
    bias: float

    def __call__(self, scores: np.ndarray, z: np.ndarray) -> np.ndarray:
        return sigmoid(self.score_weight * np.asarray(scores, np.float64) + self.z_weight * np.asarray(z) + self.bias)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def label_free_relevance(z: np.ndarray, count: int) -> np.ndarray:
    """A probability without labelled data: how unlikely the collection's bulk is to reach this score.

    If the query's scores over the collection were a normal bulk, about count * Q(z) items would
    score this high by chance (Q the normal upper tail). The odds that a hit is more than the
    best of that bulk are taken as 1 / (count * Q(z)): one expected chance item at its score gives
    0.5, a tenth of one 0.91. It knows nothing of the model, so it says "stands out", not "matches".
    """
    z = np.asarray(z, dtype=np.float64)
    tail = np.array([0.5 * math.erfc(value / math.sqrt(2.0)) for value in z.ravel()]).reshape(z.shape)
    chance = np.maximum(count, 1) * np.maximum(tail, 1e-300)
    return 1.0 / (1.0 + chance)


@dataclass(frozen=True)
class Calibration:
    """How relevance is computed for one model: a logistic map per query kind, or the label-free estimate."""

    text: LogisticMap | None = None
    image: LogisticMap | None = None
    source: str = "label-free"  # what fitted it, for notes and docs
    fitted_on: dict | None = None  # what it was fitted and measured on (counts, ECE)

    def relevance(self, scores: np.ndarray, mean: float, std: float, count: int, kind: str = TEXT) -> np.ndarray:
        z = z_scores(scores, mean, std)
        fitted = self.image if kind == IMAGE_QUERY else self.text
        if fitted is None:
            return label_free_relevance(z, count)
        return fitted(scores, z)

    def fitted_for(self, kind: str) -> bool:
        return (self.image if kind == IMAGE_QUERY else self.text) is not None

    def to_dict(self) -> dict:
        out = {"format": 1, "source": self.source}
        for kind in (TEXT, IMAGE_QUERY):
            fitted = getattr(self, kind)
            if fitted is not None:
                out[kind] = asdict(fitted)
        if self.fitted_on:
            out["fitted_on"] = self.fitted_on
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        maps = {kind: LogisticMap(**{key: float(value) for key, value in data[kind].items()})
                for kind in (TEXT, IMAGE_QUERY) if isinstance(data.get(kind), dict)}
        return cls(text=maps.get(TEXT), image=maps.get(IMAGE_QUERY), source=str(data.get("source", "unknown")),
                   fitted_on=data.get("fitted_on"))


LABEL_FREE = Calibration()


def calibration_path(spec) -> Path | None:
    """Where a model's shipped calibration lives: `calibration.json` in a model folder (the bundled
    model's), `retrieval/models/calibrations/ARCH_TAG.json` for an open_clip name; None for the rest."""
    if spec.source == "open_clip":
        if not spec.pretrained or "/" in spec.pretrained or "\\" in spec.pretrained:
            return None  # a checkpoint file of the user's: nothing shipped can be for it
        return CALIBRATIONS_DIR / f"{spec.arch}_{spec.pretrained}.json"
    if spec.path is not None and spec.path.is_dir():
        return spec.path / CALIBRATION_FILE
    return None


def model_calibration(info: ModelInfo) -> Calibration | None:
    """The calibration a model ships (`calibration_path`), else None. Reads no weights, imports no torch;
    a file fitted for another fingerprint is ignored."""
    from retrieval.errors import ModelNotFoundError
    from retrieval.models.registry import resolve_model

    try:
        spec = resolve_model(info.name)
    except ModelNotFoundError:
        return None
    path = calibration_path(spec)
    return read_calibration(path, info.fingerprint) if path is not None else None


def read_calibration(path: Path, fingerprint: str | None = None) -> Calibration | None:
    """A calibration file, or None when missing, unreadable or made for another model (fingerprint)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if fingerprint and data.get("fingerprint") not in (None, fingerprint):
        log.info("%s was fitted for another model; ignoring it", path)
        return None
    try:
        return Calibration.from_dict(data)
    except (TypeError, ValueError, KeyError) as exc:
        log.warning("cannot read relevance calibration %s: %s", path, exc)
        return None


def calibration_for(library, info: ModelInfo | None) -> Calibration:
    """The index's own calibration (`mmsearch calibrate`), else the model's, else the label-free one."""
    if info is None:
        return LABEL_FREE
    stored = library.get_info(INDEX_CALIBRATION_KEY)
    if stored:
        try:
            data = json.loads(stored)
            if data.get("fingerprint") in (None, info.fingerprint):
                return Calibration.from_dict(data)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("the index's relevance calibration is unreadable (%s); using the model's", exc)
    return model_calibration(info) or LABEL_FREE


_SAMPLES: dict[tuple[str, int, tuple[str, ...]], np.ndarray] = {}


def collection_sample(library, dim: int, encoders: Sequence[str]) -> np.ndarray:
    """SAMPLE_SIZE vectors of `encoders` at random, seeded by the generation; kept per process (a server)
    until the index changes."""
    key = (str(library.folder), library.generation, tuple(encoders))
    sample = _SAMPLES.get(key)
    if sample is None:
        sample = library.reads.sample_vectors(dim, SAMPLE_SIZE, seed=key[1], encoders=tuple(encoders))
        for old in [old for old in _SAMPLES if old[0] == key[0]]:
            del _SAMPLES[old]
        _SAMPLES[key] = sample
    return sample


def collection_size(library, encoders: Sequence[str]) -> int:
    total = 0
    for encoder in encoders:
        index = library.vectors_for_search(encoder)
        total += index.ntotal if index is not None else 0
    return total


def add_relevance(library, results: list[list], query_vectors: np.ndarray, kinds: Sequence[str],
                  calibration: Calibration | None = None, encoders: Sequence[str] | None = None) -> list[list]:
    """Each Hit of each query's list with `relevance` set (same order; nothing dropped)."""
    if not any(results):
        return results
    info = library.model()
    if info is None:
        return results
    encoders = list(encoders) if encoders is not None else library.encoders_sharing(info)
    calibration = calibration or calibration_for(library, info)
    stats = query_stats(collection_sample(library, info.dim, encoders), query_vectors,
                        collection_size(library, encoders))
    out = []
    for row, hits in enumerate(results):
        if not hits:
            out.append(hits)
            continue
        values = calibration.relevance(np.array([hit.score for hit in hits]), float(stats.mean[row]),
                                       float(stats.std[row]), stats.count, kinds[row])
        out.append([replace(hit, relevance=float(value)) for hit, value in zip(hits, values)])
    return out


def above(hits: list, min_relevance: float) -> list:
    """The hits whose relevance reaches `min_relevance` (all of them at 0)."""
    if min_relevance <= 0:
        return hits
    return [hit for hit in hits if hit.relevance is not None and hit.relevance >= min_relevance]


# --- fitting (tools/bundled/calibrate.py, `mmsearch calibrate`) ---------------------------------
def fit_logistic(scores: np.ndarray, z: np.ndarray, labels: np.ndarray, l2: float = 1e-3,
                 iterations: int = 50) -> LogisticMap:
    """Logistic regression on (cosine, z) by Newton's method (a small L2 keeps it finite on separable data)."""
    features = np.column_stack([np.asarray(scores, np.float64), np.asarray(z, np.float64), np.ones(len(labels))])
    labels = np.asarray(labels, np.float64)
    weights = np.zeros(3)
    penalty = l2 * np.diag([1.0, 1.0, 0.0]) * len(labels)
    for _ in range(iterations):
        p = sigmoid(features @ weights)
        gradient = features.T @ (p - labels) + penalty @ weights
        hessian = (features * (p * (1 - p))[:, None]).T @ features + penalty + 1e-9 * np.eye(3)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-8:
            break
    return LogisticMap(float(weights[0]), float(weights[1]), float(weights[2]))


def expected_calibration_error(predicted: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE: the share-weighted gap between mean predicted relevance and the share that matched, per bin."""
    predicted, labels = np.asarray(predicted, np.float64), np.asarray(labels, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(predicted, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for index in range(bins):
        chosen = which == index
        if chosen.any():
            total += chosen.mean() * abs(predicted[chosen].mean() - labels[chosen].mean())
    return float(total)


def reliability_table(predicted: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    """Per bin: its range, how many results, their mean relevance, the share that matched."""
    predicted, labels = np.asarray(predicted, np.float64), np.asarray(labels, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(predicted, edges[1:-1]), 0, bins - 1)
    rows = []
    for index in range(bins):
        chosen = which == index
        rows.append({"low": float(edges[index]), "high": float(edges[index + 1]), "count": int(chosen.sum()),
                     "mean_relevance": float(predicted[chosen].mean()) if chosen.any() else None,
                     "matched": float(labels[chosen].mean()) if chosen.any() else None})
    return rows
