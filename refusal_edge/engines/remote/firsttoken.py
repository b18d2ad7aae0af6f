"""First-token scores from what a remote engine reports: log-probabilities of some tokens, not a logits row.

Every engine here reports a softmax over the FULL vocabulary (llama-server at the request's temperature, vLLM at
temperature 1), but only for some tokens: the ones asked for (vLLM's ``logprob_token_ids``) or the top k. Softmax
is shift-invariant, so those log-probabilities serve as logits; what the decision also needs is the mass of every
other token, which is 1 minus the decision tokens' mass. That is exact (to the engine's float32) when every decision
token was reported. A decision token outside the top k is known only to lie below the smallest reported
probability: its score is then that upper bound, and the scores say ``exact=False`` ("bounded"). Only a refusal
token may be bounded: a bound overstates its token, which for a refusal token errs towards refusing, but for
``[respond]`` would open the gate on a number the engine never showed, so a missing respond token is an EngineError.

Pure functions: no HTTP in here, so each rule is testable with numbers alone.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ...decision import FirstTokenScores
from ...metadata import RefusalSpec
from .checks import LOGPROB_SLACK, MASS_SLACK, check_logprobs
from .errors import EngineError


def scores_from_logprobs(logprobs: Mapping[int, float], spec: RefusalSpec, temperature: float = 1.0,
                         upper_bound: float | None = None, n_vocab: int | None = None) -> FirstTokenScores:
    """Scores from ``logprobs`` (token id -> log-probability in the engine's softmax at ``temperature``).

    Refusal tokens missing from ``logprobs`` take ``upper_bound`` (the log-probability no unreported token can
    exceed) and make the scores bounded; without a bound a missing refusal token, and a missing respond token in
    any case, is an error. Numbers no softmax gives (checks.py) are an EngineError, never a decision.
    """
    check_logprobs(logprobs, n_vocab)
    logprobs = {token: min(float(v), 0.0) for token, v in logprobs.items()}  # a hair over 0 is float32 rounding
    if upper_bound is not None and (math.isnan(upper_bound) or upper_bound > LOGPROB_SLACK):
        raise EngineError(f"the engine's answers bound unreported tokens at log-probability {upper_bound!r}, which "
                          "no softmax gives: no decision is taken")
    ids = spec.token_ids
    decision_ids = set(ids)
    exact = True
    dec = []
    for token in ids:
        value = logprobs.get(token, -math.inf)
        if value == -math.inf:  # not reported (or reported as probability 0, an underflow)
            if token == spec.respond.id:
                raise EngineError(f"the engine reported no probability for the respond token (id {token}); its "
                                  "upper bound would overstate [respond], so no decision is taken")
            if upper_bound is None or not math.isfinite(upper_bound):
                raise EngineError(f"the engine reported no probability for decision token {token} and no bound")
            value, exact = float(upper_bound), False
        dec.append(value)
    dec = np.asarray(dec, dtype=np.float64)
    rest = {t: float(v) for t, v in logprobs.items() if t not in decision_ids and v > -math.inf}
    # The other tokens' mass: 1 - sum(decision), written so that it keeps its precision when small, but never below
    # what the reported non-decision tokens alone hold (the engine's float32 rounding can push 1 - sum to zero).
    decision_lse = float(np.logaddexp.reduce(dec))
    reported_rest = float(np.logaddexp.reduce(list(rest.values()))) if rest else -math.inf
    if not np.exp(dec).any() and reported_rest < math.log1p(-MASS_SLACK):
        # Every decision token at probability 0 (to float64) is only believable when the reported tokens hold the
        # whole mass; otherwise the decision would be taken from zeros alone.
        raise EngineError(f"the engine gave every decision token probability 0 while the tokens it reported hold "
                          f"{math.exp(reported_rest):.6g} of the mass: no decision is taken")
    complement = math.log(-math.expm1(decision_lse)) if decision_lse < 0 else -math.inf
    rest_lse = max(complement, reported_rest)
    if rest:
        top_rest_id = max(rest, key=rest.get)
        top_rest = rest[top_rest_id]
    else:  # no other token reported: the best of them holds at most the whole rest mass
        top_rest_id, top_rest, exact = -1, rest_lse, False
    if not math.isfinite(rest_lse):
        rest_lse, exact = float(np.log(np.finfo(np.float32).tiny)), False
        top_rest = min(top_rest, rest_lse) if math.isfinite(top_rest) else rest_lse
    t = float(temperature)
    # FirstTokenScores holds raw logits and divides by the temperature itself; log-probabilities at temperature t
    # are logits / t shifted by a constant, so multiplying by t gives logits shifted by a constant (harmless).
    return FirstTokenScores(dec * t, rest_lse, int(top_rest_id), top_rest * t, t, exact)


def unbias(biased_logprobs: Mapping[int, float], biased: set[int] | frozenset[int], bias: float, temperature: float,
           anchor: int, anchor_logprob: float) -> dict[int, float]:
    """Undo a logit bias: log-probabilities from a request that added ``bias`` to the ``biased`` tokens, mapped into the
    unbiased softmax through a token that was not biased (``anchor``, whose unbiased log-probability is known).

    Biasing token j by b multiplies its weight by exp(b / T) and changes the normaliser; the anchor's
    log-probability in both requests gives the normaliser's change exactly, so for each biased token
    ``log p_j = log q_j - b / T + (log p_anchor - log q_anchor)``.
    """
    shift = anchor_logprob - biased_logprobs[anchor]
    return {token: value - bias / temperature + shift for token, value in biased_logprobs.items()
            if token in biased and value > -math.inf}
