"""OpenAI's chat-completions wire shapes: a whole answer (``chat.completion``), the chunks of a streamed one
(``chat.completion.chunk``) and the usage counts; the decision rides in the answer's (or the first chunk's)
``refusal`` field. Requests are read in requests.py, errors shaped in errors.py; ollama_wire.py is Ollama's."""

from __future__ import annotations

from ..decision import Decision, assistant_message


def usage(decision: Decision, completion_tokens: int, prompt_tokens: int | None = None) -> dict:
    """``prompt_tokens``: the answering engine's count where another engine than the decision model answered."""
    prompt_tokens = decision.prompt_tokens if prompt_tokens is None else prompt_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": decision.cached_tokens},  # the KV-cache prefix that was reused
    }


def completion(head: dict, decision: Decision, text: str, finish_reason: str, completion_tokens: int,
               refusal_message: bool = True, prompt_tokens: int | None = None) -> dict:
    message = {**assistant_message(text, decision), "refusal": refusal_text(text, decision, refusal_message)}
    return {
        **head, "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage(decision, completion_tokens, prompt_tokens),
        "refusal": decision.to_dict(),  # the refusal extension: token, category, probabilities, policy, timings
    }


def refusal_text(text: str, decision: Decision, enabled: bool) -> str | None:
    """OpenAI's ``message.refusal`` (and ``delta.refusal``): the text of a refused answer, so that clients that look
    there (LangChain's ``additional_kwargs["refusal"]``, the SDK's ``parse()``) see the refusal; ``content`` holds the
    same text for clients that only read content. None for an answer, or when the server turns it off
    (``refusal-edge serve --no-refusal-message``)."""
    return text if enabled and decision.refused else None


def chunk(head: dict, delta: dict, finish_reason: str | None = None, **extra) -> dict:
    return {**head, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **extra}


def first_delta(decision: Decision) -> dict:
    """The opening delta: the role, and the decision token a client should echo back with this turn."""
    return assistant_message("", decision)


def usage_chunk(head: dict, decision: Decision, completion_tokens: int, prompt_tokens: int | None = None) -> dict:
    """The last chunk of a stream that asked for usage (``stream_options.include_usage``): no choices."""
    return {**head, "object": "chat.completion.chunk", "choices": [],
            "usage": usage(decision, completion_tokens, prompt_tokens)}
