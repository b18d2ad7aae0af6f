"""What an engine's numbers and token ids may be, checked before they reach a decision or the tokenizer.

A remote engine is trusted to run the model, not to be right: a bug, a proxy or a hostile engine can send a
probability of 1e300, a log-probability of +50 or a token id past the vocabulary. The first would become a
confident [respond] (the refusal mass is 1 minus the reported one), the last aborts llama.cpp (std::out_of_range).
Every such answer is an EngineError (CLI exit 1, server 502), never a decision.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

from .errors import EngineError

LOGPROB_SLACK = 1e-4  # float32 rounding may report log(1) a hair above 0
MASS_SLACK = 1e-3  # reported probabilities, each rounded to float32, may sum a little over 1
FLOAT32_LOWEST = -float(np.finfo(np.float32).max)  # engines compute softmaxes in float32: nothing finite is below


def real(value: object, what: str) -> float:
    """A JSON number (not a bool, not a string such as "nan"), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EngineError(f"the engine reported {what} {value!r}, which is not a number: no decision is taken")
    try:
        return float(value)
    except OverflowError:
        raise EngineError(f"the engine reported {what} as an integer too large for any probability") from None


def probability_as_logprob(value: object) -> float:
    """llama-server's ``prob``: in [0, 1] (a hair over for float32 rounding), as a log-probability."""
    p = real(value, "a probability")
    if not 0.0 <= p <= 1.0 + MASS_SLACK:  # also NaN and infinities
        raise EngineError(f"the engine reported a probability of {p!r}, outside [0, 1]: no decision is taken")
    return math.log(min(p, 1.0)) if p > 0 else -math.inf


def check_logprobs(logprobs: Mapping[int, float], n_vocab: int | None) -> None:
    """Every reported log-probability is one a softmax can produce, for a token of the vocabulary, and together
    they hold at most the whole probability mass."""
    for token, value in logprobs.items():
        token_id(token, n_vocab, "a log-probability")
        if math.isnan(value) or value > LOGPROB_SLACK or (value != -math.inf and value < FLOAT32_LOWEST):
            raise EngineError(f"the engine reported log-probability {value!r} for token {token}, which no softmax "
                              "gives (non-finite, above 0, or below float32's range): no decision is taken")
    finite = [v for v in logprobs.values() if v > -math.inf]
    if finite and float(np.logaddexp.reduce(finite)) > math.log1p(MASS_SLACK):
        total = float(np.exp(np.logaddexp.reduce(finite)))
        raise EngineError(f"the engine's reported probabilities sum to {total:.6g}, over 1: no decision is taken")


def count(value: object, what: str, where: str, default: int = 0, most: int | None = None) -> int:
    """A count the engine reports about itself (context length, vocabulary size, slots): a non-negative integer,
    ``default`` where it says nothing, at most ``most`` (a slot count of 10**9 is served as ``most``)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EngineError(f"{where} reported {what} {repr(value)[:40]}, which is not a count")
    return value if most is None else min(value, most)


def vocab_size(tokenizer) -> int | None:
    """The vocabulary engine token ids must lie in: ours (connect checked the engine's against it)."""
    return getattr(tokenizer, "n_vocab", None)


def token_id(value: object, n_vocab: int | None, what: str = "a token") -> int:
    """A token id from the engine, inside the vocabulary (checked before any tokenizer call sees it)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 \
            or (n_vocab is not None and value >= n_vocab):
        limit = f"[0, {n_vocab})" if n_vocab is not None else "the vocabulary"
        raise EngineError(f"the engine sent {what} id {value!r}, outside {limit}: is it serving another model?")
    return value


def tokens_of(value: object, url: str) -> list:
    """/tokenize's ``tokens``: a list (the ids in it are checked by ``token_ids``)."""
    if not isinstance(value, list):
        raise EngineError(f"engine {url} answered /tokenize without a list of tokens")
    return value


def token_ids(values: Iterable[object], n_vocab: int | None, what: str = "a token") -> list[int]:
    return [token_id(v, n_vocab, what) for v in values]


def check_top_report(logprobs: Mapping[int, float], asked: int, n_vocab: int | None, where: str) -> None:
    """A top-``asked`` report is one a softmax over ``n_vocab`` tokens gives: as many entries as asked for (fewer
    only when the rest have probability 0, so the reported ones hold the whole mass), and the n most probable of
    n_vocab tokens hold at least n / n_vocab of the mass. An engine ignoring ``n_probs``/``logprobs``, or reporting
    other tokens than its top ones, fails here before a bound is ever taken from its smallest entry."""
    n = len(logprobs)
    finite = [v for v in logprobs.values() if v > -math.inf]
    mass = float(np.logaddexp.reduce(finite)) if finite else -math.inf
    expected = min(asked, n_vocab) if n_vocab else asked
    if n < expected and mass < math.log1p(-MASS_SLACK):
        raise EngineError(f"{where} reported {n} probabilities where {asked} were asked for, holding "
                          f"{math.exp(mass):.3g} of the mass: it does not honour n_probs/logprobs, so no decision "
                          "is taken (see docs/engines.md)")
    if n_vocab and n and mass < math.log(n / n_vocab) + math.log1p(-MASS_SLACK):
        raise EngineError(f"{where} reported a top {n} holding {math.exp(mass):.3g} of the mass, less than the "
                          f"{n / n_vocab:.3g} any {n} most probable of {n_vocab} tokens hold: these are not its top "
                          "probabilities, so no decision is taken (see docs/engines.md)")
