"""The `mmsearch` command: one typer app, one module per command, each imported only when used.

A one-shot `mmsearch search` must not pay for importing every other command (rich.progress, rich.table,
their core modules: ~0.3 s), so the group knows its commands as "module:attribute" strings and builds a
command from its module the first time it is asked for it. `mmsearch --help` asks for all of them, so the
listing and every `mmsearch CMD --help` are built from the real functions, as before
(`tests/test_cli.py::test_every_command_has_help_with_an_example` fails if one loses its help).
"""
from __future__ import annotations

import importlib
from typing import Annotated

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
    "duplicates": "cli.duplicates_cmd:duplicates",
    "calibrate": "cli.calibrate_cmd:calibrate",
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
        return plain_help(self._build_command(name))

    def _build_command(self, name: str):
        module_name, _, attribute = COMMANDS[name].partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
        if isinstance(target, typer.Typer):  # what app.add_typer(target, name=name) made
            return typer.main.get_group_from_info(
                TyperInfo(target, name=name), pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=self.rich_markup_mode, suggest_commands=self.suggest_commands)
        single = typer.Typer(context_settings=HELP_SETTINGS)
        single.command(name, context_settings=HELP_SETTINGS)(target)
        return typer.main.get_command_from_info(single.registered_commands[0], pretty_exceptions_short=app.pretty_exceptions_short,
                                                rich_markup_mode=self.rich_markup_mode)


# Plain click help, not rich panels: at 80 columns rich cut option names ("--unlocked-image-gr...") and
# printed a <type> beside every flag; click's layout wraps the help text instead.
HELP_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

PLACEHOLDERS = {"path": "PATH", "dir": "DIR", "file": "FILE", "int": "N", "int range": "N", "float": "NUMBER",
                "float range": "NUMBER", "str": "TEXT"}


def _metavar(param) -> str | None:
    """A plain placeholder for an option's value, from typer's own description of its type
    (`<list[Path]>`, `<int range>`, `<auto|on|off>`): PATH, N, TEXT, [auto|on|off]."""
    if hasattr(param, "display_type"):  # typer >= 0.29 describes the annotation
        described = (param.display_type(None) or "").strip("<>")
    else:  # typer < 0.29: click's parameter type
        kind = param.type
        choices = getattr(kind, "choices", None)
        described = "|".join(str(choice) for choice in choices) if choices else (kind.name or "")
        described = {"integer": "int", "integer range": "int range", "text": "str", "directory": "dir"}.get(described, described)
    inner = described[5:-1] if described.startswith("list[") else described
    if "|" in inner:
        return f"[{inner}]"
    return PLACEHOLDERS.get(inner.lower(), inner.upper() or None)


def plain_help(command):
    """Help as a person reads it at 80 columns: example lines kept as written (click rewraps
    paragraphs unless a \\b line comes first), plain placeholders for values."""
    def mend(text: str | None) -> str | None:
        if not text:
            return text
        lines = text.split("\n")
        out = []
        for line in lines:
            if line.strip().startswith(("Example:", "Examples:")) and (not out or out[-1].strip() != "\b"):
                out.append("\b")
            out.append(line)
        return "\n".join(out)

    commands = [command] + list(getattr(command, "commands", {}).values())
    for each in commands:
        each.help = mend(each.help)
        for param in each.params:
            if param.param_type_name == "option" and not param.is_flag and not param.count:
                param.metavar = _metavar(param)
            elif param.param_type_name == "argument":  # its NAME says enough; no <list[Path]> beside it
                param.display_type_rich = lambda ctx: None
    return command


app = typer.Typer(
    name="mmsearch",
    cls=LazyGroup,
    help="Search your pictures by describing them, or by showing another picture.\n\n"
         "Example:  mmsearch index ~/Pictures && mmsearch search \"a dog on a beach\"",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        try:
            version = metadata.version("mmsearch")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        print(f"mmsearch {version}")
        raise typer.Exit()


@app.callback()
def _group(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    # Registering a callback makes typer build a group even though no command is registered with
    # app.command() (LazyGroup supplies them).
    pass


def main() -> None:
    app()


if __name__ == "__main__":
    main()
