"""The engine seam: everything refusal-edge needs from whatever runs the model, and nothing more.

Above the seam refusal-edge owns the chat template, tokenization policy (which text may hold control tokens),
the policy and the decision, text streaming, stop strings and history (``model.py``, ``evaluate/``, ``server/``,
``cli_chat.py``, ``convert/verify.py``). Below it an engine runs the model. Prompts cross the seam as token ids, so
no caller-supplied text can become a control token whatever the engine.

An engine is two parts, kept separable because a remote engine takes its vocabulary from a local,
vocabulary-only load of the served model while the model runs elsewhere:

- a ``Tokenizer``: the vocabulary facts (tokenization, pieces, control/end-of-generation flags, metadata);
- an ``Engine``: scores the first response position of a token sequence and continues from a sequence.

An engine holds its tokenizer as a member (``engine.tokenizer``). The engines live one package each under
``engines/``: the in-process llama.cpp engine (``engines/llama``, ``LlamaEngine``) is the default, the remote one
is ``engines/remote``. A new engine is one more package there, subclassing these two, handed to
``RefusalModel.from_engine``; nothing above the seam changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import numpy as np

from .decision import FirstTokenScores
from .errors import PromptTooLongError, RefusalEdgeError
from .metadata import RefusalSpec
from .sampling import SamplingParams


class Tokenizer(ABC):
    """The served model's vocabulary. Token ids are ints in ``range(n_vocab)``."""

    name: str  # shown to users: the model's file stem, or the served model's name
    n_vocab: int
    metadata: Mapping[str, str]  # GGUF key/values as strings (refusal.spec, tokenizer.chat_template, ...)
    path: Path | None = None  # the GGUF file the vocabulary was read from, where there is one

    @abstractmethod
    def tokenize(self, text: str, special: bool) -> list[int]:
        """Token ids of ``text``, no BOS added. ``special=False`` for caller-supplied text: it never yields a
        control token."""

    @abstractmethod
    def piece(self, token: int) -> bytes:
        """The bytes a token contributes to output text; control tokens contribute none."""

    @abstractmethod
    def token_text(self, token: int) -> str:
        """The vocabulary entry as written (control tokens included), for the spec check and display."""

    @abstractmethod
    def is_control(self, token: int) -> bool: ...

    @abstractmethod
    def is_eog(self, token: int) -> bool:
        """End of generation: the answer stops here."""

    @property
    @abstractmethod
    def bos(self) -> int:
        """Beginning-of-sequence id, or -1 when the vocabulary has none."""

    @property
    @abstractmethod
    def eos(self) -> int: ...

    @property
    @abstractmethod
    def add_bos(self) -> bool:
        """Whether a prompt starts with BOS."""

    def vocabulary(self) -> dict[str, int]:
        return {self.token_text(i): i for i in range(self.n_vocab)}


@dataclass(frozen=True)
class PrefillStats:
    """What scoring one prompt cost: its length, how much of it came from a cached prefix, and the time."""

    prompt_tokens: int
    reused_tokens: int
    prefill_ms: float


Scored = tuple[FirstTokenScores, PrefillStats]


class Engine(ABC):
    """Runs the model on token ids. Not thread-safe unless an implementation says so (``thread_safe``): then
    ``RefusalModel`` serializes its callers (access.py)."""

    tokenizer: Tokenizer
    n_ctx: int  # tokens a sequence (prompt and answer) may hold
    concurrency: int = 1  # requests it serves at once (thread-safe engines only; a remote engine: its slots)
    thread_safe: bool = False  # True: several threads may score and generate through it at once

    @property
    def identity(self) -> str | None:
        """What its scores depend on besides the model file, so that stored scores of different engines never mix:
        None for an in-process engine (the file says it all); a remote engine names itself and the served model."""
        return None

    # What every engine does alike lives here (template methods); an engine implements ``score_fitting`` and
    # ``continue_from``, and says how its context is raised (``prompt_too_long``) and which errors stop a run.
    run_stopping_errors: tuple[type[BaseException], ...] = ()  # errors of the engine itself, not of one prompt

    def score(self, tokens: Sequence[int], spec: RefusalSpec, temperature: float = 1.0) -> Scored:
        """The first-response-position scores after ``tokens``: a full-vocabulary softmax of the raw logits at
        ``temperature``, reduced to what the decision needs (``FirstTokenScores.from_logits`` does that from a
        logits row). Raises ``PromptTooLongError`` when ``tokens`` does not fit the context."""
        tokens = list(tokens)
        self.check_fits(tokens)
        return self.score_fitting(tokens, spec, temperature)

    @abstractmethod
    def score_fitting(self, tokens: list[int], spec: RefusalSpec, temperature: float) -> Scored:
        """``score`` for a prompt known to fit the context."""

    def prompt_too_long(self, n_tokens: int) -> PromptTooLongError:
        """The error for a prompt of ``n_tokens`` that does not fit: its counts, so each interface names its own
        way to raise the context. An engine whose context is not the caller's to raise says so instead."""
        return PromptTooLongError.counts(n_tokens, self.n_ctx)

    def check_fits(self, tokens: Sequence[int]) -> None:
        """A prompt fits when a response position is left after it."""
        if self.n_ctx and len(tokens) >= self.n_ctx:
            raise self.prompt_too_long(len(tokens))

    def score_or_error(self, tokens: Sequence[int], spec: RefusalSpec,
                       temperature: float = 1.0) -> Union[Scored, RefusalEdgeError]:
        """``score``, or the error of a prompt that cannot be scored in its place (``run_stopping_errors`` raise)."""
        try:
            return self.score(tokens, spec, temperature)
        except self.run_stopping_errors:
            raise
        except RefusalEdgeError as exc:
            return exc

    def score_ahead(self, tokens: Sequence[int], spec: RefusalSpec, temperature: float = 1.0,
                    predicted: int | None = None) -> Scored:
        """``score``, with a hint: the caller expects to ``generate`` from ``[*tokens, predicted]`` next (or from
        ``tokens`` with ``predicted`` as the likely first token). An engine may evaluate the predicted token in the
        same step, so that the first answer token costs no extra step when the hint holds. The hint never changes a
        result; engines that cannot use it (this default) ignore it."""
        return self.score(tokens, spec, temperature)

    def score_many(self, batch: Sequence[Sequence[int]], spec: RefusalSpec,
                   temperature: float = 1.0) -> Iterator[Union[Scored, RefusalEdgeError]]:
        """``score`` for each sequence, yielded in order (so callers store each result as it arrives). A sequence
        that cannot be scored (too long, say) yields its error in its place, so one bad prompt does not sink the
        rest. Batched or concurrent engines override this: they see the whole ordered list at once."""
        for tokens in batch:
            yield self.score_or_error(tokens, spec, temperature)

    def generate(self, tokens: Sequence[int], params: SamplingParams,
                 first_token_bias: Mapping[int, float] | None = None) -> Iterator[int]:
        """Sampled token ids, one at a time, continuing ``tokens``.

        Without ``first_token_bias`` the last of ``tokens`` is the (forced) first response token, and every
        yielded token comes after it. With it, the engine samples the first response token itself from the
        position after ``tokens`` with these logit biases added (the policy's biases on the decision tokens),
        yields it, and continues. The caller ends the stream by closing the iterator (at end of generation, a
        stop string, or its token budget); the engine ends it early only when the context is full (finish
        reason "length"). It never samples more than ``params.max_tokens`` tokens after the first response
        token. Nothing is evaluated until the first token is requested.
        """
        tokens = list(tokens)
        if first_token_bias is None and (params.max_tokens <= 0 or len(tokens) >= self.n_ctx):
            return  # no room for the forced token (or no budget after it): a "length" finish
        yield from self.continue_from(tokens, params, first_token_bias)

    @abstractmethod
    def continue_from(self, tokens: list[int], params: SamplingParams,
                      first_token_bias: Mapping[int, float] | None) -> Iterator[int]:
        """``generate`` once there is room for an answer."""

    def close(self) -> None:
        """Free what the engine holds; the default holds nothing."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share: what a cached prefix saves re-evaluating."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n
