"""Settings left to "auto" (None) in a TrainConfig, chosen from the base model and the number of pairs.

One set of numbers cannot suit every base: a large pretrained open_clip model wants a learning rate
near 1e-5 (more undoes what it learnt), while the bundled model's small image tower, trained from
scratch by mmsearch at 2e-3, barely moves at 1e-5 (issue 20: R@10 on a new icon domain went from
0.04 to only 0.08). So the base's *profile* decides:

- ``pretrained``: open_clip weights (and fine-tunes of them): lr 1e-5, no augmentation, 5 epochs
  (the settings before issue 20; not re-measured here, as no such weights are at hand offline).
- ``small``: a model trained from scratch by mmsearch, like the bundled one (and fine-tunes of it):
  lr 1e-3, no augmentation, and epochs from the set's size so a few thousand pairs get ~20 passes
  in minutes on a CPU. Measured on icon sets (docs/BENCHMARKS.md, "Fine-tuning the bundled model on
  a new domain"): lr 1e-5 is what held it back; 2e-3 is no better than 1e-3; augmentation, batches of
  128 and more epochs change held-out recall by less than its noise; a frozen projection costs a lot.
- ``scratch``: an architecture config with random weights: lr 1e-3, augmentation on (as the bundled
  model's recipe trains), epochs as ``small``.

Whatever the profile, a packaged pretrained text trunk (the bundled model's MiniLM) stays locked and
its features are cached: only its projection trains, which is both what generalises to captions
never seen in training and ~20x faster per step. A model folder records the profile its fine-tunes
should use (`PROFILE_KEY` in its manifest), so a fine-tune of a fine-tune keeps its base's rule.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from retrieval.models.registry import PACKAGE_PREFIX, ModelCard

log = logging.getLogger(__name__)

PROFILE_KEY = "finetune_profile"
PRETRAINED, SMALL, SCRATCH = "pretrained", "small", "scratch"


@dataclass(frozen=True)
class Profile:
    name: str
    lr: float
    augment: bool
    epochs: int | None  # fixed, or None: from the number of training pairs (`epochs_for`)


PROFILES = {
    PRETRAINED: Profile(PRETRAINED, lr=1e-5, augment=False, epochs=5),
    SMALL: Profile(SMALL, lr=1e-3, augment=False, epochs=None),
    SCRATCH: Profile(SCRATCH, lr=1e-3, augment=True, epochs=None),
}
PAIR_PASSES = 40_000  # pairs seen in a run sized by the set: ~22 epochs of 1,800 pairs
MIN_EPOCHS, MAX_EPOCHS = 5, 30


def profile_of(card: ModelCard) -> str:
    """The base's profile: from the source, else what its manifest records, else its training lineage."""
    if card.spec.source == "open_clip":
        return PRETRAINED
    if card.spec.source == "config":
        return SCRATCH
    recorded = card.manifest.get(PROFILE_KEY)
    if recorded in PROFILES:
        return recorded
    training = card.manifest.get("training") or {}
    trained_from = str(training.get("base") or (training.get("settings") or {}).get("base_name") or "")
    if trained_from.endswith(".json"):  # trained from a config, i.e. from scratch (the bundled model)
        return SMALL
    return PRETRAINED  # the cautious choice for a folder of unknown lineage


def profile_after(profile: str) -> str:
    """The profile a model trained from a base of `profile` hands on to its own fine-tunes."""
    return SMALL if profile == SCRATCH else profile


def has_packaged_text_trunk(card: ModelCard) -> bool:
    """A pretrained HuggingFace text model from a package (the bundled model's MiniLM), not trained here."""
    return str(card.model_cfg.get("text_cfg", {}).get("hf_model_name") or "").startswith(PACKAGE_PREFIX)


def epochs_for(train_pairs: int) -> int:
    return max(MIN_EPOCHS, min(MAX_EPOCHS, round(PAIR_PASSES / max(1, train_pairs))))


def resolve(config, card: ModelCard, train_pairs: int):
    """`config` (a TrainConfig) with every None setting replaced by the profile's; returns (config, profile)."""
    profile = PROFILES[profile_of(card)]
    chosen = {}
    if config.lr is None:
        chosen["lr"] = profile.lr
    if config.augment is None:
        chosen["augment"] = profile.augment
    if config.lock_text is None:
        chosen["lock_text"] = has_packaged_text_trunk(card)
    if config.epochs is None:
        chosen["epochs"] = profile.epochs or epochs_for(train_pairs)
    if chosen:
        log.info("fine-tune settings for a %s base: %s", profile.name, chosen)
    return replace(config, **chosen), profile.name


def describe(config, profile: str) -> str:
    """One line naming the settings a run uses, for its plan message."""
    text = "text trunk locked" if config.lock_text else "text tower trained"
    return (f"{profile} base: lr {config.lr:g}, {config.epochs} epochs, augmentation "
            f"{'on' if config.augment else 'off'}, {text}")
