"""`mmsearch calibrate`: fit the index's relevance calibration on your own (image, caption) pairs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import DbOption, db_dir, err_console, friendly_errors, setup_logging


@friendly_errors
def calibrate(
    pairs: Annotated[Optional[Path], typer.Option(
        "--pairs", exists=True, dir_okay=False, show_default=False,
        help="Pairs file (CSV, TSV or JSONL: an image path and a caption per row) whose pictures are in the index.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Forget the index's calibration (back to the model's).")] = False,
    top: Annotated[int, typer.Option(min=2, max=200, help="Hits per caption the fit looks at.")] = 20,
    image_column: Annotated[Optional[str], typer.Option(help="Image column / JSON key.", show_default=False)] = None,
    caption_column: Annotated[Optional[str], typer.Option(help="Caption column / JSON key.", show_default=False)] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout: the fit's figures and coefficients.")] = False,
    db: DbOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fit what `relevance` means for this index's model on captioned pictures of your own, and store it in
    the index (it wins over the model's shipped calibration). Use it for a model that ships none: search
    notes "label-free estimate" then. Each caption is searched as it is and with its pictures taken out
    (a query for something the collection lacks); the figures printed are cross-validated over captions.

    Example:  mmsearch calibrate --pairs captions.csv
    """
    setup_logging(verbose)
    from retrieval.calibration import CalibrateRequest, calibrate_index, clear_index_calibration

    if clear:
        had = clear_index_calibration(db_dir(db))
        err_console.print("forgot the index's relevance calibration" if had else "the index had no calibration of its own",
                          markup=False, highlight=False)
        return
    if pairs is None:
        raise typer.BadParameter("give --pairs FILE (or --clear)", param_hint="--pairs")

    def on_skip(row) -> None:
        err_console.print(f"skipping {row}", markup=False, highlight=False)

    outcome = calibrate_index(CalibrateRequest(db_dir(db), pairs, top, image_column, caption_column), on_skip=on_skip)
    fitted = outcome.calibration.text
    figures = {"captions": outcome.captions, "pairs_not_indexed": outcome.pairs_not_indexed,
               "found_in_top": round(outcome.found_in_top, 3), "hits": outcome.hits,
               "ece_cross_validated": round(outcome.ece_cross_validated, 4),
               "ece_label_free": round(outcome.ece_label_free, 4),
               "text": {"score_weight": fitted.score_weight, "z_weight": fitted.z_weight, "bias": fitted.bias}}
    if json_output:
        print(json.dumps(figures), flush=True)
    if outcome.pairs_not_indexed:
        err_console.print(f"note: {outcome.pairs_not_indexed} pairs' pictures are not in the index (left out)",
                          markup=False, highlight=False)
    err_console.print(f"fitted on {outcome.captions} captions ({outcome.found_in_top:.0%} found their picture in "
                      f"their top {top}): expected calibration error {outcome.ece_cross_validated:.3f} "
                      f"cross-validated (the label-free estimate's: {outcome.ece_label_free:.3f}); stored in the index",
                      markup=False, highlight=False)
