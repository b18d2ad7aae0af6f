"""Command-line flags generated from one settings dataclass: each field's metadata gives its flag, help and bounds,
its annotation the type, its default the default (as TRL's HfArgumentParser and llama-cpp-python's server settings
do). A new setting is one field; the command receives one instance of the dataclass.

Declaring a field's flag (``flag``) needs no click, so the settings module stays free of the CLI; ``click_options``
imports click when a command is built from it.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from pathlib import Path

FLAG = "refusal_edge.flag"  # the key of a field's metadata that holds its Flag


@dataclass(frozen=True)
class Flag:
    """How one settings field appears on the command line."""

    help: str = ""
    names: tuple[str, ...] = ()  # e.g. ("-o", "--output"); default: --field-name
    argument: bool = False  # a positional argument instead of an option
    required: bool | None = None  # None: required when the field has no default
    low: float | None = None  # numbers: the smallest value (excluded with open_low)
    high: float | None = None
    open_low: bool = False
    choices: tuple[str, ...] | None = None  # matched case-insensitively; the field gets the listed spelling
    path: str | None = None  # Path fields: "file" or "dir" (what the path must not be), None: either
    negate: bool = False  # a bool field set to False by the flag (--quiet for progress=True)
    metavar: str | None = None


def flag(help: str = "", **how) -> dict:
    """A field's metadata: ``field(default=..., metadata=flag("what it does", low=1))``."""
    return {FLAG: Flag(help, **how)}


def flagged_fields(cls) -> list[tuple[dataclasses.Field, Flag, type]]:
    """(field, its Flag, its type without Optional) for every field of ``cls`` that has a flag, in field order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if FLAG in f.metadata:
            kind = hints[f.name]
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            out.append((f, f.metadata[FLAG], args[0] if len(args) == 1 else kind))
    return out


def click_options(cls, into: str):
    """A decorator giving a click command one parameter per flagged field of ``cls``; the command receives one
    ``cls`` instance as its ``into`` argument. Fields without a flag keep their defaults."""
    import click

    def param(f: dataclasses.Field, how: Flag, kind: type):
        has_default = f.default is not dataclasses.MISSING
        default = f.default if has_default else None
        required = not has_default if how.required is None else how.required
        if kind is bool:
            names = how.names or (f"--{f.name.replace('_', '-')}",)
            return click.option(*names, f.name, is_flag=True, help=how.help)
        if how.choices is not None:
            ptype = click.Choice(how.choices, case_sensitive=False)
        elif kind is Path:
            ptype = click.Path(path_type=Path, dir_okay=how.path != "file", file_okay=how.path != "dir")
        elif kind in (int, float) and (how.low is not None or how.high is not None):
            ranged = click.IntRange if kind is int else click.FloatRange
            ptype = ranged(min=how.low, max=how.high, **({"min_open": how.open_low} if kind is float else {}))
        else:
            ptype = kind
        if how.argument:
            return click.argument(f.name, type=ptype, required=required, default=default, metavar=how.metavar)
        names = how.names or (f"--{f.name.replace('_', '-')}",)
        return click.option(*names, f.name, type=ptype, required=required, default=default, help=how.help,
                            show_default=has_default and default is not None, metavar=how.metavar)

    fields = flagged_fields(cls)

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            values = {f.name: kwargs.pop(f.name) for f, _, _ in fields}
            for f, how, _ in fields:
                if how.negate:
                    values[f.name] = not values[f.name]
            kwargs[into] = cls(**values)
            return func(*args, **kwargs)

        for f, how, kind in reversed(fields):  # click lists parameters in the order their decorators are written
            wrapper = param(f, how, kind)(wrapper)
        return wrapper

    return decorate
