"""Optional dependencies: which extra installs a missing module, and the one-line message that says how.

Every verb reaches its optional modules lazily; when one is missing, the user sees the exact
``pip install 'refusal-edge[...]'`` that fixes it, never a traceback. The CLI applies this to every verb at dispatch
(`cli.LazyGroup`); library code that wants its own error type (a remote engine's EngineError) builds its message here.
tests/test_extras.py keeps this table honest against pyproject.toml.
"""

from __future__ import annotations

PROJECT = "refusal-edge"

# Top-level module -> the extra whose requirements provide it. torch and transformers point at `train`, the extra
# that holds every workstation-side dependency, so that installing it never leaves the next module missing.
EXTRA_FOR_MODULE = {
    "starlette": "serve",
    "uvicorn": "serve",
    "httpx": "remote",
    "matplotlib": "plot",
    "sentencepiece": "convert",
    "safetensors": "convert",
    "torch": "train",
    "transformers": "train",
    "accelerate": "train",
    "peft": "train",
    "ray": "ray",
}


def install_hint(extra: str) -> str:
    """The command that installs ``extra``, quoted for a POSIX shell (brackets are glob characters)."""
    return f"pip install '{PROJECT}[{extra}]'"


def extra_for(module: str | None) -> str | None:
    """The extra that provides ``module`` (a dotted name is looked up by its top-level package), or None."""
    if not module:
        return None
    return EXTRA_FOR_MODULE.get(module.partition(".")[0])


def missing_message(module: str, needed_by: str) -> str:
    """``<needed_by> needs <module>, which is not installed: pip install 'refusal-edge[<extra>]'``."""
    top = module.partition(".")[0]
    extra = extra_for(top)
    if extra is None:
        raise KeyError(f"{top} belongs to no extra of {PROJECT}")
    return f"{needed_by} needs {top}, which is not installed: {install_hint(extra)}"
