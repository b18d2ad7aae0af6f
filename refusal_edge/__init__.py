"""refusal-edge: a dial on when a refusal-token language model refuses, on llama.cpp."""

import os

from .aio import AsyncRefusalModel
from .arguments import resolve_model_path
from .decision import Decision, FirstTokenScores, decide
from .errors import (MetadataError, ModelBusyError, ModelLoadError, PolicyError, PromptTooLongError,
                     RefusalEdgeError, SamplingError)
from .metadata import CATEGORIES, RefusalSpec
from .model import Chunk, GenerationResult, RefusalModel
from .policy import RULES, Policy
from .sampling import SamplingParams

__version__ = "0.1.0"


def load(model: str | os.PathLike | None = None, **options) -> RefusalModel:
    """Load a model on the in-process llama.cpp engine: a GGUF path, ``owner/repo/file.gguf`` from the Hugging Face
    hub, a name `refusal-edge list` shows, ``"default"`` or nothing (``$REFUSAL_EDGE_MODEL``, else the embedded
    default model). ``options`` are ``RefusalModel.load``'s (``n_ctx``, ``n_threads``, ...)."""
    return RefusalModel.load(resolve_model_path(model), **options)


__all__ = [
    "AsyncRefusalModel", "CATEGORIES", "RULES", "Chunk", "Decision", "FirstTokenScores", "GenerationResult",
    "MetadataError", "ModelBusyError", "ModelLoadError", "Policy", "PolicyError", "PromptTooLongError",
    "RefusalEdgeError", "RefusalModel", "RefusalSpec", "SamplingError", "SamplingParams", "decide", "load",
    "__version__",
]
