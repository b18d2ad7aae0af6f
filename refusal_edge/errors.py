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


class SamplingError(RefusalEdgeError, ValueError):
    """A sampling parameter of the wrong type or out of its range (``sampling.SamplingParams`` checks them all).

    It keeps the field (``top_p``) apart from the problem (``must be a number in (0, 1], got 0``), so that each
    interface names the field as its users spell it (``naming``): ``--top-p`` on the CLI, ``'top_p'`` in OpenAI's
    API, ``'options.top_p'`` in Ollama's."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem

    def naming(self, name: str) -> str:
        return f"{name} {self.problem}"


class PromptTooLongError(RefusalEdgeError):
    """The rendered prompt does not fit in the context window. Where the context is ours to raise, the error keeps
    its counts, so that each interface can name its own way to raise it (``naming``)."""

    def __init__(self, message: str, prompt_tokens: int | None = None, n_ctx: int | None = None,
                 what: str = "the prompt", option: str | None = None) -> None:
        super().__init__(message)
        self.prompt_tokens, self.n_ctx, self.what, self.option = prompt_tokens, n_ctx, what, option

    @classmethod
    def counts(cls, prompt_tokens: int, n_ctx: int, option: str = "n_ctx", what: str = "the prompt"):
        return cls(f"{what} is {prompt_tokens} tokens, the context holds {n_ctx}: shorten it or raise {option}",
                   prompt_tokens, n_ctx, what, option)

    def naming(self, option: str) -> str:
        """The message with ``option`` (``--ctx`` on the CLI, the server's flag on the server) as the remedy,
        unless it names no option (an engine's own limit, a context full mid-answer) or already names one other
        than Python's ``n_ctx``."""
        if self.option != "n_ctx":
            return str(self)
        return str(self.counts(self.prompt_tokens, self.n_ctx, option, self.what))


class NonFiniteScoresError(RefusalEdgeError):
    """The first-token scores hold NaN or infinity: no decision is made from them (the decision fails closed)."""


class ModelBusyError(RefusalEdgeError):
    """Another caller holds the model (a call or an open stream) and this one asked not to wait, or not that long."""


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut short when a client sent something huge (a 400-digit integer)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit // 2]}... ({len(text)} characters)"
