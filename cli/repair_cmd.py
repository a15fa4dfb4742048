"""`mmsearch repair`: make an index consistent again from the vectors kept in its database."""
from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.check_cmd import render_check
from cli.common import DbOption, db_dir, err_console, friendly_errors, setup_logging


@friendly_errors
def repair(
    db: DbOption = None,
    drop_missing: Annotated[bool, typer.Option("--drop-missing", help="Also forget items whose files are gone (kept by default: a drive may just be unmounted).")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for another writer.")] = 0.0,
    json_output: Annotated[bool, typer.Option("--json", help='One JSON object on stdout: {"repaired": {...}, "healthy", "check": {...}}.')] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Rebuild the vector index from the database and drop what cannot be right (vectors without a
    row, rows without a vector, vectors of the wrong size, rows whose file now holds other content
    than was indexed); then check again. Takes the write lock,
    so it is safe at any time. Exit code 0 when the index is healthy afterwards, else 1.

    Example:  mmsearch repair --drop-missing
    """
    setup_logging(verbose)
    from retrieval.maintenance import repair as repair_index

    outcome = repair_index(db_dir(db), drop_missing=drop_missing, wait_s=wait)
    if json_output:
        print(json.dumps(outcome.as_dict()), flush=True)
    else:
        result = outcome.repaired
        dropped = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in result.dropped.items() if count)
        err_console.print(f"dropped {dropped or 'nothing'}; vector index rebuilt with {result.vectors_in_index} vectors"
                          + (f"; removed {', '.join(result.removed_files)}" if result.removed_files else "")
                          + (f"; wrote {', '.join(outcome.rebuilt)} again" if outcome.rebuilt else ""), markup=False)
        if result.changed_files:
            err_console.print(f"note: forgot {len(result.changed_files)} items whose files now hold other content than "
                              f"was indexed (e.g. {result.changed_files[0]}): `mmsearch index` of their folder embeds "
                              f"them again", markup=False)
        for note in outcome.notes:
            err_console.print(f"note: {note}", markup=False)
        render_check(outcome.after)
    raise typer.Exit(0 if outcome.after.healthy else 1)
