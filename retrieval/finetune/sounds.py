"""Sound/caption pairs: `mmsearch eval` (text->audio and audio->text R@K) and `mmsearch finetune` of an audio tower.

A pairs file is a sounds' file when every row's file is a sound (wav, mp3, flac ...; the column can
be called `audio` or `sound`). Each sound is embedded as the product embeds a query sound: its
first MAX_SECONDS cut into the audio model's windows, the normalised mean of their vectors.

Fine-tuning trains the bundled audio tower (retrieval.models.audio_tower, or a folder fine-tuned
from it) against the frozen bundled text tower, with the bundled recipe's loss (tools/audio/recipe.py):
symmetric InfoNCE where every pair sharing a caption is a positive, on random 2-8 s crops of the
sounds' windows. The text tower's projection stays frozen, so queries keep their space. The
starting tower is scored on the held-out sounds first; the best epoch is kept, and when no epoch
beats the start the output holds the starting weights and says so. The output folder (audio.json +
audio.safetensors) is an audio model: `--audio-model FOLDER`. CLAP cannot be fine-tuned here.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from indexer.errors import DecodeError
from indexer.media.audio import AUDIO_EXTENSIONS, decode_samples
from indexer.media.audio_reader import cut_windows
from retrieval.finetune.errors import PairsError, TrainingError
from retrieval.finetune.evaluate import RetrievalMetrics, evaluate_pairs
from retrieval.finetune.pairs import Pair, drop_failed_images, index_pairs, split_pairs

log = logging.getLogger(__name__)

MAX_SECONDS = 60.0  # a sound's first minute stands for it (as a query sound does)
CROP_S = (2.0, 8.0)  # training crops (the recipe's)
SCALE = 20.0  # the contrastive loss's logit scale (the recipe's)
TOWER_FILE = "audio.safetensors"
CARD_FILE = "audio.json"


def sound_pairs(pairs: Sequence[Pair]) -> bool:
    """True when every pair's file is a sound, False when none is; a mix is a PairsError."""
    sounds = [pair.image.suffix.lower() in AUDIO_EXTENSIONS for pair in pairs]
    if any(sounds) and not all(sounds):
        raise PairsError(f"the pairs file mixes sounds ({sum(sounds)} rows) and other files ({len(sounds) - sum(sounds)} "
                         "rows): give sounds and pictures in separate pairs files")
    return bool(sounds) and all(sounds)


def sound_windows(audio_model, paths: Sequence[Path], on_progress=None) -> tuple[list[list[np.ndarray]], dict[int, str]]:
    """Each sound's window features (the audio model's), and {slot: reason} for those that do not decode."""
    windows: list[list[np.ndarray]] = []
    failures: dict[int, str] = {}
    for slot, path in enumerate(paths):
        try:
            samples, _ = decode_samples(str(path), audio_model.windowing.sample_rate, max_seconds=MAX_SECONDS)
            cut, _ = cut_windows([samples], audio_model.windowing, lambda window: audio_model.features(window.samples))
            windows.append([payload for _, payload in cut])
        except DecodeError as exc:
            failures[slot] = str(exc)
            windows.append([])
        if on_progress is not None:
            on_progress("decode", slot + 1, len(paths))
    return windows, failures


def _mean_vectors(embed_windows: Callable, windows: list[list[np.ndarray]]) -> np.ndarray:
    out = []
    for parts in windows:
        mean = np.asarray(embed_windows(parts), np.float32).mean(axis=0)
        out.append(mean / max(1e-12, float(np.linalg.norm(mean))))
    return np.stack(out)


@dataclass
class _Prepared:
    pairs: list[Pair]
    skipped: list
    paths: list[Path]
    windows: list[list[np.ndarray]]  # per path


def _prepare(audio_model, pairs: Sequence[Pair], on_progress=None, on_skip=None) -> _Prepared:
    paths = list(dict.fromkeys(pair.image for pair in pairs))
    windows, failures = sound_windows(audio_model, paths, on_progress)
    kept, skipped = drop_failed_images(pairs, {paths[slot]: reason for slot, reason in failures.items()}, on_skip)
    if not kept:
        raise PairsError("no pair has a readable sound")
    return _Prepared(kept, skipped, paths, windows)


def _metrics(embed_windows: Callable, embed_texts: Callable, prepared: _Prepared, pairs: Sequence[Pair],
             on_progress=None) -> RetrievalMetrics:
    index = index_pairs(pairs)
    slot = {path: number for number, path in enumerate(prepared.paths)}
    vectors = _mean_vectors(embed_windows, [prepared.windows[slot[path]] for path in index.images])
    return evaluate_pairs(index, lambda ids: vectors[list(ids)], embed_texts, on_progress=on_progress)


def evaluate_sounds(audio_model, pairs: Sequence[Pair], *, on_progress=None, on_skip=None) -> tuple[RetrievalMetrics, list]:
    """Text->audio ("text_to_image") and audio->text metrics of `audio_model` on sound pairs; (metrics, skipped)."""
    prepared = _prepare(audio_model, pairs, on_progress, on_skip)
    metrics = _metrics(audio_model.embed_windows, audio_model.text.embed_texts, prepared, prepared.pairs, on_progress)
    return metrics, prepared.skipped


def sound_metrics_dict(metrics: RetrievalMetrics) -> dict:
    """The metrics with the directions named for sounds."""
    data = metrics.to_dict()
    return {"n": data["n"], "sounds": data["images"], "captions": data["captions"],
            "text_to_audio": data["text_to_image"], "audio_to_text": data["image_to_text"]}


# --- fine-tuning -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SoundTrainConfig:
    pairs: Path
    out: Path
    audio_model: str = "bundled"
    val_pairs: Path | None = None
    val_fraction: float = 0.2
    epochs: int = 5
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    seed: int = 0
    image_column: str | None = None
    caption_column: str | None = None
    restart: bool = False


@dataclass
class SoundTrainResult:
    out: Path
    before: RetrievalMetrics
    after: RetrievalMetrics
    best_epoch: int  # 0: no epoch beat the starting tower (kept)
    history: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    seconds: float = 0.0
    eval_on: str = "held-out sounds"

    @property
    def kept_base(self) -> bool:
        return self.best_epoch == 0

    def record(self) -> dict:
        return {"out": str(self.out), "modality": "audio", "before": sound_metrics_dict(self.before),
                "after": sound_metrics_dict(self.after), "best_epoch": self.best_epoch, "kept_base": self.kept_base,
                "history": self.history, "skipped": len(self.skipped), "seconds": round(self.seconds, 2),
                "eval_on": self.eval_on}


def _score(metrics: RetrievalMetrics) -> float:
    """What the best epoch is kept by: text->audio mean of R@1, R@5, R@10 (the direction search uses)."""
    direction = metrics.text_to_image
    return (direction.r1 + direction.r5 + direction.r10) / 3


def multi_positive_loss(audio, text, labels):
    """Symmetric InfoNCE where every pair with the same caption is a positive (unit vectors in)."""
    logits = SCALE * audio @ text.T
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (-(targets * logits.log_softmax(1)).sum(1).mean() - (targets * logits.T.log_softmax(1)).sum(1).mean())


def _crop(window: np.ndarray, rng: random.Random, frames_per_s: float) -> np.ndarray:
    wanted = max(1, int(rng.uniform(*CROP_S) * frames_per_s))
    if window.shape[1] > wanted:
        start = rng.randrange(window.shape[1] - wanted + 1)
        window = window[:, start:start + wanted]
    return window.astype(np.float32)


def finetune_sounds(config: SoundTrainConfig, pairs: Sequence[Pair], val: Sequence[Pair] | None = None,
                    on_event: Callable[[str, dict], None] | None = None) -> SoundTrainResult:
    """Fine-tune the audio tower `config.audio_model` on sound pairs (see the module docstring)."""
    import torch

    from retrieval.media import open_audio_model
    from retrieval.models.audio import BundledAudioModel
    from retrieval.models.audio_tower import batch_windows, window_frames

    started = time.perf_counter()
    say = on_event or (lambda kind, data: None)
    audio = open_audio_model(config.audio_model, None, device="cpu")
    if not isinstance(audio, BundledAudioModel):
        raise TrainingError(f"--audio-model {config.audio_model}: only the bundled audio tower (or a folder fine-tuned "
                            "from it) can be fine-tuned here; a CLAP model cannot")
    out = Path(config.out)
    if out.exists() and any(out.iterdir()) and not config.restart:
        raise TrainingError(f"{out} is not empty: give a new folder, or --restart to replace what is there")
    if val is None:
        train_pairs, val = split_pairs(pairs, config.val_fraction, config.seed)
        eval_on = "held-out sounds" if val else "training pairs"
    else:
        train_pairs, eval_on = list(pairs), "validation pairs"
    val = list(val) or list(train_pairs)
    prepared = _prepare(audio, [*train_pairs, *val], on_skip=lambda row: say("skip", {"row": str(row)}))
    kept = set(id(pair) for pair in prepared.pairs)
    train_pairs = [pair for pair in train_pairs if id(pair) in kept]
    val = [pair for pair in val if id(pair) in kept]
    if len(train_pairs) < 2 or not val:
        raise TrainingError(f"{len(train_pairs)} training pairs with a readable sound: at least 2 are needed")
    text = audio.text
    captions = sorted({pair.caption for pair in train_pairs})
    caption_id = {caption: number for number, caption in enumerate(captions)}
    caption_vectors = torch.from_numpy(np.asarray(text.embed_texts(captions), np.float32))
    slot = {path: number for number, path in enumerate(prepared.paths)}

    tower = copy.deepcopy(audio.tower).cpu()
    trainable = [parameter for parameter in tower.parameters() if parameter.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_pairs) / config.batch_size))
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
    mel = audio.config.mel
    frames_per_s = mel.sample_rate / mel.hop

    def embed_windows(parts):
        tower.eval()
        batch, frames = batch_windows(list(parts), mel.n_mels, window_frames(mel, audio.windowing.window_s))
        with torch.inference_mode():
            return tower(batch, frames).numpy()

    before = _metrics(embed_windows, text.embed_texts, prepared, val)
    say("before", sound_metrics_dict(before))
    best_score, best_epoch, best_state, best_metrics = _score(before), 0, copy.deepcopy(tower.state_dict()), before
    history = []
    for epoch in range(1, config.epochs + 1):
        rng = random.Random(config.seed * 1000 + epoch)
        order = train_pairs[:]
        rng.shuffle(order)
        tower.train()
        losses = []
        for start in range(0, len(order), config.batch_size):
            batch_pairs = order[start:start + config.batch_size]
            if len(batch_pairs) < 2:
                continue
            crops = [_crop(rng.choice(prepared.windows[slot[pair.image]]), rng, frames_per_s) for pair in batch_pairs]
            inputs, frames = batch_windows(crops, mel.n_mels)
            labels = torch.tensor([caption_id[pair.caption] for pair in batch_pairs])
            loss = multi_positive_loss(tower(inputs, frames), caption_vectors[labels], labels)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 2.0)
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        metrics = _metrics(embed_windows, text.embed_texts, prepared, val)
        entry = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4) if losses else None,
                 "val": sound_metrics_dict(metrics)}
        history.append(entry)
        say("epoch", entry)
        if _score(metrics) > best_score:
            best_score, best_epoch, best_state, best_metrics = _score(metrics), epoch, copy.deepcopy(tower.state_dict()), metrics
    # the weights as they are stored (fp16), scored again: what `eval --audio-model OUT` will measure
    tower.load_state_dict({key: value.half().float() if value.is_floating_point() else value
                           for key, value in best_state.items()})
    best_metrics = before if best_epoch == 0 else _metrics(embed_windows, text.embed_texts, prepared, val)
    result = SoundTrainResult(out, before, best_metrics, best_epoch, history, prepared.skipped,
                              time.perf_counter() - started, eval_on)
    _write_tower(out, tower, audio, result, config)
    return result


def _write_tower(out: Path, tower, audio, result: SoundTrainResult, config: SoundTrainConfig) -> None:
    """audio.safetensors (fp16, without the text tower's projection) and audio.json, each by temp file + os.replace."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {key: (value.half() if value.is_floating_point() else value).contiguous()
             for key, value in tower.state_dict().items() if not key.startswith("proj.")}
    weights = out / TOWER_FILE
    temporary = out / f".{TOWER_FILE}.tmp"
    save_file(state, str(temporary))
    os.replace(temporary, weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = {**{key: value for key, value in audio.card.items() if key != "recipe"}, "weights": TOWER_FILE,
            "weights_sha256": digest,
            "finetune": {"from": audio.info.name, "from_weights": audio.info.weights, "pairs": str(config.pairs),
                         "epochs": config.epochs, "best_epoch": result.best_epoch, "kept_base": result.kept_base,
                         "lr": config.lr, "batch_size": config.batch_size, "seed": config.seed,
                         "before": sound_metrics_dict(result.before), "after": sound_metrics_dict(result.after)}}
    card_path = out / CARD_FILE
    temporary = out / f".{CARD_FILE}.tmp"
    temporary.write_text(json.dumps(card, indent=1, sort_keys=True))
    os.replace(temporary, card_path)
