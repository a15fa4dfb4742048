"""`mmsearch reindex`: re-embed every indexed image with another model."""
from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from cli.common import DbOption, db_dir, err_console, fail, friendly_errors, out_console, setup_logging


@friendly_errors
def reindex(
    model: Annotated[Optional[str], typer.Option("--model", "-m", envvar="MMSEARCH_MODEL", show_default=False,
                                                 help="The model to switch to: ARCH:TAG, a model folder, a .json config or 'bundled'.")] = None,
    audio_model: Annotated[Optional[str], typer.Option("--audio-model", show_default=False,
                                                       help="Re-embed the sounds instead, with this audio model: "
                                                            "bundled, clap, clap:ID_OR_FOLDER or a ClapConfig .json.")] = None,
    db: DbOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    restart: Annotated[bool, typer.Option("--restart", help="Discard a half-finished reindex to another model and start over.")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for another writer.")] = 0.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Re-embed the whole index with MODEL. Searches keep working (with the old model) until it finishes;
    an interrupted reindex resumes when you run it again.

    Example:  mmsearch reindex --model models/mydomain
    """
    setup_logging(verbose)
    if model and audio_model:
        fail("one reindex at a time: --model switches the pictures' model, --audio-model the sounds'")
    if audio_model:
        _reindex_sounds(audio_model, db, batch_size, device, restart, wait, json_output)
        return
    if not model:
        fail("say which model to switch to: mmsearch reindex --model NAME (or --audio-model NAME for the sounds)")
    from cli.progress import RunProgress
    from indexer.pipeline.embed import PipelineConfig
    from retrieval.indexing import Callbacks, ReindexRequest, reindex_library

    request = ReindexRequest(db=db_dir(db), model=model, device=device, restart=restart,
                             pipeline=PipelineConfig(batch_size=batch_size), wait_s=wait)
    with RunProgress("re-embedding") as progress:
        outcome = reindex_library(request, Callbacks(
            on_progress=progress.update, on_step=progress.step,
            on_file_error=lambda path, reason: err_console.print(f"skipping {path}: {reason}", markup=False)))
    report = outcome.report
    if json_output:
        out_console.print(json.dumps(outcome.as_dict()), markup=False, highlight=False)
    err_console.print(f"re-embedded {report.embedded} images with {outcome.model.name} "
                      f"({report.already_staged} from an earlier interrupted run, {report.failed} failed) "
                      f"in {report.seconds + outcome.export_seconds:.1f} s", markup=False)


def _reindex_sounds(audio_model: str, db, batch_size: int, device: str, restart: bool, wait: float,
                    json_output: bool) -> None:
    from cli.progress import RunProgress
    from indexer.pipeline.embed import PipelineConfig
    from retrieval.reindex_audio import AudioReindexRequest, reindex_sounds

    request = AudioReindexRequest(db=db_dir(db), audio_model=audio_model, device=device, restart=restart,
                                  pipeline=PipelineConfig(batch_size=batch_size), wait_s=wait)
    with RunProgress("re-embedding sounds") as progress:
        outcome = reindex_sounds(request, on_progress=progress.update, on_file_error=lambda path, reason:
                                 err_console.print(f"skipping {path}: {reason}", markup=False))
    report = outcome.report
    if json_output:
        out_console.print(json.dumps(outcome.as_dict()), markup=False, highlight=False)
    err_console.print(f"re-embedded {report.embedded} sounds with {outcome.model.name} "
                      f"({report.already_staged} from an earlier interrupted run, {report.failed} failed) "
                      f"in {report.seconds:.1f} s", markup=False)
