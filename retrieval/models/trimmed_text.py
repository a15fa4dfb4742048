"""Run a text tower on only as many tokens as the batch uses, with the same vectors as at full length.

A tokenizer pads every text to the context length (77 for CLIP), but a query like "a cat" holds 4
real tokens. Cutting the padding off changes nothing the tower returns when the pads cannot reach
the pooled vector:
- CLIP (`open_clip.transformer.TextTransformer`): the attention mask is causal, so a token never
  sees the pads that follow it, and the vector is read at the end-of-text token (argmax / eos) or
  the first one; both lie within the real tokens. The positional embedding and the causal mask
  are sliced to the length.
- Hugging Face towers (`open_clip.hf_model.HFTextEncoder`): pads are masked out of attention and
  out of the mean (or the vector is the first token), so cutting them off changes nothing either.

Trimmed and full-length vectors agree to float rounding (checked in tests/test_trimmed_text.py,
and for every ONNX export by `retrieval.models.onnx_text`). Towers that do not fit either pattern (a
class token appended at the end, bidirectional attention over pads, 'last' pooling) are left
alone: `trimmable_tower` returns None for them.

open_clip's own forward cannot run at a shorter length (its causal mask buffer is 77x77), and
`nn.MultiheadAttention` traced to ONNX bakes the sequence length into its reshapes; the wrapper
here writes the attention out with `-1` shapes so one export serves every length.
"""
from __future__ import annotations

import math

import torch
from torch import nn

TRIM_POOLS = ("argmax", "eos", "first")
HF_TRIM_POOLERS = ("MeanPooler", "ClsPooler", "ClsLastHiddenStatePooler")


def _attention(block_attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`nn.MultiheadAttention(x, x, x)` (batch first, no dropout) written with shape-free reshapes."""
    width, heads = block_attn.embed_dim, block_attn.num_heads
    head_dim = width // heads
    q, k, v = nn.functional.linear(x, block_attn.in_proj_weight, block_attn.in_proj_bias).chunk(3, dim=-1)
    batch = x.shape[0]
    q = q.reshape(batch, -1, heads, head_dim).transpose(1, 2) * (1.0 / math.sqrt(head_dim))
    k = k.reshape(batch, -1, heads, head_dim).transpose(1, 2)
    v = v.reshape(batch, -1, heads, head_dim).transpose(1, 2)
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    out = torch.softmax(scores, dim=-1) @ v
    return block_attn.out_proj(out.transpose(1, 2).reshape(batch, -1, width))


def _plain_block(block: nn.Module) -> bool:
    from open_clip.transformer import ResidualAttentionBlock

    attn = getattr(block, "attn", None)
    return (type(block) is ResidualAttentionBlock and isinstance(attn, nn.MultiheadAttention)
            and attn.batch_first and attn._qkv_same_embed_dim and attn.in_proj_bias is not None
            and attn.bias_k is None and not attn.add_zero_attn and not hasattr(block, "ln_1_kv"))


class TrimmedClipText(nn.Module):
    """open_clip's `TextTransformer.forward` for tokens of any length up to the context length."""

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower
        self.plain_blocks = all(_plain_block(block) for block in tower.transformer.resblocks)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        from open_clip.transformer import text_global_pool

        tower = self.tower
        length = tokens.shape[1]
        cast_dtype = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(tokens).to(cast_dtype) + tower.positional_embedding[:length].to(cast_dtype)
        mask = tower.attn_mask[:length, :length].to(x.dtype)
        if self.plain_blocks and tower.transformer.batch_first:
            for block in tower.transformer.resblocks:
                x = x + block.ls_1(_attention(block.attn, block.ln_1(x), mask))
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
        else:
            x = tower.transformer(x, attn_mask=mask)
        x = tower.ln_final(x)
        pooled = text_global_pool(x, tokens, pool_type=tower.pool_type, eos_token_id=getattr(tower, "eos_id", None))
        projection = tower.text_projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection


def pad_id(tower: nn.Module) -> int:
    """The token id the tower treats as padding (CLIP: 0; Hugging Face: the config's pad token)."""
    config = getattr(tower, "config", None)
    if config is not None:
        return int(getattr(config, "pad_token_id", 0) or 0)
    return int(getattr(tower, "pad_id", 0) or 0)


def trimmable_tower(tower: nn.Module) -> nn.Module | None:
    """A module equal to `tower` at full length that also accepts trimmed tokens, or None.

    None means trimming would change the vectors (or we cannot tell): run the tower at full length.
    """
    from open_clip.hf_model import HFTextEncoder
    from open_clip.transformer import TextTransformer

    if isinstance(tower, TextTransformer):
        causal = getattr(tower, "attn_mask", None) is not None
        if causal and tower.cls_emb is None and tower.pool_type in TRIM_POOLS and not tower.output_tokens:
            return TrimmedClipText(tower)
        return None
    if isinstance(tower, HFTextEncoder):
        if type(tower.pooler).__name__ in HF_TRIM_POOLERS and not tower.output_tokens:
            return tower  # pads masked out of attention and pooling: its own forward takes any length
        return None
    return None
