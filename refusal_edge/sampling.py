"""Sampling parameters of the answer after the decision token, and the one place their defaults live.

Plain data, no llama.cpp: the server's wire format and the CLI build these without importing the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SamplingParams:
    """How an answer is decoded; ``temperature == 0`` decodes greedily. The defaults are llama.cpp's own (its
    ``create_completion``) and serve the Python API; see CLI_DEFAULTS and SERVER_DEFAULTS for the other surfaces."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    max_tokens: int = 512
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if not self.temperature >= 0:
            problems.append(f"temperature {self.temperature!r} must be >= 0")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p {self.top_p!r} must be in (0, 1]")
        if not 0 <= self.min_p <= 1:
            problems.append(f"min_p {self.min_p!r} must be in [0, 1]")
        if self.top_k < 0:
            problems.append(f"top_k {self.top_k!r} must be >= 0")
        if self.max_tokens < 0:
            problems.append(f"max_tokens {self.max_tokens!r} must be >= 0")
        if not self.repeat_penalty > 0:
            problems.append(f"repeat_penalty {self.repeat_penalty!r} must be > 0")
        if problems:
            raise ValueError("; ".join(problems))
        object.__setattr__(self, "stop", tuple([self.stop] if isinstance(self.stop, str) else self.stop))


# Each surface starts from the same defaults and differs only where its users expect something else:
# - the CLI chats with small local models, where a cooler temperature and a mild repeat penalty (llama.cpp's own
#   chat CLI's long-standing values) keep short answers from looping;
# - the server speaks OpenAI's API, so the fields OpenAI defines take OpenAI's defaults (temperature 1, top_p 1);
#   its llama.cpp extensions (top_k, min_p, repeat_penalty) keep llama.cpp's, as llama.cpp's own server does.
CLI_DEFAULTS = replace(SamplingParams(), temperature=0.7, repeat_penalty=1.1)
SERVER_DEFAULTS = replace(SamplingParams(), temperature=1.0, top_p=1.0)
