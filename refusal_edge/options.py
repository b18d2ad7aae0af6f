"""The click options shared by every CLI verb (chat, decide, eval, serve, ...).

What the options mean (a model argument, a policy, a prompt list) is resolved in ``arguments``, which
computation modules may use without importing click.
"""

from __future__ import annotations

import functools
import os

import click

from .arguments import ENGINE_KEY_ENV, EngineTarget, ModelOptions, PolicyOptions
from .errors import PromptTooLongError, RefusalEdgeError, SamplingError
from .engines.llama.kernels import MODES, REPACK_ENV
from .progress import set_quiet
from .rules import RULES
from . import settings
from .sampling import CLI_DEFAULTS, SamplingParams
from .text import clean


CONTEXT_OPTION = "--ctx"  # how a CLI user raises the context (n_ctx in Python)


def error_text(exc: RefusalEdgeError) -> str:
    """An error as the CLI shows it: a prompt too long for the context names --ctx, the option a user can pass."""
    return exc.naming(CONTEXT_OPTION) if isinstance(exc, PromptTooLongError) else str(exc)


class _Text(click.ParamType):
    """Prompt text from the command line: bytes that are not UTF-8 arrive as lone surrogates; make them U+FFFD."""

    name = "text"

    def convert(self, value, param, ctx):
        return clean(value) if isinstance(value, str) else value


TEXT = _Text()


def silence_progress(ctx, param, quiet: bool) -> bool:
    """The callback of every verb's --quiet: it runs while the options are read, before any long job starts."""
    if quiet:
        set_quiet()
    return quiet


# Every long job's progress display (progress.py) goes quiet, the first-use build of the default model included.
QUIET_OPTION = click.option("--quiet", "-q", is_flag=True, expose_value=False, callback=silence_progress,
                            help="No progress display (first-use model build, scoring).")


# One spelling per idea on every verb (docs/cli.md): -m/--model, -t/--threads (one default), -q/--quiet.
MODEL_OPTION = click.option(
    "--model", "-m", "model_flag", default=None, metavar="MODEL",
    help="A GGUF path, owner/repo/file.gguf or a name `refusal-edge list` shows, as the positional MODEL [default: "
         "$REFUSAL_EDGE_MODEL, else the embedded default model]; with --engine also the served Hugging Face "
         "checkpoint's directory.")
THREADS_OPTION = click.option("--threads", "-t", type=click.IntRange(min=1), default=None,
                              help="CPU threads [default: all cores].")


def model_from(options: ModelOptions, positional: str | None) -> ModelOptions:
    """The options naming the positional MODEL, or -m's; both, naming different models, is a usage error."""
    if positional and options.source and positional != options.source:
        raise click.UsageError(f"two models given: {positional} and --model {options.source}; give one")
    return options.naming(positional)


def model_options(func):
    """-m/--model, --n-gpu-layers, --threads, --ctx, --verbose, --repack: which model and how llama.cpp runs it; or
    --engine URL: where it runs. They reach the command as one ``model_options`` argument (a ModelOptions, its
    --engine options one EngineTarget); a verb with a positional MODEL takes ``model_from(model_options, MODEL)``."""

    @MODEL_OPTION
    @click.option("--engine", "engine_url", default=None, metavar="URL",
                  help="Run the model on this engine (llama.cpp's llama-server or vLLM) instead of in-process; MODEL "
                       "is the GGUF it serves or the served Hugging Face checkpoint's directory (its vocabulary, template "
                       "and refusal spec are read here).")
    @click.option("--engine-model", default=None, metavar="NAME", help="The served model's name, where the engine "
                  "serves several (vLLM) [default: the first it lists].")
    @click.option("--engine-api-key", envvar=ENGINE_KEY_ENV, show_envvar=True, default=None, metavar="KEY",
                  help="Sent as 'Authorization: Bearer KEY' to the engine.")
    @click.option("--engine-timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
                  help="How long one request to the engine may take, its retries included; a stalled engine fails "
                       "then, saying it timed out [default: 60].")
    @click.option("--n-gpu-layers", "-ngl", type=int, default=0, show_default=True,
                  help="Layers to offload to Metal/CUDA (-1: all). Needs a GPU build of llama-cpp-python.")
    @THREADS_OPTION
    @click.option(CONTEXT_OPTION, "n_ctx", type=click.IntRange(min=16), default=settings.N_CTX, show_default=True, help="Context length.")
    @click.option("--verbose", is_flag=True, help="Show llama.cpp's own logging.")
    @QUIET_OPTION
    @click.option("--repack", type=click.Choice(MODES), envvar=REPACK_ENV, show_envvar=True, default=None,
                  help="llama.cpp's extra CPU buffer types (repacked and AMX kernels): auto (on unless a canary decode "
                       "crashes or miscomputes on this machine; `refusal-edge doctor` says which), on or off.")
    @functools.wraps(func)
    def wrapper(*args, engine_url=None, engine_model=None, engine_api_key=None, engine_timeout=None, repack=None,
                n_gpu_layers=0, threads=None, n_ctx=settings.N_CTX, verbose=False, model_flag=None, **kwargs):
        if engine_url is None and (engine_model or engine_api_key or engine_timeout is not None):
            raise click.UsageError("--engine-model, --engine-api-key and --engine-timeout need --engine URL")
        if repack is not None:  # every model this command loads (server slots, eval) reads it from here
            os.environ[REPACK_ENV] = repack
        timeout = {} if engine_timeout is None else {"timeout": engine_timeout}
        remote = EngineTarget(engine_url, engine_model, engine_api_key, **timeout) if engine_url else None
        kwargs["model_options"] = ModelOptions(model_flag, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx,
                                               verbose=verbose, remote=remote)
        return func(*args, **kwargs)

    return wrapper


def policy_options(func):
    """--policy FILE, --threshold CAT=V, --bias CAT=V, --rule: the refusal dial, as one ``policy_options`` argument
    (a PolicyOptions: ``policy_options.build(model.categories, model.default_policy)``)."""

    @click.option("--policy", "policy_file", type=click.Path(dir_okay=False), default=None,
                  help="Policy file (.toml or .json); defaults to the model's own default policy.")
    @click.option("--rule", type=click.Choice(list(RULES)), default=None, help="Decision rule.")
    @click.option("--threshold", "thresholds", multiple=True, metavar="CATEGORY=VALUE",
                  help="Threshold for a category (case-insensitive prefix: safety=0.3). Repeatable. "
                       "A bare VALUE sets the binary/default threshold.")
    @click.option("--bias", "biases", multiple=True, metavar="CATEGORY=VALUE",
                  help="Logit bias for a category or 'respond'. Repeatable.")
    @functools.wraps(func)
    def wrapper(*args, policy_file=None, rule=None, thresholds=(), biases=(), **kwargs):
        kwargs["policy_options"] = PolicyOptions(policy_file, rule, tuple(thresholds), tuple(biases))
        return func(*args, **kwargs)

    return wrapper


SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens")


def sampling_options(func):
    """--temperature, --top-p, --top-k, --min-p, --repeat-penalty, --seed, --max-tokens: how the answer is decoded.
    They reach the command as one ``sampling`` argument (a SamplingParams); a value out of its range is a usage
    error naming the option (SamplingParams checks the ranges; the options only say the type)."""

    @click.option("--temperature", type=float, default=CLI_DEFAULTS.temperature, show_default=True,
                  help="Sampling temperature of the answer (0: greedy).")
    @click.option("--top-p", type=float, default=CLI_DEFAULTS.top_p, show_default=True)
    @click.option("--top-k", type=int, default=CLI_DEFAULTS.top_k, show_default=True)
    @click.option("--min-p", type=float, default=CLI_DEFAULTS.min_p, show_default=True)
    @click.option("--repeat-penalty", type=float, default=CLI_DEFAULTS.repeat_penalty, show_default=True)
    @click.option("--seed", type=int, default=None, help="Seed for reproducible sampling.")
    @click.option("--max-tokens", type=int, default=CLI_DEFAULTS.max_tokens, show_default=True)
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        values = {name: kwargs.pop(name) for name in SAMPLING_FIELDS}
        try:
            kwargs["sampling"] = SamplingParams(**values)
        except SamplingError as exc:
            ctx = click.get_current_context()
            option = next((p for p in ctx.command.params if p.name == exc.field), None)
            raise click.BadParameter(exc.problem, ctx=ctx, param=option, param_hint=None if option else exc.field)
        return func(*args, **kwargs)

    return wrapper
