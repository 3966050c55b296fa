"""How `talesmith ... --help` reads: metavars (PATH, NAME, N, TYPES) where typer would print type tags
such as `<str>` or `<list[str]>`, and nothing beside a flag such as `--help`.

An option's own `metavar=` always wins; options that have none get one from this table, by their
long name, or else from their type.
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperGroup

METAVARS = {
    "--to": "FORMATS",
    "--quant": "TYPES",
    "--outtype": "TYPE",
    "--quantization": "TYPE",
    "--lora": "PATH[:SCALE]",
    "--revision": "REV",
    "--tokenizer": "PATH|REPO",
    "--file": "PATTERN",
    "--name": "NAME",
    "--prompt-format": "NAME",
    "--architecture": "NAME",
    "--format": "NAME",
    "--text-column": "NAME",
    "--genre-column": "NAME",
    "--lorebook": "FILE",
    "--html": "FILE",
    "--seed": "N",
    "--preset": "NAME",
    "--device": "cpu|cuda",
    "--backend": "llama|onnx",
}
"""Metavars of options declared without one, by long name."""


def _by_type(annotation: Any) -> str:
    if get_origin(annotation) in (list, tuple):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return _by_type(args[0]) if args else "TEXT"
    if annotation is int:
        return "N"
    if annotation is float:
        return "X"
    return "TEXT"


def metavar(param: Any) -> str:
    """What the help shows for the value of `param`: "" for a flag, else a word in capitals."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if isinstance(param, TyperArgument):
        return (param.name or "VALUE").upper()
    long = next((o for o in param.opts if o.startswith("--")), None)
    if long in METAVARS:
        return METAVARS[long]
    desc = getattr(param, "type_descriptor", None)
    if desc is None:
        return "TEXT"
    if desc.is_path:
        return "PATH"
    if desc.is_choice and desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    return _by_type(desc.annotation)


def _no_type_column(ctx: Any = None) -> None:
    return None


def tidy(command: Any) -> None:
    """Give every parameter of `command` (and its subcommands), and its --help, a metavar."""
    params = list(command.params)
    help_option = command.get_help_option(typer.Context(command))
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if param.metavar is None:
            param.metavar = metavar(param)
        if isinstance(param, TyperArgument):
            # typer shows an argument's type in a column of its own even beside its metavar
            param.display_type_rich = _no_type_column  # type: ignore[method-assign]  # typer has no setting for it
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)


class TidyGroup(TyperGroup):
    """The root `talesmith` group: the help of every command is tidied once the tree is built."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        tidy(self)
