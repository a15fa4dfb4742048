"""The fine-tuning loop: pairs file + base model -> a model folder, resumable, reporting through a callback.

    from retrieval.finetune.loop import TrainConfig, finetune
    result = finetune(TrainConfig(pairs=Path("pairs.csv"), out=Path("models/mine"), base="bundled"))

One run: read pairs (bad rows skipped and reported, repeated rows left out with a warning) -> hold
out ~10% of the images (or use `val_pairs`) -> settings left "auto" chosen for the base
(`defaults`) -> decode images -> evaluate the base as epoch 0 -> per epoch: shuffled batches (no
image or caption twice in a batch where avoidable), AdamW with linear warm-up then cosine decay,
gradient clipping, mixed precision (`precision`) -> evaluate -> keep the best epoch, or the base
when no epoch beats it -> score WiSE-FT mixes of the start and the kept weights (`interpolate`)
-> write `out` as a model folder whose manifest carries a training record. `<out>/.resume/state.pt`
is rewritten after every epoch (and every `checkpoint_every` steps); running the same configuration
again continues from it.
Everything random derives from `seed`, so a resumed run ends with the weights of an
uninterrupted one. Kept as one module because those steps share one run's state (model, optimiser,
schedule, data order, resume record); the pieces without it live beside it (pairs, images, loss,
evaluate, resume, trainable, defaults, interpolate).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from retrieval.finetune import defaults, resume
from retrieval.finetune.errors import TrainingError
from retrieval.finetune.evaluate import RetrievalMetrics, evaluate_pairs
from retrieval.finetune.images import AUGMENT, EVAL, PairImages
from retrieval.finetune.interpolate import choose_mix
from retrieval.finetune.pairs import (
    DuplicateRow,
    Pair,
    PairIndex,
    PairsFile,
    SkippedRow,
    drop_failed_images,
    duplicates_message,
    index_pairs,
    read_pairs,
    split_pairs,
)
from retrieval.finetune.trainable import TextSide, TrainableModel

log = logging.getLogger(__name__)

RECORD_FORMAT = 1
BATCH_LOOKAHEAD = 4  # how many batches' worth of pairs to scan for one without repeats


@dataclass(frozen=True)
class TrainConfig:
    pairs: Path
    out: Path
    base: str = "bundled"
    val_pairs: Path | None = None  # a separate validation file; else `val_fraction` of the images
    val_fraction: float = 0.1
    # None: "auto", chosen from the base model and the number of pairs (retrieval.finetune.defaults)
    epochs: int | None = None
    batch_size: int = 64  # pairs per forward pass
    accumulate: int = 1  # batches per optimiser step; negatives span all of them
    lr: float | None = None  # auto: 1e-5 for a pretrained base, 1e-3 for the bundled model or a new one
    weight_decay: float = 0.1
    warmup: float = 0.05  # share of all steps spent warming the learning rate up
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    lock_image: bool = False
    lock_text: bool | None = None  # auto: locked when the text trunk is a packaged pretrained model
    unlocked_image_groups: int = 0  # with a locked image tower: its last N layer groups train
    unlocked_text_layers: int = 0  # with a locked text tower: its last N layers train
    augment: bool | None = None  # auto: on for a model trained from scratch, else off
    wise_ft: bool = True  # after training, keep a mix of the starting and trained weights if it validates better
    seed: int = 0
    image_column: str | None = None
    caption_column: str | None = None
    cache_text: bool = True  # cache the frozen text trunk's output per caption
    precision: str = "auto"  # auto: bf16/fp16 autocast on CUDA, bf16 on CPUs with bf16 instructions; fp32: never
    save_dtype: str = "float32"  # or "float16": half-size weights in the model folder
    device: str = "auto"
    workers: int = 2  # image decoding threads
    checkpoint_every: int = 0  # also save the resume state every N steps (0: only after each epoch)
    restart: bool = False  # discard a resume state or a finished model in `out`
    eval_batch_size: int = 128

    # Settings that do not change the trained weights, so a resumed run may change them.
    RUN_ONLY = ("pairs", "out", "val_pairs", "device", "workers", "checkpoint_every", "restart", "eval_batch_size")

    def result_settings(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key not in self.RUN_ONLY}


@dataclass(frozen=True)
class TrainEvent:
    """One thing the loop reports.

    kind: skip | warning | decode | plan | resume | evaluate | step | epoch | mix | checkpoint | save.
    """

    kind: str
    epoch: int = 0  # 1-based epoch being trained or just evaluated (0: before training)
    epochs: int = 0
    step: int = 0  # optimiser steps done
    steps: int = 0  # optimiser steps in the whole run
    done: int = 0  # decode: images done of `total`
    total: int = 0
    loss: float | None = None
    lr: float | None = None
    metrics: RetrievalMetrics | None = None
    skipped: SkippedRow | None = None
    message: str = ""


OnEvent = Callable[[TrainEvent], None]


@dataclass(frozen=True)
class TrainResult:
    out: Path
    before: RetrievalMetrics
    after: RetrievalMetrics  # the kept model's: the best epoch's, or the starting model's (best_epoch 0)
    best_epoch: int  # 0: no epoch beat the starting model, whose weights were kept
    history: tuple[RetrievalMetrics, ...]  # one per epoch
    mix_alpha: float  # WiSE-FT: share of the trained weights kept (1.0: as trained; see interpolate)
    mix_tried: tuple[tuple[float, RetrievalMetrics], ...]  # (alpha, validation metrics) of every mix scored
    steps: int
    train_pairs: int
    val_pairs: int
    eval_on: str  # "held-out split" | "validation file" | "training pairs"
    skipped: tuple[SkippedRow, ...]
    duplicates: tuple[DuplicateRow, ...]
    seconds: float
    pairs_per_second: float
    resumed_from_step: int = 0
    already_done: bool = False
    record: dict = field(default_factory=dict)

    @property
    def kept_base(self) -> bool:
        """True when no epoch beat the starting model and `out` holds the starting weights."""
        return self.best_epoch == 0


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear from 1/warmup to 1 over `warmup` steps, then cosine down to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def arrange_batches(order: Sequence[int], image_ids: np.ndarray, caption_ids: np.ndarray,
                    batch_size: int) -> list[np.ndarray]:
    """Cut a shuffled order into full batches, deferring a pair whose image or caption the batch holds.

    Repeats in a batch are false negatives for the contrastive loss. A pair is deferred to a later
    batch; when a few batches' worth of pairs cannot fill one without repeats, repeats are allowed.
    The remainder smaller than one batch is dropped (the next epoch shuffles again).
    """
    pending = deque(int(i) for i in order)
    batches = []
    while len(pending) >= batch_size:
        batch: list[int] = []
        deferred: list[int] = []
        images: set[int] = set()
        captions: set[int] = set()
        scanned = 0
        while pending and len(batch) < batch_size and scanned < BATCH_LOOKAHEAD * batch_size:
            item = pending.popleft()
            scanned += 1
            if image_ids[item] in images or caption_ids[item] in captions:
                deferred.append(item)
                continue
            batch.append(item)
            images.add(image_ids[item])
            captions.add(caption_ids[item])
        while len(batch) < batch_size:
            batch.append(deferred.pop(0) if deferred else pending.popleft())
        pending.extendleft(reversed(deferred))
        batches.append(np.asarray(batch, dtype=np.int64))
    return batches


@dataclass
class _Split:
    """One side of the data (train or validation) ready to batch."""

    pairs: list[Pair]
    index: PairIndex
    store: PairImages
    store_ids: np.ndarray  # index image id -> store slot
    text: TextSide | None = None

    def pixels(self, image_ids: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        return torch.from_numpy(self.store.pixels(self.store_ids[image_ids], rng))


@dataclass
class _Progress:
    """What the resume state carries between runs."""

    step: int = 0
    epochs_done: int = 0
    before: dict | None = None
    best: dict | None = None
    best_epoch: int = 0
    best_state: dict | None = None
    history: list = field(default_factory=list)
    seconds: float = 0.0
    train_seconds: float = 0.0
    pairs_trained: int = 0


def finetune(config: TrainConfig, on_event: OnEvent | None = None) -> TrainResult:
    """Fine-tune `config.base` on `config.pairs` into the model folder `config.out`."""
    from retrieval.models.encoders import pick_device
    from retrieval.models.registry import describe_model, resolve_model

    started = time.perf_counter()
    emit = on_event or (lambda event: None)
    skipped: list[SkippedRow] = []

    def on_skip(row: SkippedRow) -> None:
        skipped.append(row)
        emit(TrainEvent("skip", skipped=row, message=str(row)))

    pairs_file = read_pairs(config.pairs, image_column=config.image_column, caption_column=config.caption_column,
                            on_skip=on_skip)
    val_file = None
    if config.val_pairs is not None:
        val_file = read_pairs(config.val_pairs, image_column=config.image_column,
                              caption_column=config.caption_column, on_skip=on_skip)
    for parsed in (pairs_file, val_file):
        warning = duplicates_message(parsed) if parsed is not None else None
        if warning:
            log.info("%s", warning)
            emit(TrainEvent("warning", message=warning))
    card = describe_model(resolve_model(config.base))
    train_pairs, val_pairs, eval_on = _choose_split(config, pairs_file, val_file)
    config, profile = defaults.resolve(config, card, len(train_pairs))
    _check_numbers(config)
    identity = _identity(config, card, pairs_file, val_file)
    done = _check_out(config, identity)
    if done is not None:
        return done
    saved = resume.load_state(config.out)
    if saved is not None:
        resume.check_identity(saved["identity"], identity, config.out)

    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    model = TrainableModel(card, lock_image=config.lock_image, unlocked_image_groups=config.unlocked_image_groups,
                           lock_text=config.lock_text, unlocked_text_layers=config.unlocked_text_layers, device=device)
    start_state = model.trained_state() if config.wise_ft else None
    train = _prepare_split(train_pairs, model, AUGMENT if config.augment else EVAL, config, emit, on_skip, "train")
    if eval_on == "training pairs":
        val = _prepare_split(train.pairs, model, EVAL, config, emit, on_skip, "validation") \
            if config.augment else train
    else:
        val = _prepare_split(val_pairs, model, EVAL, config, emit, on_skip, "validation")
    train.text = TextSide(model, train.index.captions, cache=config.cache_text)
    val.text = train.text if val.index.captions == train.index.captions else \
        TextSide(model, val.index.captions, cache=config.cache_text)

    batch_size = min(config.batch_size, len(train.index) // config.accumulate)
    if batch_size < 2:
        raise TrainingError(f"{len(train.index)} training pairs are too few for batches of 2 x --accumulate "
                            f"{config.accumulate}")
    steps_per_epoch = (len(train.index) // batch_size) // config.accumulate
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, round(config.warmup * total_steps)) if config.warmup > 0 else 0
    optimizer = torch.optim.AdamW(model.parameter_groups(config.weight_decay), lr=config.lr,
                                  betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps))
    autocast, use_scaler = _train_autocast(device, config.precision)
    eval_autocast = _eval_autocast(device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    emit(TrainEvent("plan", epochs=config.epochs, steps=total_steps, message=(
        f"{defaults.describe(config, profile)}; {len(train.index)} training pairs, {len(val.index)} for "
        f"evaluation ({eval_on}); batch {batch_size} x {config.accumulate}, {steps_per_epoch} steps per epoch on {device}"
        f"{'; text trunk cached' if train.text.uses_cache else ''}")))

    progress = _Progress()
    if saved is not None:
        progress = _restore(saved, model, optimizer, scheduler, scaler)
        emit(TrainEvent("resume", step=progress.step, steps=total_steps, epoch=progress.epochs_done,
                        epochs=config.epochs, message=f"resuming at step {progress.step} of {total_steps}"))
    resumed_from = progress.step
    if progress.before is None:
        emit(TrainEvent("evaluate", epoch=0, epochs=config.epochs))
        before = _evaluate(model, val, config.eval_batch_size, eval_autocast)
        progress.before = before.to_dict()
        # The starting model is epoch 0: an epoch is kept only when it beats it.
        progress.best, progress.best_epoch, progress.best_state = progress.before, 0, model.trained_state()
        emit(TrainEvent("epoch", epoch=0, epochs=config.epochs, metrics=before, steps=total_steps))

    run_started = started  # `seconds` counts every run's whole wall time: preparation, training, evaluation
    previous_seconds = progress.seconds
    model.train_mode()
    for epoch in range(progress.epochs_done, config.epochs):
        batches = arrange_batches(np.random.default_rng([config.seed, 1, epoch]).permutation(len(train.index)),
                                  train.index.image_ids, train.index.caption_ids, batch_size)
        first = progress.step - epoch * steps_per_epoch
        for epoch_step in range(first, steps_per_epoch):
            step_started = time.perf_counter()
            micro_ids = range(epoch_step * config.accumulate, (epoch_step + 1) * config.accumulate)
            micro = [batches[i] for i in micro_ids]
            rngs = [np.random.default_rng([config.seed, 2, epoch, i]) for i in micro_ids]
            loss = _train_step(model, train, micro, rngs if config.augment else None, optimizer, scheduler,
                               scaler, autocast, config.grad_clip)
            progress.step += 1
            progress.pairs_trained += sum(len(ids) for ids in micro)
            progress.train_seconds += time.perf_counter() - step_started
            emit(TrainEvent("step", epoch=epoch + 1, epochs=config.epochs, step=progress.step, steps=total_steps,
                            loss=loss, lr=scheduler.get_last_lr()[0]))
            if config.checkpoint_every and progress.step % config.checkpoint_every == 0 \
                    and epoch_step + 1 < steps_per_epoch:
                progress.seconds = previous_seconds + time.perf_counter() - run_started
                _save(config, identity, progress, model, optimizer, scheduler, scaler)
                emit(TrainEvent("checkpoint", epoch=epoch + 1, epochs=config.epochs, step=progress.step,
                                steps=total_steps))
        emit(TrainEvent("evaluate", epoch=epoch + 1, epochs=config.epochs, step=progress.step, steps=total_steps))
        metrics = _evaluate(model, val, config.eval_batch_size, eval_autocast)
        model.train_mode()
        progress.history.append(metrics.to_dict())
        progress.epochs_done = epoch + 1
        if progress.best is None or metrics.mean_recall > RetrievalMetrics.from_dict(progress.best).mean_recall:
            progress.best, progress.best_epoch, progress.best_state = metrics.to_dict(), epoch + 1, model.trained_state()
        progress.seconds = previous_seconds + time.perf_counter() - run_started
        _save(config, identity, progress, model, optimizer, scheduler, scaler)
        emit(TrainEvent("epoch", epoch=epoch + 1, epochs=config.epochs, step=progress.step, steps=total_steps,
                        metrics=metrics))

    model.load_trained_state(progress.best_state)
    kept_metrics, mix = RetrievalMetrics.from_dict(progress.best), None
    if start_state is not None and progress.best_epoch > 0:
        emit(TrainEvent("evaluate", epoch=config.epochs, epochs=config.epochs, step=progress.step, steps=total_steps,
                        message="trying mixes of the starting and the trained weights (WiSE-FT)"))

        def evaluate_state(state) -> RetrievalMetrics:
            model.load_trained_state(state)
            return _evaluate(model, val, config.eval_batch_size, eval_autocast)

        mix = choose_mix(start_state, progress.best_state, kept_metrics, evaluate_state)
        model.load_trained_state(mix.state)
        kept_metrics = mix.metrics
        emit(TrainEvent("mix", epoch=progress.best_epoch, epochs=config.epochs, metrics=mix.metrics,
                        message=_mix_message(mix)))
    result = TrainResult(
        out=Path(config.out),
        before=RetrievalMetrics.from_dict(progress.before),
        after=kept_metrics,
        best_epoch=progress.best_epoch,
        history=tuple(RetrievalMetrics.from_dict(item) for item in progress.history),
        mix_alpha=mix.alpha if mix is not None else 1.0,
        mix_tried=mix.tried if mix is not None else (),
        steps=progress.step,
        train_pairs=len(train.index),
        val_pairs=len(val.index),
        eval_on=eval_on,
        skipped=tuple(skipped),
        duplicates=pairs_file.duplicates + (val_file.duplicates if val_file else ()),
        seconds=previous_seconds + time.perf_counter() - run_started,
        pairs_per_second=progress.pairs_trained / progress.train_seconds if progress.train_seconds else 0.0,
        resumed_from_step=resumed_from,
    )
    record = _training_record(config, identity, profile, pairs_file, val_file, result)
    _export(config, model, record, defaults.profile_after(profile))
    kept = "the starting model: no epoch beat it" if result.kept_base else f"best epoch {progress.best_epoch}"
    emit(TrainEvent("save", epoch=progress.best_epoch, epochs=config.epochs, step=progress.step, steps=total_steps,
                    message=f"wrote {config.out} ({kept}) in {time.perf_counter() - started:.0f} s"))
    return replace(result, record=record)


def _mix_message(mix) -> str:
    kept = "the trained weights" if mix.alpha == 1 else \
        f"{mix.alpha:.2f} x trained + {1 - mix.alpha:.2f} x starting weights"
    scores = ", ".join(f"{alpha:.2f}: {metrics.mean_recall:.3f}" for alpha, metrics in mix.tried)
    return f"WiSE-FT: kept {kept} (validation mean recall by share of trained weights {scores})"


# ---------------------------------------------------------------- preparation


def _check_numbers(config: TrainConfig) -> None:
    problems = []
    if config.epochs < 1:
        problems.append("--epochs must be at least 1")
    if config.batch_size < 2:
        problems.append("--batch-size must be at least 2 (the loss contrasts pairs within a batch)")
    if config.accumulate < 1:
        problems.append("--accumulate must be at least 1")
    if not config.lr > 0:
        problems.append("--lr must be positive")
    if not 0 <= config.warmup < 1:
        problems.append("--warmup must be in [0, 1)")
    if not 0 <= config.val_fraction < 1:
        problems.append("--val-fraction must be in [0, 1)")
    if config.unlocked_image_groups < 0 or config.unlocked_text_layers < 0:
        problems.append("unlocked layer counts cannot be negative")
    if config.save_dtype not in ("float32", "float16"):
        problems.append("save_dtype must be float32 or float16")
    if config.precision not in ("auto", "fp32", "bf16"):
        problems.append("--precision must be auto, fp32 or bf16")
    if problems:
        raise TrainingError("; ".join(problems))


def _identity(config: TrainConfig, card, pairs_file: PairsFile, val_file: PairsFile | None) -> dict:
    """Everything that decides the trained weights; a resume state must match it exactly."""
    settings = config.result_settings()
    return {
        "pairs_sha256": pairs_file.sha256,
        "val_pairs_sha256": val_file.sha256 if val_file else None,
        "base_name": card.spec.name,
        "base_fingerprint": card.fingerprint,
        **{key: (str(value) if isinstance(value, Path) else value) for key, value in settings.items()},
    }


def _check_out(config: TrainConfig, identity: dict) -> TrainResult | None:
    """Refuse an output folder that holds something else; return the result when it already holds this run.

    `out` may be missing, empty, hold only a resume state, or hold a model folder (replaced only
    with --restart, or resumed when it also holds a resume state).
    """
    from retrieval.models.registry import MANIFEST_NAME

    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--out {out} is a file; give a folder for the model")
    if not out.is_dir():
        return None
    if config.restart:
        resume.discard_state(out)
    manifest_path = out / MANIFEST_NAME
    if manifest_path.is_file():
        if config.restart or resume.has_state(out):
            return None
        try:
            record = json.loads(manifest_path.read_text()).get("training") or {}
        except (OSError, ValueError):
            record = {}
        if record.get("settings") == identity:
            return _result_from_record(out, record)
        raise TrainingError(f"{out} already holds a model (not a fine-tune of these pairs with these settings); "
                            f"pass --restart to replace it, or choose another --out")
    others = [entry.name for entry in out.iterdir() if entry.name != resume.RESUME_DIR]
    if others:
        raise TrainingError(f"--out {out} is a folder with other files in it ({', '.join(sorted(others)[:3])}); "
                            f"give a new or empty folder: it will be replaced by the model")
    return None


def _choose_split(config: TrainConfig, pairs_file: PairsFile,
                  val_file: PairsFile | None) -> tuple[list[Pair], list[Pair], str]:
    if val_file is not None:
        return list(pairs_file.pairs), list(val_file.pairs), "validation file"
    train, val = split_pairs(pairs_file.pairs, config.val_fraction, config.seed)
    if not val:
        return train, train, "training pairs"
    return train, val, "held-out split"


def _prepare_split(pairs: Sequence[Pair], model: TrainableModel, mode: str, config: TrainConfig,
                   emit: OnEvent, on_skip, label: str) -> _Split:
    paths = list(dict.fromkeys(pair.image for pair in pairs))
    store = PairImages(paths, model.card.preprocess, mode=mode)
    failures = store.load(config.workers, lambda done, total: emit(
        TrainEvent("decode", done=done, total=total, message=f"decoding {label} images")))
    kept, _ = drop_failed_images(pairs, {paths[i]: reason for i, reason in failures.items()}, on_skip)
    if not kept:
        raise TrainingError(f"no {label} pair has a readable image")
    index = index_pairs(kept)
    slot_of = {path: slot for slot, path in enumerate(paths)}
    return _Split(kept, index, store, np.asarray([slot_of[path] for path in index.images], dtype=np.int64))


def _train_autocast(device: str, precision: str):
    """(autocast context factory, whether fp16 needs a gradient scaler) for training steps.

    CUDA: bf16 where supported, else fp16 with a scaler (precision "auto" or "bf16"). CPU: bf16 when
    asked, or with "auto" on CPUs with AVX512-BF16 or AMX (about 1.8x faster there, slower without);
    else fp32.
    """
    if precision == "fp32":
        return contextlib.nullcontext, False
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if precision == "bf16" or torch.cuda.is_bf16_supported() else torch.float16
        return (lambda: torch.autocast("cuda", dtype=dtype)), dtype == torch.float16
    if precision == "bf16" or cpu_has_bf16():
        return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), False
    return contextlib.nullcontext, False


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 autocast then trains about 1.8x faster than fp32 on CPU (slower without)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


def _eval_autocast(device: str):
    """Validation runs as `mmsearch eval` does (retrieval.models.encoders): autocast on CUDA only."""
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return lambda: torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext


# ---------------------------------------------------------------- steps and evaluation


def _train_step(model: TrainableModel, train: _Split, micro: list[np.ndarray],
                rngs: list[np.random.Generator] | None, optimizer, scheduler, scaler, autocast,
                grad_clip: float) -> float:
    """One optimiser step over `micro` batches; the loss contrasts every pair against all of them.

    With several batches, features are first computed without gradients, then each batch is
    recomputed with gradients against the others' cached features (open_clip's accumulation), so
    the gradient equals that of one big batch at the memory of a small one.
    """
    pixels = [train.pixels(train.index.image_ids[ids], rngs[i] if rngs else None) for i, ids in enumerate(micro)]
    captions = [train.index.caption_ids[ids] for ids in micro]
    if len(micro) == 1:
        with autocast():
            loss = model.loss(model.image_features(pixels[0]), train.text.features(captions[0]))
        scaler.scale(loss).backward()
    else:
        with torch.no_grad(), autocast():
            image_cache = [model.image_features(batch) for batch in pixels]
            text_cache = [train.text.features(ids) for ids in captions]
        for j in range(len(micro)):
            with autocast():
                image_j = model.image_features(pixels[j])
                text_j = train.text.features(captions[j])
                loss = model.loss(torch.cat(image_cache[:j] + [image_j] + image_cache[j + 1:]),
                                  torch.cat(text_cache[:j] + [text_j] + text_cache[j + 1:]),
                                  detach_scale=j > 0)
            scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    model.loss.clamp_()
    return float(loss.detach())


def _evaluate(model: TrainableModel, split: _Split, batch_size: int, autocast) -> RetrievalMetrics:
    model.eval_mode()

    def embed_images(ids: Sequence[int]) -> np.ndarray:
        with torch.no_grad(), autocast():
            features = model.image_features(split.pixels(np.asarray(ids, dtype=np.int64)))
        return features.float().cpu().numpy()

    return evaluate_pairs(split.index, embed_images, split.text.embed, batch_size=batch_size)


# ---------------------------------------------------------------- state and output


def _save(config: TrainConfig, identity: dict, progress: _Progress, model: TrainableModel,
          optimizer, scheduler, scaler) -> None:
    resume.save_state(config.out, {
        "identity": identity,
        "progress": {key: value for key, value in progress.__dict__.items() if key != "best_state"},
        "best_state": progress.best_state,
        "model": model.trained_state(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    })


def _restore(saved: dict, model: TrainableModel, optimizer, scheduler, scaler) -> _Progress:
    model.load_trained_state(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return _Progress(**saved["progress"], best_state=saved["best_state"])


def _training_record(config: TrainConfig, identity: dict, profile: str, pairs_file: PairsFile,
                     val_file: PairsFile | None, result: TrainResult) -> dict:
    return {
        "format": RECORD_FORMAT,
        "pairs": str(pairs_file.path),
        "pairs_sha256": pairs_file.sha256,
        "val_pairs": str(val_file.path) if val_file else None,
        "val_pairs_sha256": val_file.sha256 if val_file else None,
        "base": identity["base_name"],
        "profile": profile,
        "settings": identity,  # everything that decides the weights; a rerun with the same is a no-op
        "eval_on": result.eval_on,
        "train_pairs": result.train_pairs,
        "val_pairs_used": result.val_pairs,
        "skipped_rows": len(result.skipped),
        "duplicate_rows": len(result.duplicates),
        "before": result.before.to_dict(),
        "after": result.after.to_dict(),
        "best_epoch": result.best_epoch,
        "kept": "base" if result.kept_base else "trained",  # base: no epoch beat the starting model
        "history": [item.to_dict() for item in result.history],
        "mix_alpha": result.mix_alpha,
        "mix_tried": [{"alpha": alpha, **metrics.to_dict()} for alpha, metrics in result.mix_tried],
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "pairs_per_second": round(result.pairs_per_second, 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _export(config: TrainConfig, model: TrainableModel, record: dict, profile: str) -> None:
    from retrieval.models.checkpoint import save_model_folder

    image_state, text_state, text_weights = model.export_states()
    save_model_folder(
        Path(config.out),
        model_cfg=model.card.model_cfg,
        preprocess=model.card.preprocess,
        image_state=image_state,
        text_state=text_state,
        text_weights=text_weights,
        logit_scale=model.loss.scale,
        extra={"training": record, "tokenizer": model.describe_tokenizer(), "base_model": model.card.spec.name,
               defaults.PROFILE_KEY: profile},
        dtype=torch.float16 if config.save_dtype == "float16" else None,
    )


def _result_from_record(out: Path, record: dict) -> TrainResult:
    return TrainResult(
        out=out,
        before=RetrievalMetrics.from_dict(record["before"]),
        after=RetrievalMetrics.from_dict(record["after"]),
        best_epoch=int(record["best_epoch"]),
        history=tuple(RetrievalMetrics.from_dict(item) for item in record.get("history", [])),
        mix_alpha=float(record.get("mix_alpha", 1.0)),
        mix_tried=tuple((float(item["alpha"]), RetrievalMetrics.from_dict(item)) for item in record.get("mix_tried", [])),
        steps=int(record.get("steps", 0)),
        train_pairs=int(record.get("train_pairs", 0)),
        val_pairs=int(record.get("val_pairs_used", 0)),
        eval_on=record.get("eval_on", ""),
        skipped=(),
        duplicates=(),
        seconds=float(record.get("seconds", 0.0)),
        pairs_per_second=float(record.get("pairs_per_second", 0.0)),
        already_done=True,
        record=record,
    )
