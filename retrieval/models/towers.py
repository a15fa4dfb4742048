"""Build one tower (image or text) of a model, with its weights, and the tokenizer.

A text query builds only the text tower and reads only its weights; an index run only the image
tower. open_clip is imported here, lazily, because importing it costs seconds.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from torch import nn

from retrieval.errors import ModelNotFoundError
from retrieval.models.registry import ModelCard, resolve_package_path
from retrieval.models.seeded import seeded

log = logging.getLogger(__name__)

IMAGE = "image"
TEXT = "text"
_PREFIX = {IMAGE: "visual.", TEXT: "text."}


def text_cfg_for_build(card: ModelCard, *, hf_pretrained: bool) -> dict:
    """The text config with package references turned into local folders."""
    text_cfg = dict(card.model_cfg["text_cfg"])
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if text_cfg.get(key):
            text_cfg[key] = resolve_package_path(text_cfg[key])
    if text_cfg.get("hf_model_name"):
        text_cfg["hf_model_pretrained"] = hf_pretrained
    return text_cfg


def build_tower(card: ModelCard, which: str, *, hf_pretrained: bool = False, weights_follow: bool = False) -> nn.Module:
    """A freshly initialised (seeded) tower of the card's architecture, no checkpoint weights. With
    `weights_follow` (the caller loads every weight next, strictly) its random start is not drawn
    (retrieval.models.skip_init)."""
    from open_clip.model import _build_text_tower, _build_vision_tower

    from retrieval.models.skip_init import weights_to_follow

    cfg = card.model_cfg
    quick_gelu = bool(cfg.get("quick_gelu", False))
    seed = card.seed + (0 if which == IMAGE else 1)
    with seeded(seed), weights_to_follow() if weights_follow else contextlib.nullcontext():
        if which == IMAGE:
            return _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu, None)
        text_cfg = text_cfg_for_build(card, hf_pretrained=hf_pretrained)
        with _quiet_transformers() if text_cfg.get("hf_model_name") else contextlib.nullcontext():
            return _build_text_tower(cfg["embed_dim"], text_cfg, quick_gelu, None)


@contextlib.contextmanager
def _quiet_transformers():
    """transformers draws a progress bar and logs a load report (unused pooler weights) per pretrained
    load; neither belongs on a search's stderr."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_tower(card: ModelCard, which: str) -> nn.Module:
    """Build one tower and load its weights from the card's source; eval mode."""
    if which not in _PREFIX:
        raise ValueError(f"unknown tower {which!r}")
    source = card.spec.source
    if source == "config":
        tower = build_tower(card, which)
    elif source == "folder":
        tower = _load_folder_tower(card, which)
    else:
        tower = _load_open_clip_tower(card, which)
    return tower.eval()


def build_tokenizer(card: ModelCard):
    """A callable list[str] -> LongTensor[batch, context_length] for the card's text tower."""
    text_cfg = card.model_cfg["text_cfg"]
    context_length = int(text_cfg.get("context_length", 77))
    if text_cfg.get("hf_tokenizer_name"):
        from open_clip.tokenizer import HFTokenizer

        return HFTokenizer(resolve_package_path(text_cfg["hf_tokenizer_name"]), context_length=context_length,
                           **text_cfg.get("tokenizer_kwargs", {}))
    if card.spec.source == "open_clip":
        import open_clip

        return open_clip.get_tokenizer(card.spec.arch)
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def _tower_state(state_dict: dict, which: str) -> dict:
    prefix = _PREFIX[which]
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def _load_folder_tower(card: ModelCard, which: str) -> nn.Module:
    from safetensors.torch import load_file

    manifest = card.manifest
    weights_file = card.spec.path / manifest["weights"][which]
    if not weights_file.is_file():
        raise ModelNotFoundError(f"model folder {card.spec.path} lacks {weights_file.name}")
    state = load_file(str(weights_file))
    delta = which == TEXT and manifest.get("text_weights") == "delta"
    if not delta:
        return _built_for(card, which, state)
    tower = build_tower(card, which, hf_pretrained=True)
    result = tower.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ModelNotFoundError(f"{weights_file}: unexpected keys {result.unexpected_keys[:5]}")
    # A delta holds what was trained; the rest comes from the pretrained base it names.
    log.debug("text tower: %d keys from the base model, %d from %s", len(result.missing_keys), len(state), weights_file)
    return tower


def _load_open_clip_tower(card: ModelCard, which: str) -> nn.Module:
    import open_clip
    from open_clip.factory import load_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    pretrained = card.spec.pretrained
    if pretrained == "openai":
        # OpenAI's TorchScript checkpoints need open_clip's own loader; build the whole model.
        model = open_clip.create_model(card.spec.arch, pretrained=pretrained)
        return model.visual if which == IMAGE else _WholeModelText(model)
    if Path(pretrained).is_file():
        checkpoint_path = pretrained
    else:
        from retrieval.models.hub import download_weights

        # a cached file is used without touching the network; otherwise fetched (or a clear error)
        checkpoint_path = str(download_weights(card.spec.arch, pretrained))
    if str(checkpoint_path).endswith(".safetensors"):
        state = checkpoint_tower_state(checkpoint_path, which)
    else:
        state = _tower_state(convert_to_custom_text_state_dict(load_state_dict(checkpoint_path)), which)
    return _built_for(card, which, state)


def _built_for(card: ModelCard, which: str, state: dict) -> nn.Module:
    """A tower built for `state` and given it strictly: every weight is replaced, so its random
    start is never drawn (retrieval.models.skip_init); a key missing or left over is an error."""
    tower = build_tower(card, which, weights_follow=True)
    tower.load_state_dict(state, strict=True)
    return tower


def checkpoint_tower_state(path: str, which: str) -> dict:
    """One tower's weights from an open_clip safetensors checkpoint, reading only that tower's tensors
    (a first index run loads both towers: each byte is read once, not the whole file twice). The
    same keys and tensors as open_clip's `load_state_dict` + `convert_to_custom_text_state_dict`
    then `_tower_state` give."""
    from safetensors import safe_open

    from retrieval.models.tower_weights import tower_key_names

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return {name: handle.get_tensor(key) for name, key in tower_key_names(handle.keys(), which).items()}


class _WholeModelText(nn.Module):
    """Text tower view over a whole open_clip model (only for checkpoints open_clip must load itself)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)
