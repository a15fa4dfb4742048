"""`mmsearch check`: look for damage and inconsistencies in an index, without changing anything."""
from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import DbOption, db_dir, friendly_errors, out_console, setup_logging


@friendly_errors
def check(
    db: DbOption = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="Do not load the index's model to see that it still matches.")] = False,
    no_files: Annotated[bool, typer.Option("--no-files", help="Do not look for every indexed file on disk (slow on network drives).")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="SQLite's quick_check instead of the full integrity_check.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help='One JSON object on stdout: {"healthy", "problems": [{"kind", "detail"}], ...}.')] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Check an index: SQLite integrity, vectors against rows, the vector file against the database,
    files missing on disk, and the recorded model against the one that loads. Read-only: safe to run
    at any time, even while another command writes. Exit code 0 when healthy, 1 when problems were
    found (`mmsearch repair` fixes most of them).

    Example:  mmsearch check --no-model --json
    """
    setup_logging(verbose)
    from retrieval.maintenance import check

    report = check(db_dir(db), files=not no_files, model=not no_model, quick=quick)
    if json_output:
        print(json.dumps(report.as_dict()), flush=True)
    else:
        render_check(report)
    raise typer.Exit(0 if report.healthy else 1)


def render_check(report) -> None:
    facts = report.facts
    counts = facts.get("counts") or {}
    model = facts.get("model") or {}
    out_console.print(
        f"index {report.db}: {counts.get('vectors', 0)} vectors ({counts.get('rows', 0)} rows, {counts.get('failed', 0)} "
        f"failed), model {model.get('name', '-')}, schema {facts.get('schema_version', '?')}", markup=False)
    for problem in report.listed():
        where = f" {problem.path}" if problem.path else ""
        out_console.print(f"problem [{problem.kind}]{where}: {problem.detail}", markup=False, highlight=False)
    for note in report.notes:
        out_console.print(f"note: {note}", markup=False, highlight=False)
    if report.healthy:
        out_console.print("healthy", markup=False)
    else:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(report.kinds().items()))
        out_console.print(f"{len(report.problems)} problems ({kinds}); `mmsearch repair` fixes what the database "
                          f"can, `--drop-missing` forgets files that are gone", markup=False)
