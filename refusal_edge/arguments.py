"""What the CLI's arguments mean, without click: the model argument, the policy options, a [MODEL] ARGS split.

Shared by the CLI verbs and the evaluation pipeline; the click decorators themselves live in ``options``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from . import hub, settings
from .catalog import DEFAULT_NAME, MODEL_ENV, find, hub_file, hub_repo, names_a_model
from .errors import ModelLoadError, PolicyError
from .files import is_checkpoint_dir
from .gguf_header import starts_like_gguf
from .policy import RESPOND, Policy, resolve_category


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """The one place a model argument becomes a file: a GGUF path; ``owner/repo/file.gguf`` (or
    ``owner/repo:file.gguf``) from the Hugging Face hub, taken from its cache when there; a name `refusal-edge list`
    shows (catalog.py); ``default`` or nothing: ``$REFUSAL_EDGE_MODEL``, then the embedded default model."""
    model = os.fspath(model) if model is not None else None
    if not model or model == DEFAULT_NAME:
        model = os.environ.get(MODEL_ENV)
        if not model or model == DEFAULT_NAME:
            from .default_model import ensure_default_model

            return ensure_default_model()
    path = Path(model).expanduser()
    if path.exists():
        return path
    file = hub_file(model)
    if file is not None:
        return hub.fetch(file)[0]
    if hub_repo(model):
        raise ModelLoadError(f"{model} is a repository: name its file (owner/repo/file.gguf), or run "
                             f"`refusal-edge pull {model}`, which picks its GGUF")
    if model.lower().endswith(".gguf") or os.sep in model or "/" in model:
        raise ModelLoadError(f"model file not found: {model}")
    return find(model).path


ENGINE_KEY_ENV = "REFUSAL_EDGE_ENGINE_API_KEY"


@dataclass(frozen=True)
class EngineTarget:
    """--engine URL and its companions: run the model on a remote engine instead of in-process."""

    url: str
    model: str | None = None
    api_key: str | None = None
    concurrency: int | None = None  # scoring requests in flight (eval, calibrate); None: the engine's slots
    timeout: float = 60.0  # seconds one engine request may take, its retries included (--engine-timeout)


@dataclass(frozen=True)
class ModelOptions:
    """Which model a verb runs and how: the model argument (or -m) and the options of ``options.model_options``, one
    value from the CLI down to the evaluation pipeline and the Ray workers (a new model option is a field here)."""

    source: str | None = None  # a GGUF path or hub file; None: $REFUSAL_EDGE_MODEL, then the embedded default model
    n_gpu_layers: int = 0
    threads: int | None = None  # None: every core (llama.cpp's own choice)
    n_ctx: int = settings.N_CTX
    verbose: bool = False
    remote: EngineTarget | None = None  # run on this engine instead of in-process (MODEL is then read for its vocabulary)
    predict_decision: bool | None = None  # evaluate the expected decision token with the prompt; None: where it pays

    def path(self) -> Path:
        """The model file ``source`` names (fetched from the hub, or the default model built, if need be)."""
        return resolve_model_path(self.source)

    def naming(self, source: str | os.PathLike | None) -> "ModelOptions":
        """These options with the model ``source`` (a positional MODEL, a resolved path); None keeps the current one."""
        return self if source is None else replace(self, source=str(source))

    def load(self):
        """The model in-process, or on the ``remote`` engine."""
        from .model import RefusalModel

        path = self.path()
        if self.remote is not None:
            r = self.remote
            return RefusalModel.connect(r.url, path, model=r.model, api_key=r.api_key, concurrency=r.concurrency,
                                        timeout=r.timeout, verbose=self.verbose)
        return RefusalModel.load(path, n_ctx=self.n_ctx, n_threads=self.threads, n_gpu_layers=self.n_gpu_layers,
                                 verbose=self.verbose, predict_decision=self.predict_decision)


@dataclass(frozen=True)
class PolicyOptions:
    """--policy FILE, --rule, --threshold and --bias as one value; ``build`` applies them to a model's categories."""

    policy_file: str | os.PathLike | None = None
    rule: str | None = None
    thresholds: tuple[str, ...] = ()  # CATEGORY=VALUE words, as policy_setting reads them
    biases: tuple[str, ...] = ()

    def build(self, categories, default: Policy) -> Policy:
        """The model's default (or the file), then --rule, --threshold and --bias on top."""
        policy = Policy.load(self.policy_file, categories) if self.policy_file else default
        for item in self.thresholds:
            policy = policy_setting(policy, "threshold", item, categories, "--threshold")[0]
        for item in self.biases:
            policy = policy_setting(policy, "bias", item, categories, "--bias")[0]
        if self.rule:
            policy = replace(policy, rule=self.rule)
        return policy


def policy_setting(policy: Policy, kind: str, item: str, categories, option: str) -> tuple[Policy, str | None, float]:
    """One threshold or bias (``kind``) as the CLI's --threshold/--bias and chat's /threshold and /bias take it, one
    grammar for both: ``CATEGORY=VALUE`` or ``CATEGORY VALUE``, CATEGORY a category's name or a case-insensitive
    prefix or word of it (``safety``; for a bias also ``respond``); for a threshold also a bare ``VALUE``, the
    default threshold (the binary rule's). Returns the policy with it set, the category (None: the default
    threshold) and the value; ``option`` names the option in errors."""
    if kind not in ("threshold", "bias"):
        raise ValueError(f"kind must be 'threshold' or 'bias', got {kind!r}")
    bare = kind == "threshold"
    name, sep, raw = item.rpartition("=")
    if not sep:  # CATEGORY VALUE: the last word is the value
        words = item.split()
        name, raw = " ".join(words[:-1]), (words[-1] if words else "")
    name = name.strip()
    if not name and (sep or not bare):
        usage = "CATEGORY VALUE, or CATEGORY=VALUE" + (", or VALUE (the default threshold)" if bare else "")
        raise PolicyError(f"usage: {option} {usage}; got {item!r}")
    try:
        value = float(raw)
    except ValueError:
        raise PolicyError(f"{option} {item!r}: {raw.strip()!r} is not a number") from None
    if not name:
        return replace(policy, threshold=value), None, value
    if kind == "threshold":
        category = resolve_category(name, categories, option)
        return policy.with_threshold(category, value), category, value
    category = resolve_category(name, (*categories, RESPOND), option)
    return policy.with_bias(category, value), category, value


def split_model_argument(args: Sequence[str], model: str | None = None) -> tuple[str | None, tuple[str, ...]]:
    """`VERB [MODEL] ARGS...` (decide's prompts, eval's data files): the first word is the model when it names a
    GGUF: a ``.gguf`` path or hub file, or (with more words after it) an existing file that starts like a GGUF, a
    Hugging Face checkpoint directory holding config.json (a tokenizer source for ``--engine``), ``default`` or a
    ``name:tag`` `refusal-edge list` shows."""
    args = tuple(args)
    if model or not args:
        return model, args
    first = args[0]
    path = Path(first).expanduser()
    if first.lower().endswith(".gguf") or (len(args) > 1 and (starts_like_gguf(path) or is_checkpoint_dir(path)
                                                              or names_a_model(first))):
        return first, args[1:]
    return None, args

