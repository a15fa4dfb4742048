"""`mmsearch finetune`: train a model on your own (image, caption) pairs into a model folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cli.common import err_console, fail, friendly_errors, is_terminal, out_console, setup_logging


@friendly_errors
def finetune(
    pairs: Annotated[Path, typer.Argument(help="Pairs file: CSV, TSV or JSONL with an image path and a caption per row.",
                                          exists=True, dir_okay=False, show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write (new, empty, or an earlier run's to resume).",
                                      file_okay=False, show_default=False)],
    base: Annotated[str, typer.Option("--base",
                                      help="Model to start from: ARCH:TAG, a model folder, a .json config, or 'bundled'.")] = "bundled",
    val: Annotated[Optional[Path], typer.Option("--val", exists=True, dir_okay=False, show_default=False,
                                                help="Validation pairs file (default: hold out --val-fraction of the images).")] = None,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of images held out for validation (0: evaluate on the training pairs).")] = 0.1,
    epochs: Annotated[Optional[int], typer.Option(min=1, show_default="auto", help="Passes over the training pairs (auto: 5 for a pretrained base; for the bundled model ~40,000 pairs' worth, 5 to 30).")] = None,
    batch_size: Annotated[int, typer.Option(min=2, help="Pairs per forward pass.")] = 64,
    accumulate: Annotated[int, typer.Option(min=1, help="Batches per optimiser step; negatives span all of them (effective batch = batch size x N).")] = 1,
    lr: Annotated[Optional[float], typer.Option(show_default="auto", help="Peak learning rate (auto: 1e-5 for a pretrained open_clip base, 1e-3 for the bundled model or a new one).")] = None,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="AdamW weight decay.")] = 0.1,
    warmup: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of steps for linear warm-up (then cosine decay).")] = 0.05,
    lock_image: Annotated[bool, typer.Option("--lock-image", help="Freeze the image tower.")] = False,
    lock_text: Annotated[Optional[bool], typer.Option("--lock-text/--train-text", show_default="auto", help="Freeze the text tower (a HuggingFace text tower keeps its projection trainable); its features are then computed once per caption (auto: locked when it is a packaged pretrained model, as in the bundled model).")] = None,
    unlocked_image_groups: Annotated[int, typer.Option(min=0, help="Train the image tower's last N layer groups, freeze the rest (implies --lock-image).")] = 0,
    unlocked_text_layers: Annotated[int, typer.Option(min=0, help="Train the text tower's last N layers, freeze the rest (implies --lock-text).")] = 0,
    augment: Annotated[Optional[bool], typer.Option("--augment/--no-augment", show_default="auto", help="Random crops and brightness/contrast changes of training images (auto: on only for a new model trained from scratch).")] = None,
    wise_ft: Annotated[bool, typer.Option("--wise-ft/--no-wise-ft", help="After training, also score weights part way back to the starting model (WiSE-FT) and keep them if they validate better.")] = True,
    seed: Annotated[int, typer.Option(help="Seed for the split, shuffling and augmentation: same seed, same model.")] = 0,
    image_column: Annotated[Optional[str], typer.Option(help="Image column / JSON key (default: image, filepath, path, ...).", show_default=False)] = None,
    caption_column: Annotated[Optional[str], typer.Option(help="Caption column / JSON key (default: caption, text, title, ...).", show_default=False)] = None,
    half: Annotated[bool, typer.Option("--half", help="Store the weights as float16 (half the size).")] = False,
    precision: Annotated[str, typer.Option(help="auto (bf16/fp16 autocast on CUDA; bf16 on CPUs with AVX512-BF16 or AMX, about 1.8x faster there; else fp32), fp32, or bf16.")] = "auto",
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Also save the resume state every N steps (0: after each epoch).")] = 0,
    restart: Annotated[bool, typer.Option("--restart", help="Discard an unfinished run (or a model) in --out and start again.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    workers: Annotated[int, typer.Option(min=1, help="Image decoding threads.")] = 2,
    json_output: Annotated[bool, typer.Option("--json", help="Print the training record as JSON on stdout.")] = False,
    audio_model: Annotated[str, typer.Option("--audio-model", help="For sound/caption pairs: the audio tower to "
                                             "fine-tune (bundled, or a folder fine-tuned from it).")] = "bundled",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fine-tune a model on image/caption pairs; run the same command again to resume an interrupted run.

    On sound/caption pairs (every file a sound) the audio tower is trained against the frozen text tower instead; the result is an audio model folder (--audio-model OUT).

    Rows with a missing or unreadable image are skipped and reported; rows repeating an earlier one are left out with a warning. Settings left at auto suit the base (see --lr). The starting model is scored first: when no epoch beats it, the model folder keeps its weights and says so. The result is a model folder: use it anywhere a model name goes (--model OUT).

    Example:
      mmsearch finetune pairs.csv --out models/icons
      mmsearch finetune pairs.csv --base ViT-B-32:laion2b_s34b_b79k \\
          --out models/mydomain
    """
    setup_logging(verbose)
    from retrieval.finetune.pairs import read_pairs
    from retrieval.finetune.sounds import sound_pairs

    if sound_pairs(read_pairs(pairs, image_column=image_column, caption_column=caption_column).pairs):
        from retrieval.finetune.sounds import SoundTrainConfig

        _finetune_sounds(SoundTrainConfig(pairs=pairs, out=out, audio_model=audio_model, val_pairs=val,
                                          val_fraction=val_fraction or 0.0, epochs=epochs or 5, batch_size=batch_size,
                                          lr=lr or 3e-4, weight_decay=1e-4, seed=seed, image_column=image_column,
                                          caption_column=caption_column, restart=restart), json_output)
        return
    from retrieval.finetune.loop import TrainConfig
    from retrieval.finetune.loop import finetune as run_finetune

    config = TrainConfig(
        pairs=pairs, out=out, base=base, val_pairs=val, val_fraction=val_fraction, epochs=epochs,
        batch_size=batch_size, accumulate=accumulate, lr=lr, weight_decay=weight_decay, warmup=warmup,
        lock_image=lock_image, lock_text=lock_text, unlocked_image_groups=unlocked_image_groups,
        unlocked_text_layers=unlocked_text_layers, augment=augment, wise_ft=wise_ft, seed=seed, image_column=image_column,
        caption_column=caption_column, save_dtype="float16" if half else "float32", precision=precision, device=device,
        workers=workers, checkpoint_every=checkpoint_every, restart=restart,
    )
    renderer = _Renderer()
    with renderer.progress:
        result = run_finetune(config, renderer.on_event)
    if result.already_done:
        err_console.print(f"{out} already holds this fine-tune (same pairs, same settings); --restart trains it again.",
                          markup=False)
    if json_output:
        print(json.dumps({"out": str(result.out), "already_done": result.already_done, **result.record},
                         ensure_ascii=False))
        return
    after_title = "kept: starting model" if result.kept_base else f"after (epoch {result.best_epoch})"
    out_console.print(metrics_table(result.before, result.after, after_title,
                                    f"{result.eval_on}: {result.after.n} pairs"))
    if result.skipped:
        err_console.print(f"{len(result.skipped)} rows skipped", markup=False)
    if result.duplicates:
        err_console.print(f"{len(result.duplicates)} duplicate rows left out", markup=False)
    summary = f"{result.out}: {result.steps} steps, {result.pairs_per_second:.1f} pairs/s, {result.seconds:.0f} s"
    if result.kept_base:
        err_console.print(f"No epoch beat the starting model on the {result.eval_on}, so {result.out} holds the "
                          f"starting model's weights unchanged: this fine-tune did not help ({summary}). Try more or "
                          f"cleaner pairs, or other settings (--lr, --epochs).", markup=False)
    else:
        err_console.print(f"{summary}; use it with --model {result.out}", markup=False)


def metrics_table(before, after, after_title: str, caption: str) -> Table:
    """Rows R@1/5/10 and mean rank per direction; columns before and after."""
    table = Table(caption=caption)
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column(after_title, justify="right")
    for label, key in (("text->image", "text_to_image"), ("image->text", "image_to_text")):
        first, second = getattr(before, key), getattr(after, key)
        for name in ("r1", "r5", "r10"):
            table.add_row(f"{label} R@{name[1:]}", f"{getattr(first, name):.3f}", f"{getattr(second, name):.3f}")
        table.add_row(f"{label} mean rank", f"{first.mean_rank:.1f}", f"{second.mean_rank:.1f}")
    return table


class _Renderer:
    """Turns training events into a progress bar (terminal) or occasional lines (logs), all on stderr."""

    def __init__(self):
        self.terminal = is_terminal()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=err_console, disable=not self.terminal, transient=True,
        )
        self.decode_task = None
        self.train_task = None
        self.report_every = 1

    def say(self, message: str) -> None:
        self.progress.console.print(message, markup=False, highlight=False)

    def on_event(self, event) -> None:
        kind = event.kind
        if kind == "skip":
            self.say(f"skipping {event.message}")
        elif kind == "warning":
            self.say(f"warning: {event.message}")
        elif kind == "decode":
            if self.decode_task is None:
                self.decode_task = self.progress.add_task(event.message, total=event.total, info="")
            self.progress.update(self.decode_task, description=event.message, completed=event.done, total=event.total)
        elif kind == "plan":
            if self.decode_task is not None:
                self.progress.remove_task(self.decode_task)
            self.say(event.message)
            self.train_task = self.progress.add_task("training", total=event.steps, info="")
            self.report_every = max(1, event.steps // 20)
        elif kind == "resume":
            self.say(event.message)
            self.progress.update(self.train_task, completed=event.step)
        elif kind == "step":
            info = f"epoch {event.epoch}/{event.epochs} loss {event.loss:.3f} lr {event.lr:.2e}"
            self.progress.update(self.train_task, completed=event.step, info=info)
            if not self.terminal and (event.step % self.report_every == 0 or event.step == event.steps):
                self.say(f"step {event.step}/{event.steps} {info}")
        elif kind == "evaluate":
            if self.train_task is not None:
                self.progress.update(self.train_task, info=f"evaluating epoch {event.epoch}")
        elif kind == "epoch":
            metrics = event.metrics
            label = "before training" if event.epoch == 0 else f"epoch {event.epoch}/{event.epochs}"
            self.say(f"{label}: text->image R@1 {metrics.text_to_image.r1:.3f} R@5 {metrics.text_to_image.r5:.3f} "
                     f"R@10 {metrics.text_to_image.r10:.3f} | image->text R@1 {metrics.image_to_text.r1:.3f} "
                     f"R@5 {metrics.image_to_text.r5:.3f} R@10 {metrics.image_to_text.r10:.3f}")
        elif kind == "mix":
            self.say(event.message)
        elif kind == "save":
            self.say(event.message)


def _finetune_sounds(config, json_output: bool) -> None:
    from retrieval.finetune.pairs import duplicates_message, read_pairs
    from retrieval.finetune.sounds import finetune_sounds, sound_pairs

    def on_skip(row) -> None:
        err_console.print(f"skipping {row}", markup=False, highlight=False)

    def on_event(kind: str, data: dict) -> None:
        if kind == "epoch":
            val = data["val"]["text_to_audio"]
            err_console.print(f"epoch {data['epoch']}: loss {data['loss']}, text->audio R@1 {val['r1']:.3f} "
                              f"R@10 {val['r10']:.3f}", markup=False)
        elif kind == "skip":
            err_console.print(f"skipping {data['row']}", markup=False, highlight=False)

    pairs_file = read_pairs(config.pairs, image_column=config.image_column, caption_column=config.caption_column,
                            on_skip=on_skip)
    if duplicates_message(pairs_file):
        err_console.print(f"warning: {duplicates_message(pairs_file)}", markup=False, highlight=False)
    val = None
    if config.val_pairs is not None:
        val_file = read_pairs(config.val_pairs, image_column=config.image_column, caption_column=config.caption_column,
                              on_skip=on_skip)
        if not sound_pairs(val_file.pairs):
            fail(f"{config.val_pairs} holds no sounds, but {config.pairs} does: give sound pairs for validation too")
        val = val_file.pairs
    result = finetune_sounds(config, pairs_file.pairs, val, on_event)
    if json_output:
        print(json.dumps(result.record(), ensure_ascii=False))
        return
    table = Table(caption=f"{result.eval_on}: {result.after.n} pairs")
    for column in ("text->audio", "R@1", "R@5", "R@10", "mean rank"):
        table.add_column(column, justify="left" if column == "text->audio" else "right")
    for label, metrics in (("before", result.before),
                           ("kept: starting tower" if result.kept_base else f"after (epoch {result.best_epoch})",
                            result.after)):
        direction = metrics.text_to_image
        table.add_row(label, f"{direction.r1:.3f}", f"{direction.r5:.3f}", f"{direction.r10:.3f}",
                      f"{direction.mean_rank:.1f}")
    out_console.print(table)
    if result.kept_base:
        err_console.print(f"No epoch beat the starting audio tower on the {result.eval_on}, so {result.out} holds its "
                          f"weights unchanged: this fine-tune did not help ({result.seconds:.0f} s).", markup=False)
    else:
        err_console.print(f"{result.out}: {result.seconds:.0f} s; use it with --audio-model {result.out}", markup=False)
