"""The `mmsearch` command: one typer app, one module per command."""
from __future__ import annotations

import typer

from cli import forget_cmd, index_cmd, models_cmd, reindex_cmd, search_cmd, status_cmd
from cli import check_cmd, repair_cmd
from cli import serve_cmd
from cli import classify_cmd, eval_cmd, finetune_cmd

app = typer.Typer(
    name="mmsearch",
    help="Search your pictures by describing them, or by showing another picture.\n\n"
         "Example:  mmsearch index ~/Pictures && mmsearch search \"a dog on a beach\"",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.command("index")(index_cmd.index)
app.command("search")(search_cmd.search)
app.command("status")(status_cmd.status)
app.command("forget")(forget_cmd.forget)
app.command("reindex")(reindex_cmd.reindex)
app.command("check")(check_cmd.check)
app.command("repair")(repair_cmd.repair)
app.add_typer(models_cmd.app, name="models")
app.command("serve")(serve_cmd.serve)

app.command("finetune")(finetune_cmd.finetune)
app.command("eval")(eval_cmd.evaluate)
app.command("classify")(classify_cmd.classify)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
