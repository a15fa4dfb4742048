"""Train the bundled audio tower against the bundled model's frozen text tower; evaluate on held-out recordings.

    python -m tools.audio.make_clips --work W          # the recordings (once)
    nice -n 19 python -m tools.audio.recipe --work W [--epochs 12] [--install]

Steps, each resumable: log-mel features of every clip (W/features.npz), caption vectors from the
frozen text tower (W/captions.npz), training with a checkpoint per epoch (W/checkpoint.pt), then
the held-out figures (W/report.json). `--install` writes the weights and their card into
retrieval/models/bundled/ (audio.safetensors, audio.json).

The loss is CLIP's symmetric contrastive loss with every caption of a batch's concepts as a
positive of each of its recordings (a batch holds several recordings of one concept), computed
twice: in the text tower's frozen 384-d pooled space and after its projection (the space queries
live in). Held-out: recordings never trained on (other tunes, phrases, seeds, files) of the
trained concepts; a text query is a concept's first caption and a hit is any recording of it.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from indexer.media.audio_features import MelConfig, log_mel
from retrieval.models.audio_tower import AudioTower, AudioTowerConfig, batch_windows, build_audio_tower
from retrieval.models.registry import BUNDLED_DIR
from tools.audio.concepts import CONCEPTS
from tools.audio.make_clips import HELD_OUT, TRAIN, read_wav

log = logging.getLogger(__name__)

CROP_S = (2.0, 8.0)  # training crops: random lengths in this range (inference windows are 10 s)
SCALE = 20.0  # logit scale of the contrastive loss (fixed)
TOWER_NAME = "audio.safetensors"
CARD_NAME = "audio.json"


# --- features ------------------------------------------------------------------------------------
def load_clips(work: Path) -> list[dict]:
    with open(work / "clips.csv", newline="") as source:
        return list(csv.DictReader(source))


def compute_features(work: Path, clips: list[dict], mel: MelConfig) -> dict:
    """Unnormalised log-mel of every clip (mean 0, std 1 here; the statistics are measured after)."""
    path = work / "features.npz"
    key = hashlib.sha256(json.dumps([clip["path"] for clip in clips] + [mel.to_dict()]).encode()).hexdigest()
    if path.exists():
        cached = np.load(path, allow_pickle=False)
        if str(cached["key"]) == key:
            return {name: cached[name] for name in cached.files}
    raw = MelConfig(**{**mel.to_dict(), "mean": 0.0, "std": 1.0})
    mels, offsets = [], [0]
    for number, clip in enumerate(clips):
        samples, rate = read_wav(work / clip["path"])
        assert rate == mel.sample_rate, clip["path"]
        features = log_mel(samples, raw).astype(np.float16)
        mels.append(features)
        offsets.append(offsets[-1] + features.shape[1])
        if number % 500 == 0:
            log.info("features %d/%d", number, len(clips))
    out = {"mels": np.concatenate(mels, axis=1), "offsets": np.asarray(offsets, np.int64), "key": np.asarray(key)}
    np.savez(path.with_suffix(".tmp.npz"), **out)
    os.replace(path.with_suffix(".tmp.npz"), path)
    return out


def caption_vectors(work: Path, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(pooled 384-d, projected 256-d) vectors of each caption from the bundled text tower (frozen)."""
    path = work / "captions.npz"
    key = hashlib.sha256(json.dumps(captions).encode()).hexdigest()
    if path.exists():
        cached = np.load(path)
        if str(cached["key"]) == key:
            return cached["pooled"], cached["projected"]
    from retrieval.models.encoders import load_model

    text = load_model("bundled", device="cpu").text
    tower = text.tower
    with torch.inference_mode():
        tokens = text.tokenizer(captions)
        mask = (tokens != tower.config.pad_token_id).long()
        pooled = tower.pooler(tower.transformer(input_ids=tokens, attention_mask=mask), mask)
        projected = tower.proj(pooled)
    pooled, projected = pooled.float().numpy(), projected.float().numpy()
    np.savez(path, pooled=pooled, projected=projected, key=np.asarray(key))
    return pooled, projected


def text_projection() -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(BUNDLED_DIR / "text.safetensors"))["proj.weight"].float()


# --- training ------------------------------------------------------------------------------------
def crop(mels: np.ndarray, offsets: np.ndarray, index: int, rng: random.Random, frames_per_s: float,
         augment: bool) -> np.ndarray:
    start, end = int(offsets[index]), int(offsets[index + 1])
    length = end - start
    wanted = int(rng.uniform(*CROP_S) * frames_per_s)
    if length > wanted:
        offset = rng.randrange(length - wanted + 1)
        start, end = start + offset, start + offset + wanted
    window = mels[:, start:end].astype(np.float32)
    if augment:
        window = window + rng.uniform(-1.0, 1.0)  # gain (in normalised log units)
        if rng.random() < 0.5:  # frequency mask
            width = rng.randrange(1, 9)
            at = rng.randrange(0, window.shape[0] - width)
            window[at:at + width] = 0.0
        if rng.random() < 0.5 and window.shape[1] > 20:  # time mask
            width = rng.randrange(1, max(2, window.shape[1] // 8))
            at = rng.randrange(0, window.shape[1] - width)
            window[:, at:at + width] = 0.0
        if rng.random() < 0.3:  # a noise floor
            window = np.maximum(window, rng.uniform(-2.5, -1.0) + np.random.default_rng(rng.randrange(1 << 30))
                                .normal(0, 0.3, window.shape).astype(np.float32))
    return window


def multi_positive_loss(audio: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where every pair of the same concept is a positive (unit vectors in)."""
    logits = SCALE * audio @ text.T
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-targets * logits.log_softmax(1), 1).mean()
                  + torch.sum(-targets * logits.T.log_softmax(1), 1).mean())


def batches(train: list[int], labels: list[int], batch_size: int, rng: random.Random):
    """Batches of clips with at most two recordings of any concept (more would be mostly positives)."""
    order = train[:]
    rng.shuffle(order)
    batch, seen = [], {}
    for index in order:
        if seen.get(labels[index], 0) >= 2:
            continue
        batch.append(index)
        seen[labels[index]] = seen.get(labels[index], 0) + 1
        if len(batch) == batch_size:
            yield batch
            batch, seen = [], {}
    if len(batch) > batch_size // 2:
        yield batch


@torch.inference_mode()
def embed_clips(tower: AudioTower, mels: np.ndarray, offsets: np.ndarray, indices: list[int], mel: MelConfig,
                window_s: float = 10.0) -> np.ndarray:
    """Each clip's vector as the product embeds it: 10 s windows, the clip's vector their normalised mean."""
    tower.eval()
    frames_per_window = int(window_s * mel.sample_rate / mel.hop)
    out = []
    for index in indices:
        start, end = int(offsets[index]), int(offsets[index + 1])
        windows = [mels[:, at:min(end, at + frames_per_window)].astype(np.float32)
                   for at in range(start, end, frames_per_window // 2)
                   if at == start or at + frames_per_window // 4 < end]
        batch, frames = batch_windows(windows, mel.n_mels)
        vectors = tower(batch, frames).mean(0)
        out.append(nn.functional.normalize(vectors, dim=0).numpy())
    return np.stack(out)


def retrieval_figures(audio: np.ndarray, query: np.ndarray, clip_labels: list[int], query_labels: list[int]) -> dict:
    """Text -> audio, a query per concept, a hit any recording of it: R@1/5/10 (macro over concepts),
    and audio -> text classification accuracy among the concepts' captions."""
    scores = query @ audio.T
    clip_labels = np.asarray(clip_labels)
    recalls = {1: [], 5: [], 10: []}
    for row, label in enumerate(query_labels):
        ranked = clip_labels[np.argsort(-scores[row], kind="stable")]
        for k in recalls:
            recalls[k].append(float(label in ranked[:k]))
    predicted = np.asarray(query_labels)[np.argmax(scores, axis=0)]
    chance = {k: float(np.mean([1 - math.comb(len(clip_labels) - int((clip_labels == label).sum()), k)
                                / math.comb(len(clip_labels), k) for label in query_labels])) for k in recalls}
    return {**{f"r{k}": round(float(np.mean(v)), 4) for k, v in recalls.items()},
            "chance_r10": round(chance[10], 4), "classify_accuracy": round(float(np.mean(predicted == clip_labels)), 4),
            "queries": len(query_labels), "recordings": int(len(clip_labels))}


def evaluate(tower, mels, offsets, clips, indices, mel, concept_ids, caption_index, projected) -> dict:
    audio = embed_clips(tower, mels, offsets, indices, mel)
    labels = [concept_ids[clips[i]["caption"]] for i in indices]
    present = sorted(set(labels))
    names = {value: key for key, value in concept_ids.items()}
    query = projected[[caption_index[names[label]] for label in present]]
    query = query / np.linalg.norm(query, axis=1, keepdims=True)
    return retrieval_figures(audio, query, labels, present)


def train(args) -> dict:
    started = time.time()
    torch.set_num_threads(args.threads)
    work = args.work
    clips = load_clips(work)
    config = AudioTowerConfig()
    raw = compute_features(work, clips, config.mel)
    train_rows = [i for i, clip in enumerate(clips) if clip["split"] == TRAIN]
    held_rows = [i for i, clip in enumerate(clips) if clip["split"] == HELD_OUT]
    sample = np.concatenate([raw["mels"][:, raw["offsets"][i]:raw["offsets"][i + 1]:7] for i in train_rows],
                            axis=1).astype(np.float32)
    mel = MelConfig(**{**config.mel.to_dict(), "mean": round(float(sample.mean()), 4), "std": round(float(sample.std()), 4)})
    config = AudioTowerConfig(mel=mel)
    mels = ((raw["mels"].astype(np.float32) - mel.mean) / mel.std).astype(np.float16)
    offsets = raw["offsets"]

    # a concept is its first caption (two sources of "a telephone ringing" are one concept)
    by_caption = {}
    for concept in CONCEPTS:
        by_caption.setdefault(concept.captions[0], set()).update(concept.captions)
    concept_ids = {caption: number for number, caption in enumerate(sorted(by_caption))}
    all_captions = sorted({caption for captions in by_caption.values() for caption in captions})
    caption_index = {caption: number for number, caption in enumerate(all_captions)}
    pooled, projected = caption_vectors(work, all_captions)
    pooled_t = nn.functional.normalize(torch.from_numpy(pooled), dim=-1)
    projected_t = nn.functional.normalize(torch.from_numpy(projected), dim=-1)
    captions_of = {concept_ids[first]: [caption_index[c] for c in sorted(group)] for first, group in by_caption.items()}
    labels = [concept_ids[clip["caption"]] for clip in clips]

    tower = build_audio_tower(config, text_projection(), seed=args.seed)
    trainable = [p for p in tower.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = max(1, len(train_rows) // args.batch_size)
    total = steps_per_epoch * args.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: min(1.0, (step + 1) / max(1, total // 20)) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
    checkpoint = work / "checkpoint.pt"
    history, epoch0 = [], 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        tower.load_state_dict(state["tower"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        history, epoch0 = state["history"], state["epoch"]
        log.info("resuming after epoch %d", epoch0)
    frames_per_s = mel.sample_rate / mel.hop
    for epoch in range(epoch0, args.epochs):
        tower.train()
        rng = random.Random(args.seed * 1000 + epoch)
        losses, epoch_started = [], time.time()
        for batch in batches(train_rows, labels, args.batch_size, rng):
            windows = [crop(mels, offsets, index, rng, frames_per_s, augment=True) for index in batch]
            inputs, frames = batch_windows(windows, mel.n_mels)
            batch_labels = torch.tensor([labels[index] for index in batch])
            chosen = torch.tensor([rng.choice(captions_of[labels[index]]) for index in batch])
            pooled_audio = tower.pooled(inputs, frames)
            loss = (multi_positive_loss(nn.functional.normalize(pooled_audio, dim=-1), pooled_t[chosen], batch_labels)
                    + multi_positive_loss(nn.functional.normalize(tower.proj(pooled_audio), dim=-1), projected_t[chosen],
                                          batch_labels))
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(trainable, 2.0)
            optimiser.step()
            schedule.step()
            losses.append(float(loss))
        figures = evaluate(tower, mels, offsets, clips, held_rows, mel, concept_ids, caption_index, projected)
        history.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4),
                        "seconds": round(time.time() - epoch_started, 1),
                        "held_out": figures})
        log.info("epoch %d loss %.3f %s (%.0f s)", epoch + 1, np.mean(losses), figures, time.time() - epoch_started)
        torch.save({"tower": tower.state_dict(), "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                    "history": history, "epoch": epoch + 1}, checkpoint.with_suffix(".tmp"))
        os.replace(checkpoint.with_suffix(".tmp"), checkpoint)
    report = {"history": history, "held_out": history[-1]["held_out"] if history else None, "config": config.to_dict(),
              "train_recordings": len(train_rows), "held_out_recordings": len(held_rows), "concepts": len(concept_ids),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "machine": f"{os.cpu_count()}-core {platform.machine()} CPU",
              "wall_seconds_this_run": round(time.time() - started, 1)}
    (work / "report.json").write_text(json.dumps(report, indent=1))
    if args.install:
        install(tower, config, report)
    return report


def install(tower: AudioTower, config: AudioTowerConfig, report: dict) -> None:
    """The trained weights (fp16, without the text tower's projection) and their card, beside the bundled model."""
    from safetensors.torch import save_file

    state = {key: value.half().contiguous() for key, value in tower.state_dict().items()
             if not key.startswith("proj.") and value.is_floating_point()}
    state.update({key: value.contiguous() for key, value in tower.state_dict().items() if not value.is_floating_point()})
    weights = BUNDLED_DIR / TOWER_NAME
    save_file(state, str(weights.with_suffix(".tmp")))
    os.chmod(weights.with_suffix(".tmp"), 0o644)
    os.replace(weights.with_suffix(".tmp"), weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = {"format": "mmsearch-audio-tower", "version": 1, "config": config.to_dict(), "weights": TOWER_NAME,
            "weights_sha256": digest, "window_s": 10.0, "hop_s": 5.0, "text_tower": "bundled",
            "recipe": {"command": "python -m tools.audio.recipe --work W --install", "held_out": report["held_out"],
                       "concepts": report["concepts"], "train_recordings": report["train_recordings"],
                       "held_out_recordings": report["held_out_recordings"], "epochs": len(report["history"]),
                       "machine": report["machine"]}}
    path = BUNDLED_DIR / CARD_NAME
    path.with_suffix(".tmp").write_text(json.dumps(card, indent=1, sort_keys=True))
    os.replace(path.with_suffix(".tmp"), path)
    log.info("installed %s (%d bytes) and %s", weights, weights.stat().st_size, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--install", action="store_true", help="write the weights into retrieval/models/bundled/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(args)


if __name__ == "__main__":
    main()
