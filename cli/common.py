"""What every command shares: options, config resolution, error handling, consoles, progress."""
from __future__ import annotations

import functools
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from retrieval.errors import MmsearchError

DEFAULT_MODEL = "bundled"

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)

DbOption = Annotated[
    Optional[Path],
    typer.Option("--db", envvar="MMSEARCH_DB", help="Index folder (database + vectors). Default: $XDG_DATA_HOME/mmsearch.",
                 show_default=False, file_okay=False),
]
ModelOption = Annotated[
    Optional[str],
    typer.Option("--model", "-m", envvar="MMSEARCH_MODEL", show_default=False,
                 help="Model: ARCH:TAG (open_clip, e.g. ViT-B-32:laion2b_s34b_b79k), a model folder, a .json "
                      "architecture config, or 'bundled'. Default: the index's own model, else the bundled one."),
]


def db_dir(db: Optional[Path]) -> Path:
    from indexer.library import default_db_dir

    return Path(db).expanduser() if db else default_db_dir()


def choose_model_name(explicit: Optional[str], recorded_name: Optional[str]) -> str:
    """Flag/env beats the index's recorded model, which beats the default."""
    return explicit or recorded_name or DEFAULT_MODEL


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]Error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def friendly_errors(func):
    """Turn the core's typed errors into `Error: ...` on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except MmsearchError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            err_console.print("Interrupted; finished batches are saved, the next run resumes.")
            raise typer.Exit(130)

    return wrapper


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_date(value: Optional[str], option: str) -> Optional[float]:
    """YYYY-MM-DD or an ISO date-time (local time unless it says otherwise) -> unix seconds."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r}: expected a date like 2024-07-31 or 2024-07-31T18:00")
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(timezone.utc).timestamp()


def is_terminal() -> bool:
    return err_console.is_terminal
