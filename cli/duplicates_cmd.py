"""`mmsearch duplicates`: groups of near-duplicate pictures in the index; never deletes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import DbOption, console, db_dir, friendly_errors, is_terminal, setup_logging


@friendly_errors
def duplicates(
    json_output: Annotated[bool, typer.Option("--json", help='JSON on stdout: [{"items": [{path, id, width, height, '
                                                             'size, mtime}, ...], "keep": ID, "score": lowest cosine}].')] = False,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", "-t", min=0.0, max=1.0, show_default=False,
        help="Cosine at or above which two pictures are candidates (default 0.90). Lower finds more, "
             "with more false pairs.")] = None,
    hash_distance: Annotated[int, typer.Option(
        "--hash-distance", min=0, max=64,
        help="Confirm a candidate pair below 0.985 only when the files' perceptual hashes differ in at most "
             "this many of 64 bits.")] = 22,
    no_hash: Annotated[bool, typer.Option("--no-hash", help="Trust the vectors alone (no file is read).")] = False,
    path: Annotated[Optional[str], typer.Option("--path", help="Only pictures whose path matches this glob.")] = None,
    nprobe: Annotated[int, typer.Option("--nprobe", min=1, help="Lists an IVF index probes per picture.")] = 4,
    move_to: Annotated[Optional[Path], typer.Option(
        "--move-to", file_okay=False,
        help="Move every copy but the suggested one into this folder (relative paths kept; never overwrites; "
             "a log of moves in DIR/mmsearch-moves.jsonl). The index drops them on its next run.")] = None,
    db: DbOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Find near-duplicate pictures: resized, recompressed, slightly cropped, brightened, captioned or
    re-encoded copies. Lists groups with the suggested original first; deletes nothing.

    Examples:
      mmsearch duplicates
      mmsearch duplicates --json --threshold 0.95
      mmsearch duplicates --move-to ~/duplicates-to-review
    """
    setup_logging(verbose)
    from retrieval.duplicates import DEFAULT_THRESHOLD, DuplicateOptions, DuplicatesRequest, duplicates_in_index
    from retrieval.query.run import make_filters

    options = DuplicateOptions(threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                               hash_distance=None if no_hash else hash_distance, nprobe=nprobe,
                               path_glob=make_filters(path).path_glob if path else None)
    outcome = duplicates_in_index(DuplicatesRequest(db_dir(db), options, move_to))
    report = outcome.report
    out, err = console(stderr=False), console(stderr=True)
    if json_output:
        print(json.dumps([group.as_dict() for group in report.groups], ensure_ascii=False), flush=True)
    else:
        for group in report.groups:
            for item in group.items:
                mark = "keep" if item.id == group.keep else "    "
                size = f"{item.width}x{item.height}" if item.width and item.height else "?"
                out.print(f"{mark}  {size:>11}  {item.size:>10}  {item.path}", markup=False, highlight=False)
            out.print("", markup=False)
    for note in report.notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    copies = sum(len(group.items) - 1 for group in report.groups)
    if not json_output or is_terminal():
        err.print(f"{len(report.groups)} group{'s' if len(report.groups) != 1 else ''} of near-duplicates, "
                  f"{copies} extra cop{'ies' if copies != 1 else 'y'}, among {report.pictures} pictures "
                  f"({report.seconds:.1f} s)", markup=False, highlight=False)
    if outcome.moves is not None:
        moves = outcome.moves
        for source, why in moves.skipped:
            err.print(f"not moved: {source}: {why}", markup=False, highlight=False)
        err.print(f"moved {len(moves.moved)} file{'s' if len(moves.moved) != 1 else ''} to {move_to} "
                  f"(log: {moves.log_path}); `mmsearch index` drops them from the index on its next run",
                  markup=False, highlight=False)
