"""`mmsearch reindex`: re-embed every indexed image with another model."""
from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.common import DbOption, db_dir, err_console, fail, friendly_errors, is_terminal, out_console, setup_logging


@friendly_errors
def reindex(
    model: Annotated[Optional[str], typer.Option("--model", "-m", envvar="MMSEARCH_MODEL", show_default=False,
                                                 help="The model to switch to: ARCH:TAG, a model folder, a .json config or 'bundled'.")] = None,
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
    if not model:
        fail("say which model to switch to: mmsearch reindex --model NAME")
    from indexer.store.library import Library
    from indexer.pipeline.embed import PipelineConfig
    from indexer.pipeline.reindex import reindex as run_reindex
    from retrieval.models.encoders import load_model

    with Library(db_dir(db), create=False) as library, library.lock(wait):
        loaded = load_model(model, device=device)
        staged = library.meta.staged_model()
        if staged is not None and staged.fingerprint != loaded.info.fingerprint:
            if not restart:
                fail(f"a reindex to {staged.name} is half done; run `mmsearch reindex --model {staged.name}` to finish "
                     f"it, or add --restart to discard it and switch to {loaded.info.name}")
            library.meta.abandon_staging()
        progress = Progress(TextColumn("[bold]re-embedding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(), console=err_console, disable=not is_terminal())
        with progress:
            task = progress.add_task("reindex", total=None)
            report = run_reindex(
                library, loaded, PipelineConfig(batch_size=batch_size),
                on_progress=lambda event: progress.update(task, completed=event.done, total=event.total),
                on_file_error=lambda path, reason: err_console.print(f"skipping {path}: {reason}", markup=False),
            )
        from retrieval.models.onnx_text import ensure_exported

        ensure_exported(loaded, library.text_export_path)
    if json_output:
        out_console.print(json.dumps(report.as_dict()), markup=False, highlight=False)
    err_console.print(f"re-embedded {report.embedded} images with {loaded.info.name} "
                      f"({report.already_staged} from an earlier interrupted run, {report.failed} failed) "
                      f"in {report.seconds:.1f} s", markup=False)
