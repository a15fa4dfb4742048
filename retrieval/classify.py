"""Zero-shot classification: which of a list of labels best describes an image.

Each label becomes several prompts ("a photo of a {}.", "an emoji of a {}.", ...); their text
embeddings are averaged and renormalised into one vector per label (CLIP's prompt ensembling).
Image-label cosine similarities times the model's logit scale (its manifest's `logit_scale`, else
100 as for CLIP) go through a softmax over all labels, so the probabilities sum to 1.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.errors import MmsearchError

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an emoji of a {}.",
    "a drawing of a {}.",
    "an icon of a {}.",
)
DEFAULT_LOGIT_SCALE = 100.0


class LabelError(MmsearchError):
    """No usable labels, or a prompt template without a `{}` slot."""


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float
    similarity: float  # cosine similarity of image and label embedding

    def to_dict(self) -> dict:
        return {"label": self.label, "probability": self.probability, "similarity": self.similarity}


@dataclass(frozen=True)
class Classification:
    image: str
    labels: tuple[LabelScore, ...]  # most probable first; `top` of them

    def to_dict(self) -> dict:
        return {"image": self.image, "labels": [score.to_dict() for score in self.labels]}


def parse_labels(text: str | None = None, lines: Iterable[str] = ()) -> list[str]:
    """Comma-separated labels plus one label per line (blank lines and `#` comments ignored), deduplicated."""
    labels = [part.strip() for part in (text or "").split(",")]
    labels += [line.strip() for line in lines if not line.strip().startswith("#")]
    labels = list(dict.fromkeys(label for label in labels if label))
    if not labels:
        raise LabelError("no labels given: use --labels \"cat,dog,car\" or --labels-file FILE")
    return labels


def read_labels_file(path: Path) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read labels file {path}: {exc}") from None


def logit_scale_of(model) -> float:
    scale = model.card.manifest.get("logit_scale")
    return float(scale) if scale else DEFAULT_LOGIT_SCALE


def label_embeddings(model, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
    """One unit vector per label: the renormalised mean of its prompts' text embeddings."""
    bad = [template for template in templates if "{}" not in template]
    if not templates or bad:
        raise LabelError(f"a prompt template needs a {{}} where the label goes, e.g. \"a photo of a {{}}.\"; got {bad}")
    prompts = [template.format(label) for label in labels for template in templates]
    vectors = model.text.embed_texts(prompts).reshape(len(labels), len(templates), -1).mean(axis=1)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def classify_vectors(image_vectors: np.ndarray, label_vectors: np.ndarray, labels: Sequence[str],
                     names: Sequence[str], top: int, logit_scale: float) -> list[Classification]:
    """Softmax over all labels of scaled similarities; keeps the `top` most probable per image."""
    similarities = np.asarray(image_vectors, dtype=np.float64) @ np.asarray(label_vectors, dtype=np.float64).T
    logits = logit_scale * similarities
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    results = []
    for name, probs, sims in zip(names, probabilities, similarities):
        order = np.argsort(-probs, kind="stable")[:max(1, top)]
        results.append(Classification(name, tuple(
            LabelScore(labels[i], float(probs[i]), float(sims[i])) for i in order)))
    return results


def classify_images(model, images: Sequence, labels: Sequence[str], *, names: Sequence[str] | None = None,
                    templates: Sequence[str] = DEFAULT_TEMPLATES, top: int = 5,
                    logit_scale: float | None = None) -> list[Classification]:
    """PIL images -> their `top` labels with probabilities (over all labels, summing to 1)."""
    label_vectors = label_embeddings(model, labels, templates)
    image_vectors = model.image.embed_images(list(images))
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    return classify_vectors(image_vectors, label_vectors, labels, names, top,
                            logit_scale_of(model) if logit_scale is None else logit_scale)


def classify_files(model, paths: Sequence[str], labels: Sequence[str], *,
                   templates: Sequence[str] = DEFAULT_TEMPLATES, top: int = 5, logit_scale: float | None = None,
                   batch_size: int = 64, on_error: Callable[[str, str], None] | None = None) -> list[Classification]:
    """Image files -> classifications; a file that cannot be decoded costs itself (reported to `on_error`)."""
    from indexer.errors import DecodeError
    from indexer.media.files import read_file
    from indexer.media.image import decode_image

    label_vectors = label_embeddings(model, labels, templates)
    scale = logit_scale_of(model) if logit_scale is None else logit_scale
    results: list[Classification] = []
    for start in range(0, len(paths), batch_size):
        names, pixels = [], []
        for path in paths[start:start + batch_size]:
            try:
                pixels.append(decode_image(read_file(path), model.preprocess).pixels)
            except DecodeError as exc:
                log.info("skipping %s: %s", path, exc)
                if on_error is not None:
                    on_error(path, str(exc))
                continue
            names.append(path)
        if names:
            image_vectors = model.image.embed_pixels(np.stack(pixels))
            results += classify_vectors(image_vectors, label_vectors, labels, names, top, scale)
    return results
