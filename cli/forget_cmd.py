"""`mmsearch forget`: drop folders or files from the index (the files themselves are untouched)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List

import typer

from cli.common import DbOption, db_dir, err_console, friendly_errors


@friendly_errors
def forget(
    paths: Annotated[List[Path], typer.Argument(help="Folders or files to drop from the index (need not exist any more).", show_default=False)],
    db: DbOption = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for another writer.")] = 0.0,
) -> None:
    """Remove everything under PATHS from the index. Files on disk are not touched.

    Example:  mmsearch forget ~/Pictures/old
    """
    from indexer.pipeline.sync import forget_paths
    from indexer.store.library import Library

    with Library(db_dir(db), create=False) as library, library.lock(wait):
        removed = forget_paths(library, [str(path) for path in paths])
    err_console.print(f"forgot {removed} item{'s' if removed != 1 else ''}", markup=False)
