"""`mmsearch eval`: retrieval metrics of a model on a pairs file."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.common import err_console, friendly_errors, is_terminal, out_console, setup_logging


@friendly_errors
def evaluate(
    pairs: Annotated[Path, typer.Argument(help="Pairs file: CSV, TSV or JSONL with an image path and a caption per row.",
                                          exists=True, dir_okay=False, show_default=False)],
    model: Annotated[Optional[str], typer.Option("--model", "-m", envvar="MMSEARCH_MODEL", show_default=False,
                                                 help="Model: ARCH:TAG, a model folder, a .json config, or 'bundled'. "
                                                      "Default: the --db index's model, else the config file's, else bundled.")] = None,
    db: Annotated[Optional[Path], typer.Option("--db", file_okay=False, show_default=False,
                                               help="Evaluate this index's model, run as the index runs it (its CPU image precision).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help='JSON on stdout: {"n", "text_to_image": {"r1", "r5", "r10", "mean_rank"}, "image_to_text": {...}, ...}.')] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 64,
    image_column: Annotated[Optional[str], typer.Option(help="Image column / JSON key (default: image, filepath, path, ...).", show_default=False)] = None,
    caption_column: Annotated[Optional[str], typer.Option(help="Caption column / JSON key (default: caption, text, title, ...).", show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    workers: Annotated[int, typer.Option(min=1, help="Image decoding threads.")] = 2,
    audio_model: Annotated[Optional[str], typer.Option("--audio-model", envvar="MMSEARCH_AUDIO_MODEL", show_default=False,
                                                       help="For sound/caption pairs: the audio model (default: the "
                                                            "--db index's, else bundled).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Text->image and image->text recall (R@1/5/10, mean rank) of a model on image/caption pairs; on
    sound/caption pairs (every file a sound) text->audio and audio->text recall of the audio model.

    Each distinct caption queries all distinct images and the other way round; with several right answers (shared images or captions) the best-ranked one counts. Rows with a missing or unreadable image are skipped and reported on stderr; rows repeating an earlier one are left out with a warning.

    Example:  mmsearch eval val.csv --model models/mydomain --json
    """
    setup_logging(verbose)
    from cli.config import load_config
    from retrieval.finetune.evaluate import evaluate_model
    from retrieval.finetune.pairs import duplicates_message, read_pairs
    from retrieval.index_model import model_outside_an_index

    def on_skip(row) -> None:
        err_console.print(f"skipping {row}", markup=False, highlight=False)

    started = time.perf_counter()
    pairs_file = read_pairs(pairs, image_column=image_column, caption_column=caption_column, on_skip=on_skip)
    if duplicates_message(pairs_file):
        err_console.print(f"warning: {duplicates_message(pairs_file)}", markup=False, highlight=False)
    from retrieval.finetune.sounds import sound_pairs

    if sound_pairs(pairs_file.pairs):
        _evaluate_sounds(pairs_file, db, audio_model or load_config().get("audio_model"), device, json_output,
                         on_skip, started)
        return
    loaded = model_outside_an_index(db, model, load_config().get("model"), device=device)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, disable=not is_terminal(), transient=True)
    tasks: dict[str, int] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task({"decode": "decoding", "images": "embedding images",
                                              "captions": "embedding captions"}.get(stage, stage), total=total)
        progress.update(tasks[stage], completed=done, total=total)

    with progress:
        metrics, skipped = evaluate_model(loaded, pairs_file.pairs, batch_size=batch_size, workers=workers,
                                          on_progress=on_progress, on_skip=on_skip)
    seconds = time.perf_counter() - started
    skipped_rows = len(pairs_file.skipped) + len(skipped)
    if json_output:
        print(json.dumps({**metrics.to_dict(), "skipped": skipped_rows, "model": loaded.info.name,
                          "pairs": str(pairs_file.path), "seconds": round(seconds, 2)}, ensure_ascii=False))
        return
    table = Table(caption=f"{metrics.n} pairs ({metrics.captions} captions, {metrics.images} images), "
                          f"model {loaded.info.name}")
    for column in ("direction", "R@1", "R@5", "R@10", "mean rank"):
        table.add_column(column, justify="left" if column == "direction" else "right")
    for label, direction in (("text->image", metrics.text_to_image), ("image->text", metrics.image_to_text)):
        table.add_row(label, f"{direction.r1:.3f}", f"{direction.r5:.3f}", f"{direction.r10:.3f}",
                      f"{direction.mean_rank:.1f}")
    out_console.print(table)
    if skipped_rows:
        err_console.print(f"{skipped_rows} rows skipped", markup=False)
    err_console.print(f"evaluated in {seconds:.1f} s", markup=False)


def _evaluate_sounds(pairs_file, db, audio_model, device: str, json_output: bool, on_skip, started: float) -> None:
    from retrieval.finetune.sounds import evaluate_sounds, sound_metrics_dict
    from retrieval.media import index_audio_model, open_audio_model
    from retrieval.models.encoders import resolve_device

    name = audio_model or index_audio_model(db) or "bundled"
    audio = open_audio_model(name, None, device=resolve_device(device)[0])
    metrics, skipped = evaluate_sounds(audio, pairs_file.pairs, on_skip=on_skip)
    seconds = time.perf_counter() - started
    skipped_rows = len(pairs_file.skipped) + len(skipped)
    if json_output:
        print(json.dumps({**sound_metrics_dict(metrics), "modality": "audio", "skipped": skipped_rows,
                          "audio_model": audio.info.name, "pairs": str(pairs_file.path), "seconds": round(seconds, 2)},
                         ensure_ascii=False))
        return
    table = Table(caption=f"{metrics.n} pairs ({metrics.captions} captions, {metrics.images} sounds), "
                          f"audio model {audio.info.name}")
    for column in ("direction", "R@1", "R@5", "R@10", "mean rank"):
        table.add_column(column, justify="left" if column == "direction" else "right")
    for label, direction in (("text->audio", metrics.text_to_image), ("audio->text", metrics.image_to_text)):
        table.add_row(label, f"{direction.r1:.3f}", f"{direction.r5:.3f}", f"{direction.r10:.3f}",
                      f"{direction.mean_rank:.1f}")
    out_console.print(table)
    if skipped_rows:
        err_console.print(f"{skipped_rows} rows skipped", markup=False)
    err_console.print(f"evaluated in {seconds:.1f} s", markup=False)
