"""The engine seam: everything refusal-edge needs from whatever runs the model, and nothing more.

Above the seam refusal-edge owns the chat template, tokenization policy (which text may hold control tokens),
the policy and the decision, text streaming, stop strings and history (``model.py``, ``evaluate/``, ``server/``,
``chat.py``, ``convert/verify.py``). Below it an engine runs the model. Prompts cross the seam as token ids, so
no caller-supplied text can become a control token whatever the engine.

An engine is two parts, kept separable because a remote engine takes its vocabulary from a local,
vocabulary-only load of the served model while the model runs elsewhere:

- a ``Tokenizer``: the vocabulary facts (tokenization, pieces, control/end-of-generation flags, metadata);
- an ``Engine``: scores the first response position of a token sequence and continues from a sequence.

The in-process llama.cpp engine (``backend.LlamaBackend``) is the default. A new engine subclasses these two and
is handed to ``RefusalModel.from_engine``; nothing above the seam changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence, Union

from .decision import FirstTokenScores
from .errors import RefusalEdgeError
from .metadata import RefusalSpec
from .sampling import SamplingParams


class Tokenizer(ABC):
    """The served model's vocabulary. Token ids are ints in ``range(n_vocab)``."""

    name: str  # shown to users: the model's file stem, or the served model's name
    n_vocab: int
    metadata: Mapping[str, str]  # GGUF key/values as strings (refusal.spec, tokenizer.chat_template, ...)

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

    @abstractmethod
    def score(self, tokens: Sequence[int], spec: RefusalSpec, temperature: float = 1.0) -> Scored:
        """The first-response-position scores after ``tokens``: a full-vocabulary softmax of the raw logits at
        ``temperature``, reduced to what the decision needs (``FirstTokenScores.from_logits`` does that from a
        logits row). Raises ``PromptTooLongError`` when ``tokens`` does not fit the context."""

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
            try:
                yield self.score(tokens, spec, temperature)
            except RefusalEdgeError as exc:
                yield exc

    @abstractmethod
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

    def close(self) -> None:
        """Free what the engine holds; the default holds nothing."""
