"""One tower's weights as numpy arrays, read from the model's safetensors file with neither torch nor open_clip.

A first index run exports both towers to ONNX once. Building them in torch first meant importing
torch and open_clip (about 3 CPU-seconds on 2 cores) only to read weights that the graph writers
(`retrieval.models.vit_onnx`, `retrieval.models.clip_text_onnx`) copy out again. For a checkpoint in
safetensors (what the model hub serves for open_clip's weights, and what a fine-tuned model folder
holds), this module reads the tensors straight into numpy, with the same key mapping as open_clip's
loader (`retrieval.models.towers.checkpoint_tower_state` shares it). Anything else (a `.bin`/`.pt`
checkpoint, OpenAI's TorchScript files, a text "delta", a random-weight config, integer tensors)
raises `NotReadable`: the caller then builds the tower in torch as before.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE, TEXT = "image", "text"
PREFIX = {IMAGE: "visual.", TEXT: "text."}
# a CLIP checkpoint keeps its text tower's keys at the top level; open_clip's
# convert_to_custom_text_state_dict gives them the "text." prefix of a custom-text model
OLD_TEXT_KEYS = ("text_projection", "positional_embedding", "token_embedding", "transformer", "ln_final")


class NotReadable(ValueError):
    """This tower's weights cannot be read without torch (the message says why)."""


def tower_key_names(keys, which: str) -> dict[str, str]:
    """{name inside the tower: key in the checkpoint} for tower `which`, as open_clip's `load_state_dict`
    (a "module." prefix stripped) and `convert_to_custom_text_state_dict` would name them."""
    keys = list(keys)
    strip = 7 if keys and keys[0].startswith("module") else 0
    names = {key[strip:]: key for key in keys}
    old_format = "text_projection" in names
    prefix, out = PREFIX[which], {}
    for name, key in names.items():
        custom = "text." + name if old_format and name.startswith(OLD_TEXT_KEYS) else name
        if custom.startswith(prefix):
            out[custom[len(prefix):]] = key
    return out


def checkpoint_file(card, which: str) -> tuple[Path, bool]:
    """(the safetensors file holding tower `which`'s weights, whether its keys carry tower prefixes);
    NotReadable for anything else. An open_clip model's file is downloaded here when not cached yet."""
    spec = card.spec
    if spec.source == "folder":
        if which == TEXT and card.manifest.get("text_weights") == "delta":
            raise NotReadable("the text weights are a delta on a pretrained tower")
        return Path(spec.path) / card.manifest["weights"][which], False
    if spec.source != "open_clip" or spec.pretrained == "openai":
        raise NotReadable(f"{spec.source} weights ({card.weights}) are not a safetensors checkpoint")
    if Path(spec.pretrained).is_file():
        path = Path(spec.pretrained)
    else:
        from retrieval.models.hub import download_weights

        path = download_weights(spec.arch, spec.pretrained, pretrained_cfg=card.manifest.get("pretrained_cfg") or None)
    if path.suffix != ".safetensors":
        raise NotReadable(f"{path.name} is not a safetensors file")
    return path, True


def tower_arrays(card, which: str) -> dict[str, np.ndarray]:
    """Tower `which`'s weights from the card's checkpoint as float32 numpy arrays, keyed as the torch
    tower's state_dict is."""
    from safetensors import safe_open

    if which not in PREFIX:
        raise ValueError(f"unknown tower {which!r}")
    try:  # numpy learns bfloat16 from it (onnx needs it anyway): such checkpoints read as the others
        import ml_dtypes  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency of onnx
        pass
    path, prefixed = checkpoint_file(card, which)
    out = {}
    try:
        with safe_open(str(path), framework="np") as handle:
            names = tower_key_names(handle.keys(), which) if prefixed else {key: key for key in handle.keys()}
            for name, key in names.items():
                out[name] = _float32(handle.get_tensor(key), key)
    except (OSError, TypeError, ValueError) as exc:  # numpy has no bfloat16, for one
        if isinstance(exc, NotReadable):
            raise
        raise NotReadable(f"cannot read {path.name} without torch: {exc}") from exc
    return out


def _float32(value: np.ndarray, key: str) -> np.ndarray:
    if value.dtype == np.float32:
        return value
    if value.dtype.kind == "f" or value.dtype.name == "bfloat16":
        return value.astype(np.float32)
    raise NotReadable(f"{key} holds {value.dtype} values")
