"""`refusal-edge`: the click entry point. Verbs live in their own modules and are imported only when used,
so `refusal-edge --help` stays instant and never imports torch, FastAPI or the converter."""

from __future__ import annotations

import importlib
import sys

import click

from . import __version__
from .errors import PolicyError, RefusalEdgeError

# verb -> "module:attribute"; each verb's module owns its options and help text.
VERBS = {
    "chat": "refusal_edge.chat:chat",
    "generate": "refusal_edge.commands:generate",
    "decide": "refusal_edge.commands:decide",
    "inspect": "refusal_edge.commands:inspect",
    "convert": "convert.cli:convert",
    "annotate": "convert.cli:annotate",
    "quantize": "convert.cli:quantize",
    "eval": "refusal_edge.evaluate.cli:evaluate",
    "calibrate": "refusal_edge.evaluate.cli:calibrate",
    "serve": "refusal_edge.server:serve",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name in VERBS if self._load(name) is not None]

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        target = VERBS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
                return None  # the verb has not landed in this version
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PolicyError as exc:
            raise click.UsageError(str(exc)) from None
        except RefusalEdgeError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="refusal-edge")
def main() -> None:
    """A dial on when a language model refuses.

    Refusal-token models (Jain et al., COLM 2025) start every answer with a token that says whether, and
    why, they refuse. refusal-edge reads that token's probability after one prefill and lets you choose
    the threshold per category: one model, many refusal rates, no retraining.

    \b
    Examples:
      refusal-edge chat                                  # the embedded default model
      refusal-edge chat model.gguf --threshold safety=0.3
      refusal-edge decide "How do I pick a lock?" --json
      refusal-edge inspect model.gguf
    """


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
