"""What models this machine can use right now: the bundled one, the recommended one, cached weights."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from retrieval.models.hub import RECOMMENDED_MODEL, cached_weights, hub_cache_dir
from retrieval.models.registry import BUNDLED_DIR, BUNDLED_NAME, MANIFEST_NAME


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str  # bundled | recommended | cached
    dim: int | None
    size_bytes: int | None
    available: bool  # usable offline now
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _bundled_entry() -> ModelEntry:
    manifest_path = BUNDLED_DIR / MANIFEST_NAME
    if not manifest_path.is_file():
        return ModelEntry(BUNDLED_NAME, "bundled", None, None, False, "not installed in this copy")
    manifest = json.loads(manifest_path.read_text())
    size = sum(path.stat().st_size for path in BUNDLED_DIR.iterdir() if path.is_file())
    return ModelEntry(BUNDLED_NAME, "bundled", int(manifest["model_cfg"]["embed_dim"]), size, True,
                      manifest.get("description", "offline model shipped with mmsearch"))


def _open_clip_entry(arch: str, tag: str, kind: str, note: str = "") -> ModelEntry:
    import open_clip

    cfg = open_clip.get_model_config(arch) or {}
    found = cached_weights(arch, tag)
    return ModelEntry(f"{arch}:{tag}", kind, cfg.get("embed_dim"), found.stat().st_size if found else None,
                      found is not None, note or ("cached" if found else "not downloaded (mmsearch models pull)"))


def list_models() -> list[ModelEntry]:
    """The bundled model, the recommended CLIP, then every open_clip model with weights in the cache."""
    import open_clip

    entries = [_bundled_entry()]
    rec_arch, rec_tag = RECOMMENDED_MODEL.split(":")
    entries.append(_open_clip_entry(rec_arch, rec_tag, "recommended"))
    cache = hub_cache_dir()
    cached_repos = {path.name for path in cache.glob("models--*")} if cache.is_dir() else set()
    for arch, tag in open_clip.list_pretrained():
        if (arch, tag) == (rec_arch, rec_tag):
            continue
        hf_hub = (open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub", "")
        repo = hf_hub.split("/")[:2]
        if len(repo) == 2 and f"models--{repo[0]}--{repo[1]}" in cached_repos and cached_weights(arch, tag):
            entries.append(_open_clip_entry(arch, tag, "cached"))
    return entries


def known_open_clip_models() -> list[str]:
    import open_clip

    return [f"{arch}:{tag}" for arch, tag in open_clip.list_pretrained()]


def weights_file_of(entry: ModelEntry) -> Path | None:
    if entry.kind == "bundled":
        return BUNDLED_DIR if entry.available else None
    arch, tag = entry.name.split(":", 1)
    return cached_weights(arch, tag)
