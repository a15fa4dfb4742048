"""What every command shares: options, config resolution, error handling, consoles, progress."""
from __future__ import annotations

import functools
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from indexer.errors import MmsearchError


@functools.cache
def console(stderr: bool):
    """The rich console for stderr or stdout, made on first use: a plain search prints without rich (~0.02 s)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def __getattr__(name: str):  # `from cli.common import err_console, out_console`
    if name in ("err_console", "out_console"):
        return console(stderr=name == "err_console")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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


BUNDLED_NOTICE = (
    "Using the bundled offline model: it was trained on emoji and drawings, so it suits icons and simple "
    "pictures, not photos. For photos, get the real CLIP once online with `mmsearch models pull` "
    "(then `mmsearch reindex --model {recommended}`), or pass --model with a downloaded checkpoint."
)


def db_dir(db: Optional[Path]) -> Path:
    """--db / MMSEARCH_DB, else the config file's `db`, else the XDG data folder."""
    if db:
        return Path(db).expanduser()
    from cli.config import load_config
    from indexer.store.library import default_db_dir

    configured = load_config().get("db")
    return Path(configured).expanduser() if configured else default_db_dir()


def rich_tqdm():
    """A tqdm class that draws with rich (huggingface_hub's downloads report through it)."""
    import warnings

    from tqdm import TqdmExperimentalWarning
    from tqdm.rich import tqdm

    warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
    return tqdm


def fail(message: str, code: int = 1) -> None:
    console(stderr=True).print(f"[bold red]Error:[/] {message}", markup=True, highlight=False)
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
            console(stderr=True).print("Interrupted; finished batches are saved, the next run resumes.")
            raise typer.Exit(130) from None

    return wrapper


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # faiss tries its AVX-512 and AVX2 builds first and logs each miss at INFO ("Could not load library
    # with AVX2 support ... ModuleNotFoundError"): a normal start, which reads like a failure under -v
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
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
    return console(stderr=True).is_terminal
