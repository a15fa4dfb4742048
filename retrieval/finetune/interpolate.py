"""WiSE-FT: weights part way between the starting model and the fine-tuned one, kept when they validate better.

Wortsman et al. (WiSE-FT) interpolate every weight, theta = (1 - alpha) * start + alpha * tuned, and
find mixes that keep more of what the starting model knew at little or no cost on the new data. After
training, `choose_mix` scores a few alphas on the validation pairs (alpha 1 is the fine-tuned model,
already scored) and returns the best; ties go to the larger alpha, so a mix is kept only when it
is better.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from retrieval.finetune.evaluate import RetrievalMetrics

log = logging.getLogger(__name__)

ALPHAS = (0.75, 0.5)  # tried besides 1.0 (the fine-tuned weights)

State = dict[str, dict[str, torch.Tensor]]  # TrainableModel.trained_state(): part -> name -> tensor


@dataclass(frozen=True)
class Mix:
    alpha: float  # 1.0: the fine-tuned weights as trained
    state: State
    metrics: RetrievalMetrics
    tried: tuple[tuple[float, RetrievalMetrics], ...]  # every alpha scored, 1.0 first


def interpolate_states(start: State, tuned: State, alpha: float) -> State:
    """(1 - alpha) * start + alpha * tuned for floating tensors; other tensors (counters) from `tuned`."""
    mixed: State = {}
    for part, tensors in tuned.items():
        begin = start[part]
        if begin.keys() != tensors.keys():
            raise ValueError(f"the {part} weights to interpolate have different names")
        mixed[part] = {
            name: torch.lerp(begin[name].to(value.dtype), value, alpha) if value.is_floating_point() else value.clone()
            for name, value in tensors.items()
        }
    return mixed


def choose_mix(start: State, tuned: State, tuned_metrics: RetrievalMetrics,
               evaluate: Callable[[State], RetrievalMetrics], alphas: Sequence[float] = ALPHAS) -> Mix:
    """The best of the fine-tuned weights and their mixes with the start, by validation mean recall."""
    best = Mix(1.0, tuned, tuned_metrics, ())
    tried = [(1.0, tuned_metrics)]
    for alpha in sorted(alphas, reverse=True):
        state = interpolate_states(start, tuned, alpha)
        metrics = evaluate(state)
        tried.append((alpha, metrics))
        log.info("WiSE-FT alpha %.2f: mean recall %.4f", alpha, metrics.mean_recall)
        if metrics.mean_recall > best.metrics.mean_recall:
            best = Mix(alpha, state, metrics, ())
    return Mix(best.alpha, best.state, best.metrics, tuple(tried))
