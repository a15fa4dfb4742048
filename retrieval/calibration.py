"""An index's own relevance calibration, fitted on the user's (image, caption) pairs: `mmsearch calibrate`.

For a model that ships none (an open_clip model not calibrated where its weights were, a fine-tuned
folder), or a collection unlike the one its calibration was fitted on. Each distinct caption of the
pairs whose image is in the index is a text query twice:
- as it is: its top `top` hits, a hit matching when it is one of the caption's images;
- as a query for something the collection lacks: the same ranking with the caption's images taken
  out, every hit a miss (without these the fit would only know queries that have an answer).
The features are those search uses (cosine, and z against the collection sample: relevance.py), the
map a logistic (`fit_logistic`). Its expected calibration error is measured by FOLDS-fold over the
captions: no caption is scored by a map fitted on it. The text map is stored in the index
(INDEX_CALIBRATION_KEY) and wins over the model's; picture queries keep the model's map (or the
label-free estimate): captions say nothing about them.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from indexer.errors import MmsearchError
from indexer.store.library import Library
from retrieval.query.relevance import (
    INDEX_CALIBRATION_KEY,
    TEXT,
    Calibration,
    LogisticMap,
    collection_sample,
    collection_size,
    expected_calibration_error,
    fit_logistic,
    label_free_relevance,
    model_calibration,
    query_stats,
    z_scores,
)

log = logging.getLogger(__name__)

TOP = 20
FOLDS = 5
MIN_CAPTIONS = 20  # fewer cannot fit two weights and a bias with any confidence
MIN_MATCHES = 5  # matching hits the fit needs


class CalibrationError(MmsearchError):
    """Pairs that cannot fit a calibration (too few in the index, no matches found)."""


@dataclass(frozen=True)
class CalibrateRequest:
    db: Path
    pairs: Path
    top: int = TOP
    image_column: str | None = None
    caption_column: str | None = None
    device: str = "cpu"


@dataclass
class Features:
    scores: np.ndarray
    z: np.ndarray
    labels: np.ndarray
    caption: np.ndarray  # which caption each row belongs to (for the folds)
    present: np.ndarray  # whether the row's query had its images left in


@dataclass
class CalibrateOutcome:
    calibration: Calibration
    captions: int  # distinct captions used
    pairs_not_indexed: int  # pairs whose image the index does not hold (left out)
    found_in_top: float  # share of captions with one of their images in their top hits
    hits: int  # rows fitted on (both kinds of query)
    ece_cross_validated: float
    ece_label_free: float  # the label-free estimate's on the same rows, for comparison
    skipped: list = field(default_factory=list)  # rows of the pairs file that could not be read


def caption_items(pairs, indexed: dict[str, int]) -> tuple[dict[str, set[int]], int]:
    """Distinct caption -> the ids of its images the index holds; and how many pairs were not indexed."""
    out: dict[str, set[int]] = {}
    missing = 0
    for pair in pairs:
        item_id = indexed.get(str(pair.image), indexed.get(os.path.realpath(pair.image)))
        if item_id is None:
            missing += 1
            continue
        out.setdefault(pair.caption.strip(), set()).add(item_id)
    return out, missing


def query_features(library: Library, model, captions: dict[str, set[int]], top: int = TOP) -> Features:
    """Each caption's top hits as it is and with its images taken out, with their features and labels."""
    from retrieval.query.search import rank

    texts = list(captions)
    info = library.model()
    encoders = library.encoders_sharing(info)
    vectors = np.atleast_2d(model.text.embed_texts(texts)).astype(np.float32)
    deepest = max(len(items) for items in captions.values())
    ranked = rank(library, vectors, top + deepest)
    stats = query_stats(collection_sample(library, info.dim, encoders), vectors, collection_size(library, encoders))
    rows: dict[str, list] = {"scores": [], "z": [], "labels": [], "caption": [], "present": []}
    for row, (text, hits) in enumerate(zip(texts, ranked)):
        wanted = captions[text]
        for present, chosen in ((True, hits[:top]), (False, [hit for hit in hits if hit.item_id not in wanted][:top])):
            if not chosen:
                continue
            scores = np.array([hit.score for hit in chosen])
            rows["scores"].append(scores)
            rows["z"].append(z_scores(scores, float(stats.mean[row]), float(stats.std[row])))
            rows["labels"].append(np.array([present and hit.item_id in wanted for hit in chosen]))
            rows["caption"].append(np.full(len(chosen), row))
            rows["present"].append(np.full(len(chosen), present))
    return Features(*(np.concatenate(rows[key]) for key in ("scores", "z", "labels", "caption", "present")))


def cross_validated(features: Features, folds: int = FOLDS) -> np.ndarray:
    """Each row's relevance from a map fitted on the other folds' captions."""
    predicted = np.zeros(len(features.labels))
    fold = features.caption % folds
    for index in range(folds):
        held = fold == index
        if not held.any() or held.all():
            continue
        fitted = fit_logistic(features.scores[~held], features.z[~held], features.labels[~held])
        predicted[held] = fitted(features.scores[held], features.z[held])
    return predicted


def fit_text_map(features: Features) -> LogisticMap:
    return fit_logistic(features.scores, features.z, features.labels)


def calibrate_index(request: CalibrateRequest, on_skip: Callable[[object], None] | None = None) -> CalibrateOutcome:
    """Fit the index's text calibration on `request.pairs` and store it in the index."""
    from retrieval.finetune.pairs import read_pairs
    from retrieval.index_model import search_model

    pairs_file = read_pairs(request.pairs, image_column=request.image_column, caption_column=request.caption_column,
                            on_skip=on_skip)
    with Library(request.db, create=False) as library:
        info = library.model()
        if info is None:
            raise CalibrationError(f"{request.db} holds nothing yet: index the pictures of the pairs first")
        paths = [str(pair.image) for pair in pairs_file.pairs] + [os.path.realpath(pair.image) for pair in pairs_file.pairs]
        captions, missing = caption_items(pairs_file.pairs, library.reads.item_ids_by_path(paths))
        if len(captions) < MIN_CAPTIONS:
            raise CalibrationError(f"{len(captions)} distinct captions have their picture in the index; at least "
                                   f"{MIN_CAPTIONS} are needed ({missing} pairs' pictures are not indexed: "
                                   f"`mmsearch index` their folder first)")
        model = search_model(library, device=request.device)
        features = query_features(library, model, captions, request.top)
        if features.labels.sum() < MIN_MATCHES:
            raise CalibrationError(f"the model found only {int(features.labels.sum())} of the captions' pictures "
                                   f"in their top {request.top}: too few to fit on")
        fitted = fit_text_map(features)
        predicted = cross_validated(features)
        ece = expected_calibration_error(predicted, features.labels)
        label_free = expected_calibration_error(label_free_relevance(features.z, collection_size(
            library, library.encoders_sharing(info))), features.labels)
        found = float(np.mean([features.labels[(features.caption == row) & features.present].any()
                               for row in range(len(captions))]))
        shipped = model_calibration(info)
        calibration = Calibration(
            text=fitted, image=shipped.image if shipped is not None else None,
            source=f"fitted on {len(captions)} captions of {Path(request.pairs).name} (mmsearch calibrate)",
            fitted_on={TEXT: {"captions": len(captions), "hits": int(len(features.labels)),
                              "matching_hits": int(features.labels.sum()),
                              "ece_cross_validated": round(ece, 4), "top": request.top}})
        library.set_info(INDEX_CALIBRATION_KEY, json.dumps({**calibration.to_dict(), "fingerprint": info.fingerprint}))
    log.info("stored a relevance calibration fitted on %d captions (cross-validated ECE %.4f)", len(captions), ece)
    return CalibrateOutcome(calibration, len(captions), missing, found, int(len(features.labels)), ece, label_free,
                            list(pairs_file.skipped))


def clear_index_calibration(db: Path) -> bool:
    """Forget the index's own calibration (search goes back to the model's); whether there was one."""
    with Library(db, create=False) as library:
        had = bool(library.get_info(INDEX_CALIBRATION_KEY))
        if had:
            library.set_info(INDEX_CALIBRATION_KEY, "")
    return had
