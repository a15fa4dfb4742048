"""The towers being fine-tuned: built from a model card, locked as asked, with a cached frozen text trunk.

A locked text tower is split into a frozen *trunk* and a trainable *head*: for an open_clip
HuggingFace text tower the trunk is the transformer plus pooler and the head its projection; a
locked open_clip text transformer is all trunk. The trunk's output never changes, so it is
computed once per distinct caption (`TextSide`) instead of once per step.
"""
from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.finetune.errors import TrainingError
from retrieval.finetune.loss import CLIP_INIT_SCALE, ContrastiveLoss
from retrieval.models.registry import ModelCard
from retrieval.models.towers import IMAGE, TEXT, build_tokenizer, build_tower, load_tower

log = logging.getLogger(__name__)

OPEN_CLIP_SCALE = 100.0  # what CLIP-style pretrained models end training at
TEXT_BATCH = 256


def is_hf_text(tower: nn.Module) -> bool:
    from open_clip.hf_model import HFTextEncoder

    return isinstance(tower, HFTextEncoder)


def initial_logit_scale(card: ModelCard) -> float:
    """The base's own scale where its manifest records one; 100 for open_clip weights; CLIP's 1/0.07 else."""
    recorded = card.manifest.get("logit_scale")
    if recorded:
        return float(recorded)
    return OPEN_CLIP_SCALE if card.spec.source == "open_clip" else CLIP_INIT_SCALE


def _quietly(call, *args, **kwargs):
    """open_clip's HF lock prints a line; keep library output in the log instead."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = call(*args, **kwargs)
    if buffer.getvalue().strip():
        log.info(buffer.getvalue().strip())
    return result


class TrainableModel:
    """Image tower, text tower, tokenizer and loss (with its temperature) of one fine-tune."""

    def __init__(self, card: ModelCard, *, lock_image: bool = False, unlocked_image_groups: int = 0,
                 lock_text: bool = False, unlocked_text_layers: int = 0, device: str = "cpu"):
        self.card = card
        self.device = device
        # A config's random weights apply to what it builds from scratch; a packaged pretrained
        # HF text model (package:...) starts from its pretrained weights.
        text_cfg = card.model_cfg["text_cfg"]
        hf_text = bool(text_cfg.get("hf_model_name"))
        if card.spec.source == "config":
            self.visual = build_tower(card, IMAGE)
            self.text = build_tower(card, TEXT, hf_pretrained=hf_text)
            self.text_from_package = hf_text
        else:
            self.visual = load_tower(card, IMAGE)
            self.text = load_tower(card, TEXT)
            self.text_from_package = hf_text and card.manifest.get("text_weights") == "delta"
        self.tokenizer = build_tokenizer(card)
        self.loss = ContrastiveLoss(initial_logit_scale(card))
        self.image_locked = bool(lock_image or unlocked_image_groups)
        self.text_locked = bool(lock_text or unlocked_text_layers)
        if self.image_locked:
            self._lock(self.visual, "image", unlocked_groups=unlocked_image_groups, freeze_bn_stats=True)
        if self.text_locked:
            self._lock(self.text, "text", unlocked_layers=unlocked_text_layers, freeze_layer_norm=True)
        self.image_frozen = not any(p.requires_grad for p in self.visual.parameters())
        self.text_frozen = not any(p.requires_grad for p in self.text.parameters())
        self.trunk_frozen = self.text_locked and unlocked_text_layers == 0 and (
            self.text_frozen or (is_hf_text(self.text)
                                 and not any(p.requires_grad for p in self.text.transformer.parameters())))
        if self.image_frozen and self.text_frozen:
            raise TrainingError("both towers are locked: nothing left to train but the temperature "
                                "(drop --lock-image or --lock-text, or unlock some layers)")
        self.visual.to(device)
        self.text.to(device)
        self.loss.to(device)
        # Convolutional towers (ModifiedResNet) run ~1.3x faster on CPU in channels-last layout.
        self.channels_last = sum(isinstance(m, nn.Conv2d) for m in self.visual.modules()) > 1
        if self.channels_last:
            self.visual.to(memory_format=torch.channels_last)

    @staticmethod
    def _lock(tower: nn.Module, which: str, **kwargs) -> None:
        if not hasattr(tower, "lock"):
            raise TrainingError(f"this model's {which} tower cannot be locked")
        try:
            _quietly(tower.lock, **kwargs)
        except (AssertionError, NotImplementedError, TypeError) as exc:
            raise TrainingError(f"this model's {which} tower cannot be partly unlocked ({exc or 'unsupported'}); "
                                f"lock it whole or not at all") from None

    @property
    def text_delta(self) -> bool:
        """Save the text tower as a delta: only the head, the trunk reloads from its package."""
        return self.trunk_frozen and self.text_from_package and is_hf_text(self.text)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: no decay for gains, biases, embeddings and the temperature (open_clip's rule)."""
        decay, no_decay = [], []
        named = [*self.visual.named_parameters(), *self.text.named_parameters()]
        for name, param in named:
            if not param.requires_grad:
                continue
            if param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "embedding" in name \
                    or "norm" in name.lower():
                no_decay.append(param)
            else:
                decay.append(param)
        no_decay.append(self.loss.log_scale)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def train_mode(self) -> None:
        """Train mode except for what is frozen (no dropout or batch-norm updates in fixed parts)."""
        self.visual.train(not self.image_frozen)
        self.text.train(not self.text_locked)

    def eval_mode(self) -> None:
        self.visual.eval()
        self.text.eval()

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, non_blocking=True)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return F.normalize(self.visual(pixels), dim=-1)

    # ---- weights: the trained part (resume) and the export (model folder)

    def trained_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """What training can change: the whole image tower, the text head or tower, the temperature."""
        return {
            "visual": {k: v.detach().cpu().clone() for k, v in self.visual.state_dict().items()},
            "text": {k: v.detach().cpu().clone() for k, v in self._text_trained_state().items()},
            "loss": {"log_scale": self.loss.log_scale.detach().cpu().clone()},
        }

    def load_trained_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        self.visual.load_state_dict(state["visual"], strict=True)
        result = self.text.load_state_dict(state["text"], strict=not self.trunk_frozen)
        if result.unexpected_keys:
            raise TrainingError(f"saved text weights do not fit this model: {result.unexpected_keys[:3]}")
        with torch.no_grad():
            self.loss.log_scale.copy_(state["loss"]["log_scale"])

    def export_states(self) -> tuple[dict, dict, str]:
        """(image state, text state, "full" | "delta") for `save_model_folder`."""
        if self.text_delta:
            return self.visual.state_dict(), self._text_trained_state(), "delta"
        return self.visual.state_dict(), self.text.state_dict(), "full"

    def _text_trained_state(self) -> dict[str, torch.Tensor]:
        state = self.text.state_dict()
        if not self.trunk_frozen:
            return state
        if is_hf_text(self.text):
            return {k: v for k, v in state.items() if not k.startswith("transformer.")}
        return {}

    def describe_tokenizer(self) -> dict:
        text_cfg = self.card.model_cfg["text_cfg"]
        if text_cfg.get("hf_tokenizer_name"):
            return {"kind": "huggingface", "name": text_cfg["hf_tokenizer_name"],
                    "context_length": int(text_cfg.get("context_length", 77))}
        return {"kind": "open_clip", "context_length": int(text_cfg.get("context_length", 77))}


class TextSide:
    """Captions of one pairs index -> text features, caching the frozen trunk's output when allowed."""

    def __init__(self, model: TrainableModel, captions: Sequence[str], cache: bool = True):
        self.model = model
        self.captions = list(captions)
        self.slot = {caption: i for i, caption in enumerate(self.captions)}
        self.tokens = torch.cat([model.tokenizer(self.captions[i:i + TEXT_BATCH])
                                 for i in range(0, len(self.captions), TEXT_BATCH)]) if self.captions else None
        self.cached: torch.Tensor | None = None
        if cache and model.trunk_frozen and self.captions:
            self.cached = self._trunk_all()

    @property
    def uses_cache(self) -> bool:
        return self.cached is not None

    def _trunk(self, tokens: torch.Tensor) -> torch.Tensor:
        tower = self.model.text
        if is_hf_text(tower) and not self.model.text_frozen:
            mask = (tokens != tower.config.pad_token_id).long()
            return tower.pooler(tower.transformer(input_ids=tokens, attention_mask=mask), mask)
        return tower(tokens)

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        tower = self.model.text
        if is_hf_text(tower) and not self.model.text_frozen:
            return tower.proj(features)
        return features

    @torch.no_grad()
    def _trunk_all(self) -> torch.Tensor:
        """Trunk features of every caption, computed once.

        A HuggingFace trunk masks padding out of attention and pooling, so captions go in order of
        length and each batch is cut after its longest caption: the same features for a fraction
        of the compute on short captions.
        """
        tower = self.model.text
        was_training = tower.training
        tower.eval()
        hf = is_hf_text(tower)
        if hf:
            lengths = (self.tokens != tower.config.pad_token_id).sum(dim=1)
            order = torch.argsort(lengths, stable=True)
        else:
            order = torch.arange(len(self.tokens))
        features = None
        for start in range(0, len(order), TEXT_BATCH):
            ids = order[start:start + TEXT_BATCH]
            tokens = self.tokens[ids]
            if hf:
                tokens = tokens[:, :max(1, int(lengths[ids].max()))]
            chunk = self._trunk(tokens.to(self.model.device)).float()
            if features is None:
                features = torch.empty((len(order), chunk.shape[1]), dtype=torch.float32, device=chunk.device)
            features[ids.to(chunk.device)] = chunk
        tower.train(was_training)
        return features

    def features(self, caption_ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Normalised text features for captions by id; gradients reach whatever is trainable."""
        ids = torch.as_tensor(np.asarray(caption_ids), dtype=torch.long)
        if self.cached is not None:
            return F.normalize(self._head(self.cached[ids.to(self.cached.device)]), dim=-1)
        return F.normalize(self.model.text(self.tokens[ids].to(self.model.device)), dim=-1)

    def embed(self, captions: Sequence[str]) -> np.ndarray:
        """Unit vectors for captions of this side (no gradients), for evaluation."""
        ids = [self.slot[caption] for caption in captions]
        with torch.no_grad():
            return self.features(np.asarray(ids)).float().cpu().numpy()
