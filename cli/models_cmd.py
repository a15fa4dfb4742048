"""`mmsearch models`: list usable models, download the recommended one."""
from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.common import err_console, friendly_errors, out_console, rich_tqdm

app = typer.Typer(context_settings={"help_option_names": ["-h", "--help"]},
                  help="List the models this machine can use; download pretrained CLIP weights.\n\n"
                       "Example:  mmsearch models list", no_args_is_help=True)


@app.command("list")
@friendly_errors
def list_command(
    json_output: Annotated[bool, typer.Option("--json", help="One JSON array of {name, kind, dim, size_bytes, available, note}.")] = False,
    all_names: Annotated[bool, typer.Option("--all", help="Also list every open_clip ARCH:TAG that `pull` can fetch.")] = False,
) -> None:
    """Show the bundled model, the recommended CLIP and every cached open_clip model, with dims and sizes.

    Example:  mmsearch models list --json
    """
    from retrieval.models.catalog import known_open_clip_models, list_models

    entries = list_models()
    if json_output:
        print(json.dumps([entry.as_dict() for entry in entries]))
    else:
        table = Table("name", "kind", "dim", "size", "usable offline", "note")
        for entry in entries:
            size = f"{entry.size_bytes / 1e6:.1f} MB" if entry.size_bytes else "-"
            table.add_row(entry.name, entry.kind, str(entry.dim or "-"), size, "yes" if entry.available else "no", entry.note)
        out_console.print(table)
    if all_names:
        names = known_open_clip_models()
        if json_output:
            err_console.print("\n".join(names), markup=False)
        else:
            out_console.print(f"\nopen_clip can fetch {len(names)} models:", markup=False)
            out_console.print("\n".join(names), markup=False)


@app.command("pull")
@friendly_errors
def pull_command(
    name: Annotated[Optional[str], typer.Argument(help="ARCH:TAG; default: the recommended model.", show_default=False)] = None,
) -> None:
    """Download pretrained weights into the local model cache (needs internet), with progress.

    Example:  mmsearch models pull ViT-B-32-256:datacomp_s34b_b86k
    """
    from retrieval.errors import ModelNotFoundError
    from retrieval.models.hub import RECOMMENDED_MODEL, download_weights

    name = name or RECOMMENDED_MODEL
    if ":" not in name:
        raise ModelNotFoundError(f"{name!r}: expected ARCH:TAG, e.g. {RECOMMENDED_MODEL}")
    arch, tag = name.split(":", 1)
    path = download_weights(arch, tag, tqdm_class=rich_tqdm())
    err_console.print(f"{name} is ready: {path}", markup=False)
