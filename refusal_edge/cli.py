"""`refusal-edge`: the click entry point. Verbs live in their own modules and are imported only when used,
so `refusal-edge --help` stays instant and never imports torch, the server's starlette/uvicorn or the converter."""

from __future__ import annotations

import importlib
import sys

import click

from . import __version__
from .conventions import ENVIRONMENT, EXIT_CODES
from .errors import PolicyError, RefusalEdgeError
from .extras import extra_for, missing_message
from .progress import set_quiet

# verb -> ("module:attribute", one-line help). Help text lives here so that `--help` imports no verb module.
VERBS = {
    "chat": ("refusal_edge.cli_chat:chat", "Chat with a live refusal dial."),
    "generate": ("refusal_edge.cli_oneshot:generate", "Answer one prompt, streamed, after the decision."),
    "decide": ("refusal_edge.cli_oneshot:decide", "Refusal decisions only: one prefill per prompt."),
    "inspect": ("refusal_edge.cli_oneshot:inspect", "Show a GGUF's refusal metadata and build facts."),
    "convert": ("refusal_edge.convert.cli:convert", "Convert a refusal-token checkpoint to GGUF."),
    "annotate": ("refusal_edge.convert.cli:annotate", "Add refusal metadata to an existing GGUF."),
    "quantize": ("refusal_edge.convert.cli:quantize", "Quantize a GGUF, keeping its refusal metadata."),
    "train": ("refusal_edge.convert.train.cli:train", "Teach a chat checkpoint the refusal tokens; a calibrated GGUF out."),
    "eval": ("refusal_edge.evaluate.cli:evaluate", "Refusal curves and metrics from one prefill per prompt."),
    "calibrate": ("refusal_edge.evaluate.cli:calibrate", "Choose thresholds that meet refusal targets."),
    "serve": ("refusal_edge.server.cli:serve", "OpenAI-compatible local server with refusal controls."),
    "pull": ("refusal_edge.cli_models:pull", "Fetch a refusal-token GGUF from the Hugging Face hub."),
    "list": ("refusal_edge.cli_models:list_models", "The models on this machine, by name."),
    "show": ("refusal_edge.cli_models:show", "A model's name, source, path and refusal metadata."),
    "rm": ("refusal_edge.cli_models:rm", "Delete a pulled model."),
    "doctor": ("refusal_edge.cli_doctor:doctor", "Check this installation: versions, kernels, the default model's numbers."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(VERBS)

    def get_command(self, ctx, name):
        if name not in VERBS:
            return None
        module, attr = VERBS[name][0].split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            _raise_missing_extra(exc, name)
            raise

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, help_text) in VERBS.items()])

    def format_epilog(self, ctx, formatter):
        with formatter.section("Environment"):
            formatter.write_dl(list(ENVIRONMENT.items()))
        with formatter.section("Exit codes"):
            formatter.write_dl([(str(code), meaning) for code, meaning in EXIT_CODES.items()])
        super().format_epilog(ctx, formatter)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PolicyError as exc:
            raise click.UsageError(str(exc)) from None
        except RefusalEdgeError as exc:
            from .options import error_text

            raise click.ClickException(error_text(exc)) from None
        except ModuleNotFoundError as exc:
            _raise_missing_extra(exc, ctx.invoked_subcommand)
            raise


def _raise_missing_extra(exc: ModuleNotFoundError, verb: str | None) -> None:
    """A module that an extra provides is missing: one line naming the pip command (any other missing module is a
    bug or a broken installation, and keeps its traceback)."""
    if extra_for(exc.name) is not None:
        raise click.ClickException(missing_message(exc.name, f"refusal-edge {verb or ''}".strip())) from None


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
    set_quiet(False)  # each command starts loud; its --quiet silences it (one process may run several: tests)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
