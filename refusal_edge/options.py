"""Options and argument resolution shared by every CLI verb (chat, decide, eval, serve, ...)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
import re
from pathlib import Path

import click

from .errors import ModelLoadError, PolicyError
from .policy import RULES, Policy, resolve_category

MODEL_ENV = "REFUSAL_EDGE_MODEL"
_HF_SPEC = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:[:/](?P<file>.+\.gguf))$")


def resolve_model_path(model: str | None) -> Path:
    """A GGUF path, ``owner/repo/file.gguf`` (or ``owner/repo:file.gguf``) from the Hugging Face hub, or
    nothing: then ``$REFUSAL_EDGE_MODEL``, then the embedded default model."""
    model = model or os.environ.get(MODEL_ENV)
    if not model:
        from .default_model import ensure_default_model

        return ensure_default_model()
    path = Path(model).expanduser()
    if path.exists():
        return path
    match = _HF_SPEC.match(model)
    if match and not model.startswith((".", "/", "~")):
        return _download(match["repo"], match["file"])
    raise ModelLoadError(f"model file not found: {model}")


def _download(repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"{repo}/{filename} is not in the Hugging Face cache and the hub cannot be reached (offline?)"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot fetch {filename} from {repo}: {exc}") from None


ENGINE_KEY_ENV = "REFUSAL_EDGE_ENGINE_API_KEY"


@dataclass(frozen=True)
class EngineTarget:
    """--engine URL and its companions: run the model on a remote engine instead of in-process."""

    url: str
    model: str | None = None
    api_key: str | None = None
    concurrency: int | None = None  # scoring requests in flight (eval, calibrate); None: the engine's slots


def model_options(func):
    """--n-gpu-layers, --threads, --ctx, --verbose: how llama.cpp runs; or --engine URL: where the model runs.
    The three --engine options reach the command as one ``remote`` argument (an EngineTarget, or None)."""

    @click.option("--engine", "engine_url", default=None, metavar="URL",
                  help="Run the model on this engine (llama.cpp's llama-server or vLLM) instead of in-process; MODEL "
                       "is the GGUF it serves (its vocabulary, template and refusal spec are read here).")
    @click.option("--engine-model", default=None, metavar="NAME", help="The served model's name, where the engine "
                  "serves several (vLLM) [default: the first it lists].")
    @click.option("--engine-api-key", envvar=ENGINE_KEY_ENV, show_envvar=True, default=None, metavar="KEY",
                  help="Sent as 'Authorization: Bearer KEY' to the engine.")
    @click.option("--n-gpu-layers", "-ngl", type=int, default=0, show_default=True,
                  help="Layers to offload to Metal/CUDA (-1: all). Needs a GPU build of llama-cpp-python.")
    @click.option("--threads", "-t", type=click.IntRange(min=1), default=None, help="CPU threads [default: all cores].")
    @click.option("--ctx", "n_ctx", type=click.IntRange(min=16), default=4096, show_default=True, help="Context length.")
    @click.option("--verbose", is_flag=True, help="Show llama.cpp's own logging.")
    @functools.wraps(func)
    def wrapper(*args, engine_url=None, engine_model=None, engine_api_key=None, **kwargs):
        if engine_url is None and (engine_model or engine_api_key):
            raise click.UsageError("--engine-model and --engine-api-key need --engine URL")
        kwargs["remote"] = EngineTarget(engine_url, engine_model, engine_api_key) if engine_url else None
        return func(*args, **kwargs)

    return wrapper


def policy_options(func):
    """--policy FILE, --threshold CAT=V, --bias CAT=V, --rule: the refusal dial."""

    @click.option("--policy", "policy_file", type=click.Path(dir_okay=False), default=None,
                  help="Policy file (.toml or .json); defaults to the model's own default policy.")
    @click.option("--rule", type=click.Choice(RULES), default=None, help="Decision rule.")
    @click.option("--threshold", "thresholds", multiple=True, metavar="CATEGORY=VALUE",
                  help="Threshold for a category (case-insensitive prefix: safety=0.3). Repeatable. "
                       "A bare VALUE sets the binary/default threshold.")
    @click.option("--bias", "biases", multiple=True, metavar="CATEGORY=VALUE",
                  help="Logit bias for a category or 'respond'. Repeatable.")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def load_model(model: str | None, n_gpu_layers: int, threads: int | None, n_ctx: int, verbose: bool,
               remote: EngineTarget | None = None):
    """The model in-process, or on the ``remote`` engine (then MODEL is only read for its vocabulary)."""
    from .model import RefusalModel

    if remote is not None:
        return RefusalModel.connect(remote.url, resolve_model_path(model), model=remote.model, api_key=remote.api_key,
                                    concurrency=remote.concurrency, verbose=verbose)
    return RefusalModel.load(resolve_model_path(model), n_ctx=n_ctx, n_threads=threads,
                             n_gpu_layers=n_gpu_layers, verbose=verbose)


def build_policy(categories, default: Policy, policy_file=None, rule=None, thresholds=(), biases=()) -> Policy:
    """The model's default (or the file), then --rule, --threshold and --bias on top."""
    policy = Policy.load(policy_file, categories) if policy_file else default
    for item in thresholds:
        name, value = _split(item, "--threshold", allow_bare=True)
        if name is None:
            policy = replace(policy, threshold=value)
        else:
            policy = policy.with_threshold(resolve_category(name, categories, "--threshold"), value)
    for item in biases:
        name, value = _split(item, "--bias")
        policy = policy.with_bias(resolve_category(name, (*categories, "respond"), "--bias"), value)
    if rule:
        policy = replace(policy, rule=rule)
    return policy


def _split(item: str, option: str, allow_bare: bool = False) -> tuple[str | None, float]:
    name, sep, raw = item.rpartition("=")
    if not sep:
        if not allow_bare:
            raise PolicyError(f"{option} {item!r}: expected CATEGORY=VALUE")
        name, raw = None, item
    try:
        return (name.strip() if name is not None else None), float(raw)
    except ValueError:
        raise PolicyError(f"{option} {item!r}: {raw!r} is not a number") from None


def sampling_options(func):
    """--temperature, --top-p, --top-k, --min-p, --repeat-penalty, --seed, --max-tokens: how the answer is decoded."""

    @click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True,
                  help="Sampling temperature of the answer (0: greedy).")
    @click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True)
    @click.option("--top-k", type=click.IntRange(min=0), default=40, show_default=True)
    @click.option("--min-p", type=click.FloatRange(0, 1), default=0.05, show_default=True)
    @click.option("--repeat-penalty", type=click.FloatRange(min=0, min_open=True), default=1.1, show_default=True)
    @click.option("--seed", type=int, default=None, help="Seed for reproducible sampling.")
    @click.option("--max-tokens", type=click.IntRange(min=0), default=512, show_default=True)
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def sampling_params(temperature, top_p, top_k, min_p, repeat_penalty, seed, max_tokens, stop=()):
    from .backend import SamplingParams

    return SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                          repeat_penalty=repeat_penalty, seed=seed, max_tokens=max_tokens, stop=tuple(stop))


def split_model_argument(args: tuple[str, ...], model: str | None) -> tuple[str | None, tuple[str, ...]]:
    """`decide [MODEL] [PROMPT ...]`: the first word is the model when it names a GGUF (path or hub file)."""
    if model or not args:
        return model, args
    first = args[0]
    if first.lower().endswith(".gguf") or (Path(first).expanduser().is_file() and len(args) > 1):
        return first, args[1:]
    return None, args
