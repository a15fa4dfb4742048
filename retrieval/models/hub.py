"""Pretrained open_clip weights on the model hub: what is cached here, fetching more, the default.

The default model policy (when the user names none): the recommended real CLIP if its weights
are cached or can be fetched now, else the bundled offline model. Never hangs: reachability is
checked with a short connect timeout first, and HF_HUB_OFFLINE=1 means no network at all.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from retrieval.errors import ModelNotFoundError
from retrieval.models.registry import BUNDLED_NAME

log = logging.getLogger(__name__)

# DataComp's ViT-B-32 at 256 px: the best zero-shot retrieval of the ViT-B-32 class in open_clip's
# results table (ImageNet 72.8% vs 66.6% for laion2b_s34b_b79k) at nearly the same cost, and the
# model rclip uses, so the two tools compare like for like.
RECOMMENDED_MODEL = "ViT-B-32-256:datacomp_s34b_b86k"
CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class DefaultChoice:
    name: str
    reason: str  # shown by `status`, stored in the index


def hub_cache_dir() -> Path:
    """HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (read now, not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_location(arch: str, tag: str, pretrained_cfg: dict | None = None) -> tuple[str, list[str]]:
    """(repo id, candidate file names, safetensors first) for an open_clip ARCH:TAG; its `pretrained_cfg`
    (kept in a model card) when given, else open_clip's (an import of seconds)."""
    if pretrained_cfg is None:
        import open_clip

        pretrained_cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    cfg = pretrained_cfg
    hf_hub = cfg.get("hf_hub", "")
    if not hf_hub:
        raise ModelNotFoundError(f"{arch}:{tag} is not hosted on the model hub (open_clip knows no hf_hub entry)")
    repo_id, filename = os.path.split(hf_hub)
    filename = filename or "open_clip_pytorch_model.bin"
    if filename.endswith(".safetensors"):
        candidates = [filename]
    elif filename == "open_clip_pytorch_model.bin":
        candidates = ["open_clip_model.safetensors", filename]
    else:  # open_clip prefers a .safetensors twin of any .bin/.pth
        candidates = [os.path.splitext(filename)[0] + ".safetensors", filename]
    return repo_id, candidates


def cached_weights(arch: str, tag: str, cache_dir: Path | None = None, *,
                   pretrained_cfg: dict | None = None) -> Path | None:
    """The local weights file for ARCH:TAG if already downloaded, else None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, candidates = hub_location(arch, tag, pretrained_cfg)
    for filename in candidates:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir or hub_cache_dir()))
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def hub_reachable(timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    if offline():
        return False
    from huggingface_hub import constants

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_s):
            return True
    except OSError as exc:
        log.info("model hub unreachable: %s", exc)
        return False


def download_weights(arch: str, tag: str, cache_dir: Path | None = None, tqdm_class=None, *,
                     pretrained_cfg: dict | None = None) -> Path:
    """Fetch ARCH:TAG's weights into the cache (progress through tqdm_class) and return the file."""
    found = cached_weights(arch, tag, cache_dir, pretrained_cfg=pretrained_cfg)
    if found is not None:
        return found
    if offline():
        raise ModelNotFoundError(f"{arch}:{tag} is not cached and HF_HUB_OFFLINE is set: no download attempted")
    if not hub_reachable():
        raise ModelNotFoundError(
            f"{arch}:{tag} is not cached and the model hub cannot be reached from this machine; download it "
            f"elsewhere and copy the cache ({hub_cache_dir()}), or point --model at a local checkpoint"
        )
    from huggingface_hub import hf_hub_download

    repo_id, candidates = hub_location(arch, tag, pretrained_cfg)
    errors = []
    for filename in candidates:
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=str(cache_dir or hub_cache_dir()),
                                        etag_timeout=CONNECT_TIMEOUT_S, tqdm_class=tqdm_class))
        except Exception as exc:  # noqa: BLE001 - try the next file name, report all
            errors.append(f"{filename}: {exc}")
    raise ModelNotFoundError(f"could not download {arch}:{tag}: " + "; ".join(errors))


def _recommended_pretrained_cfg() -> dict | None:
    """The recommended model's hub entry from its model card (cached per open_clip version: no import of
    open_clip once a card was made), None where there is none."""
    from retrieval.models.registry import describe_model, resolve_model

    try:
        return describe_model(resolve_model(RECOMMENDED_MODEL)).manifest.get("pretrained_cfg") or None
    except ModelNotFoundError:
        return None


def choose_default_model(*, allow_download: bool = True, tqdm_class=None) -> DefaultChoice:
    """The model for a new index when the user named none (see the module docstring)."""
    arch, tag = RECOMMENDED_MODEL.split(":")
    pretrained_cfg = _recommended_pretrained_cfg()
    if cached_weights(arch, tag, pretrained_cfg=pretrained_cfg) is not None:
        return DefaultChoice(RECOMMENDED_MODEL, "default: recommended CLIP, weights found in the local cache")
    if allow_download and hub_reachable():
        try:
            download_weights(arch, tag, tqdm_class=tqdm_class, pretrained_cfg=pretrained_cfg)
            return DefaultChoice(RECOMMENDED_MODEL, "default: recommended CLIP, downloaded")
        except ModelNotFoundError as exc:
            log.warning("%s", exc)
    why = "offline (HF_HUB_OFFLINE)" if offline() else "its weights are not cached and could not be downloaded"
    return DefaultChoice(BUNDLED_NAME, f"default: bundled offline model; the recommended {RECOMMENDED_MODEL} "
                                       f"was unavailable: {why}")
