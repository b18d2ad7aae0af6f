"""Requests that ask for a window over a long conversation instead of an error when it outgrows the context.

OpenAI's chat completions keep OpenAI's behaviour unless asked: a prompt over the context is a 400
``context_length_exceeded`` with the counts. ``"truncation": "auto"`` (the name OpenAI's Responses API gives the
same choice; the dials page sends it) leaves out the oldest whole turns so that the prompt and ``max_tokens`` fit.
Ollama's endpoints do what Ollama does (server/prompt.go ``chatPrompt``): unless ``"truncate": false``, the oldest
messages are left out one at a time until the prompt fits ``num_ctx``, system messages and the latest message
always kept. Either way the decision is made on the window sent, and its ``refusal`` payload says what was left out
(``meta.dropped_turns``, ``meta.dropped_messages``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

from ..decision import Decision

SERVER_CONTEXT_OPTION = "refusal-edge serve --ctx"  # how a server's operator raises the context


@dataclass(frozen=True)
class Truncation:
    drop: str  # "turns" (OpenAI's truncation "auto", the page) or "messages" (Ollama)
    reserve_answer: bool = True  # leave max_tokens of room (OpenAI); Ollama fits the prompt alone
    n_ctx: int | None = None  # a smaller context the request asks for (Ollama's options.num_ctx)
    option: str = SERVER_CONTEXT_OPTION  # named when even the current message does not fit

    def run(self, model, messages: list[dict], policy, sampling) -> Iterator:
        """What a slot does with the request: the window's Decision (saying what was left out), then Chunks."""
        window = model.fit(messages, sampling.max_tokens if self.reserve_answer else 0, n_ctx=self.n_ctx,
                           drop=self.drop, option=self.option)
        events = model.stream(window.messages, policy, sampling=sampling)
        try:
            for event in events:
                if isinstance(event, Decision) and window.dropped_messages:
                    event = replace(event, meta={**event.meta, "dropped_turns": window.dropped_turns,
                                                 "dropped_messages": window.dropped_messages})
                yield event
        finally:
            events.close()
