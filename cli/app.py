"""The `mmsearch` command: one typer app, one module per command, each imported only when used.

A one-shot `mmsearch search` must not pay for importing every other command (rich.progress, rich.table,
their core modules: ~0.3 s), so the group knows its commands as "module:attribute" strings and builds a
command from its module the first time it is asked for it. `mmsearch --help` asks for all of them, so the
listing and every `mmsearch CMD --help` are built from the real functions, as before
(`tests/test_cli.py::test_every_command_has_help_with_an_example` fails if one loses its help).
"""
from __future__ import annotations

import importlib

import typer
import typer.main
from typer.core import TyperGroup
from typer.models import TyperInfo

# name -> "module:attribute": a command function, or a typer.Typer for a group of commands. Help order.
COMMANDS = {
    "index": "cli.index_cmd:index",
    "search": "cli.search_cmd:search",
    "status": "cli.status_cmd:status",
    "forget": "cli.forget_cmd:forget",
    "reindex": "cli.reindex_cmd:reindex",
    "check": "cli.check_cmd:check",
    "repair": "cli.repair_cmd:repair",
    "serve": "cli.serve_cmd:serve",
    "finetune": "cli.finetune_cmd:finetune",
    "eval": "cli.eval_cmd:evaluate",
    "classify": "cli.classify_cmd:classify",
    "models": "cli.models_cmd:app",
}


class LazyGroup(TyperGroup):
    """A TyperGroup whose commands are imported on first use (see COMMANDS)."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS) + [name for name in self.commands if name not in COMMANDS]

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = self._build(cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx, args):
        if args and args[0] not in COMMANDS and args[0] not in self.commands:
            for name in COMMANDS:  # an unknown name: build them all so typer's "Did you mean ...?" sees every one
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def _build(self, name: str):
        module_name, _, attribute = COMMANDS[name].partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
        if isinstance(target, typer.Typer):  # what app.add_typer(target, name=name) made
            return typer.main.get_group_from_info(
                TyperInfo(target, name=name), pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=self.rich_markup_mode, suggest_commands=self.suggest_commands)
        single = typer.Typer()
        single.command(name)(target)
        return typer.main.get_command_from_info(single.registered_commands[0], pretty_exceptions_short=app.pretty_exceptions_short,
                                                rich_markup_mode=self.rich_markup_mode)


app = typer.Typer(
    name="mmsearch",
    cls=LazyGroup,
    help="Search your pictures by describing them, or by showing another picture.\n\n"
         "Example:  mmsearch index ~/Pictures && mmsearch search \"a dog on a beach\"",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    # No options of its own: registering it makes typer build a group even though no command is registered
    # with app.command() (LazyGroup supplies them).
    pass


def main() -> None:
    app()


if __name__ == "__main__":
    main()
