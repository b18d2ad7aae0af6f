"""refusal-edge: a dial on when a refusal-token language model refuses, on llama.cpp."""

from .aio import AsyncRefusalModel
from .answer_engine import AnswerEngine, AnswerEngineError
from .decision import Decision, FirstTokenScores, decide
from .guarded import GuardedModel
from .errors import (MetadataError, ModelBusyError, ModelLoadError, PolicyError, PromptTooLongError,
                     RefusalEdgeError, SamplingError)
from .metadata import CATEGORIES, RefusalSpec
from .model import Chunk, GenerationResult, RefusalModel
from .policy import RULES, Policy
from .sampling import SamplingParams

__version__ = "0.1.0"

load = RefusalModel.load

__all__ = [
    "AnswerEngine", "AnswerEngineError", "AsyncRefusalModel", "CATEGORIES", "RULES", "Chunk", "Decision",
    "FirstTokenScores", "GenerationResult", "GuardedModel", "MetadataError", "ModelBusyError", "ModelLoadError",
    "Policy", "PolicyError", "PromptTooLongError", "RefusalEdgeError", "RefusalModel", "RefusalSpec", "SamplingError",
    "SamplingParams", "decide", "load", "__version__",
]
