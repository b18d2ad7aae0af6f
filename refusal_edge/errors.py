"""Every failure a user can cause surfaces as one of these, with a message naming the problem."""


class RefusalEdgeError(Exception):
    """Base class: the CLI turns it into a one-line message and exit code 1."""


class ModelLoadError(RefusalEdgeError):
    """The model file is missing, not a GGUF, truncated, or llama.cpp refused it."""


class GGUFFormatError(ModelLoadError):
    """A GGUF header is missing, truncated or malformed."""


class MetadataError(RefusalEdgeError):
    """The refusal metadata is absent, malformed, or contradicts the vocabulary."""


class PolicyError(RefusalEdgeError, ValueError):
    """A policy names an unknown category or holds an out-of-range value."""


class PromptTooLongError(RefusalEdgeError):
    """The rendered prompt does not fit in the context window."""


class NonFiniteScoresError(RefusalEdgeError):
    """The first-token scores hold NaN or infinity: no decision is made from them (the decision fails closed)."""


class ModelBusyError(RefusalEdgeError):
    """Another caller holds the model (a call or an open stream) and this one asked not to wait, or not that long."""
