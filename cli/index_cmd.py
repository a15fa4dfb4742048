"""`mmsearch index`: walk folders, embed new and changed images, drop vanished ones."""
from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.common import (
    DbOption, ModelOption, db_dir, err_console, friendly_errors, is_terminal,
    model_for_index, setup_logging,
)



class GpuDecode(str, enum.Enum):
    auto = "auto"
    on = "on"
    off = "off"

@friendly_errors
def index(
    folders: Annotated[List[Path], typer.Argument(help="Folders (or files) to index.", exists=True, show_default=False)],
    db: DbOption = None,
    model: ModelOption = None,
    exclude: Annotated[Optional[List[str]], typer.Option("--exclude", "-x", help="Glob of names or paths to skip; repeatable.")] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Also index hidden files and folders.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 32,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Decode threads (default: CPU count, at most 8; every core when the GPU decodes JPEGs).")] = None,
    exact_decode: Annotated[bool, typer.Option("--exact-decode", help="Decode JPEGs at full size (draft mode is on by default: faster, nearly identical).")] = False,
    max_megapixels: Annotated[float, typer.Option(help="Skip images larger than this.")] = 100.0,
    decode_timeout: Annotated[float, typer.Option(min=0, help="Give up on a file that takes longer than this many seconds to read and decode (0: no limit).")] = 30.0,
    index_type: Annotated[Optional[str], typer.Option(help="auto (exact below 100k, IVF above), flat, ivf, hnsw, or a faiss index_factory string.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    gpu_decode: Annotated[GpuDecode, typer.Option("--gpu-decode", help="JPEGs decoded on the GPU (nvJPEG) when the image tower runs on CUDA. auto: whenever possible; on: fail without it.")] = GpuDecode.auto,
    cpu_assist: Annotated[float, typer.Option("--assist-megapixels", min=0, help="With GPU decoding: while a full batch of JPEGs already waits for the GPU, a decode thread decodes the next JPEG of at least this many megapixels itself, so the CPU and the GPU share big photos (0: the GPU decodes every JPEG).")] = 4.0,
    precision: Annotated[Optional[str], typer.Option(help="CPU image tower: onnx-int8 (fastest; default for a new index), onnx, int8, bf16 or fp32. Recorded in the index; image queries use the same.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for another indexer on the same index.")] = 0.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run's summary as JSON on stdout, with every skipped file and why.")] = False,
    report_limit: Annotated[int, typer.Option(min=0, help="Name at most this many skipped files on stderr, then only count them (0: name all).")] = 100,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Index images under FOLDERS; run again to pick up changes (only new or changed files are embedded).

    Example:  mmsearch index ~/Pictures --exclude '*/thumbnails/*'
    """
    setup_logging(verbose)
    from indexer.media.image import DecodeOptions
    from indexer.store.library import Library
    from indexer.pipeline.embed import PipelineConfig
    from indexer.media.scan import ScanOptions, image_extensions
    from indexer.pipeline.sync import IndexConfig, index_folders
    from retrieval.models.encoders import load_model

    pipeline = PipelineConfig(batch_size=batch_size, decode=DecodeOptions(draft=not exact_decode, max_megapixels=max_megapixels),
                              decode_timeout_s=decode_timeout or None, gpu_decode=gpu_decode.value,
                              cpu_assist_megapixels=cpu_assist or None)
    if workers:
        pipeline = dataclasses.replace(pipeline, workers=workers)
    config = IndexConfig(
        roots=tuple(str(folder) for folder in folders),
        scan=ScanOptions(extensions=image_extensions(), exclude=tuple(exclude or ()), include_hidden=hidden),
        pipeline=pipeline,
        index_type=index_type,
    )
    with Library(db_dir(db)) as library, library.lock(wait):
        recorded = library.meta.model()
        model_name, reason = model_for_index(model, recorded.name if recorded else None)
        loaded = load_model(model_name, device=device)
        if precision is None and recorded is None and not library.meta.get_info("image_precision"):
            from retrieval.models.fast_image import DEFAULT_CPU_PRECISION

            precision = DEFAULT_CPU_PRECISION  # a new index; an older one keeps fp32 unless asked
        from retrieval.index_model import use_image_precision

        use_image_precision(library, loaded, precision, record=True)
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=err_console, disable=not is_terminal(), transient=False,
        )

        reported = 0

        def file_error(path: str, reason: str) -> None:
            nonlocal reported
            reported += 1
            if not report_limit or reported <= report_limit:
                err_console.print(f"skipping {path}: {reason}", markup=False, highlight=False)

        with progress:
            task = progress.add_task("scanning", total=None, rate="")

            def on_progress(event) -> None:
                if event.phase == "scan":
                    progress.update(task, description="scanning", completed=event.done)
                elif event.phase == "embed":
                    speed = progress.tasks[0].speed
                    progress.update(task, description="embedding", completed=event.done, total=event.total,
                                    rate=f"{speed:.1f} files/s" if speed else "")
                else:
                    progress.update(task, description="saving index", completed=event.done, total=event.total)

            if not is_terminal():
                err_console.print(f"indexing {', '.join(config.roots)} with {loaded.info.name}", markup=False)
            report = index_folders(library, loaded, config, on_progress=on_progress, on_file_error=file_error)
        # the index has this model's vectors: make text searches fast (also on an unchanged re-run,
        # which replaces an export written by an older version; a current one is left alone)
        if report.embedded or report.reused or report.unchanged:
            from retrieval.models.onnx_text import ensure_exported

            ensure_exported(loaded, library.text_export_path)
        if library.text_export_path.is_dir():  # pre-optimised, weights mapped: opens in a third of the time
            from retrieval.models.fast_text import optimise_text_export

            optimise_text_export(library.text_export_path)
        if recorded is None and reason:  # a new index remembers why it got its model
            library.meta.set_info("model_reason", reason)
    summary = report.as_dict()
    if json_output:
        summary["failures"] = [{"path": path, "reason": reason} for path, reason in report.failures]
        print(json.dumps(summary), flush=True)  # ASCII-escaped: safe for names that are not UTF-8
    if report_limit and len(report.failures) > report_limit:
        err_console.print(f"... and {len(report.failures) - report_limit} more skipped files (--report-limit 0 names "
                          f"them all; `mmsearch status --failures N` lists the recorded ones)", markup=False)
    err_console.print(
        f"indexed {report.embedded}, reused {report.reused}, unchanged {report.unchanged}, removed {report.removed}, "
        f"failed {report.failed}{f', skipped {report.skipped}' if report.skipped else ''} in {report.seconds:.1f} s "
        f"({report.images_per_s:.1f} images/s)",
        markup=False,
    )
