"""Contrastive loss: open_clip's ClipLoss (symmetric InfoNCE) with a learnable temperature."""
from __future__ import annotations

import math

import torch
from torch import nn

CLIP_INIT_SCALE = 1 / 0.07  # CLIP's starting temperature for towers trained from scratch
MAX_SCALE = 100.0  # CLIP's clamp


class ContrastiveLoss(nn.Module):
    """loss(image_features, text_features): row i of each is a matching pair, every other row a negative.

    Features must be L2-normalised. The logit scale (1 / temperature) is learnt as its log and
    clamped to [1, 100] after each optimiser step, as CLIP does.
    """

    def __init__(self, init_scale: float = CLIP_INIT_SCALE, max_scale: float = MAX_SCALE):
        super().__init__()
        from open_clip.loss import ClipLoss

        self.log_scale = nn.Parameter(torch.tensor(math.log(min(max(init_scale, 1.0), max_scale))))
        self.max_log_scale = math.log(max_scale)
        self.clip_loss = ClipLoss()

    @property
    def scale(self) -> float:
        return float(self.log_scale.detach().exp())

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                detach_scale: bool = False) -> torch.Tensor:
        """`detach_scale` leaves the temperature out of this backward (used by gradient accumulation)."""
        log_scale = self.log_scale.detach() if detach_scale else self.log_scale
        return self.clip_loss(image_features.float(), text_features.float(), log_scale.exp())

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_scale.clamp_(0.0, self.max_log_scale)
