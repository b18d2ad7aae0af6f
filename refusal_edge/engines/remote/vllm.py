"""vLLM's OpenAI-compatible server: the requests it takes and what its answers mean.

Scoring uses ``/v1/completions`` with the prompt as token ids and one generated token. vLLM computes the log-
probabilities it reports from the raw logits, before logit bias and temperature (``--logprobs-mode raw_logprobs``,
its default), so they are the full-vocabulary softmax at temperature 1:

- with ``logprob_token_ids`` (newer vLLM) it reports exactly the decision tokens: exact scores;
- otherwise the top ``logprobs`` (at most the server's ``--max-logprobs``, 20 by default): exact when every decision
  token is among them, else bounded by the smallest reported one. A bias cannot push tokens into a raw top k.
  Only refusal tokens may be bounded (firsttoken.py): a respond token outside the top k is an EngineError.

The one generated token is greedy with the decision tokens biased away, so it is the best other token, whose raw
log-probability vLLM reports as the sampled token's (the natural rule needs it).
"""

from __future__ import annotations

import time
from typing import Iterator, Mapping, Sequence

from ...engine import PrefillStats, Tokenizer
from ...metadata import RefusalSpec
from .errors import EngineError
from .checks import count, tokens_of, check_top_report, real, token_id, token_ids, vocab_size
from .firsttoken import scores_from_logprobs
from .http import EngineHTTPError, HttpClient, too_long_or

KIND = "vllm"
TOKEN_ID_PREFIX = "token_id:"  # how vLLM names tokens with return_tokens_as_token_ids
AWAY = -100.0  # vLLM's most negative logit bias


class VllmDialect:
    kind = KIND

    def __init__(self, http: HttpClient, models: dict, model: str | None, tokenizer: Tokenizer, top_k: int = 20):
        self.http, self.tokenizer, self.top_k = http, tokenizer, top_k
        cards = models.get("data") or []
        card = next((c for c in cards if c.get("id") == model), None) if model else (cards[0] if cards else None)
        if card is None:
            served = ", ".join(repr(c.get("id")) for c in cards) or "nothing"
            raise EngineError(f"vLLM at {http.url} does not serve {model!r} (it serves {served}): "
                              "pass --engine-model with one of those")
        self.model_id = str(card.get("id"))
        self.n_ctx = count(card.get("max_model_len"), "max_model_len", f"vLLM at {http.url}")
        self.n_vocab = None  # vLLM does not say; the decision tokens' ids and the probe tokenization are checked
        self.slots = 16  # vLLM batches whatever is in flight (continuous batching): a default that keeps it busy
        self.token_ids = True  # logprob_token_ids honoured; connect() probes it

    # vocabulary -------------------------------------------------------------------------------
    def tokenize(self, text: str, special: bool) -> list[int]:
        # HF tokenizers always parse added special tokens in text; ``special`` only matters to our own side.
        answer = self.http.post_json("/tokenize", {"model": self.model_id, "prompt": text,
                                                   "add_special_tokens": False}, retry=True)
        return token_ids(tokens_of(answer.get("tokens"), self.http.url), None, "a tokenized")

    def probe(self, tokens: Sequence[int], spec: RefusalSpec) -> None:
        """Find out whether this vLLM honours ``logprob_token_ids`` (older releases ignore the field), and refuse one
        that ignores ``logit_bias``: a bias of +100 nats past the top on its least likely reported decision token
        must make greedy decoding pick it (docs/engines.md). Scoring relies on the bias: the token it samples with
        the decision tokens biased away is the best other token."""
        reported = self._logprobs(self.score_request(tokens, spec), len(tokens))[0]
        self.token_ids = all(t in reported for t in spec.token_ids)
        candidates = [t for t in spec.token_ids if t in reported] or [spec.respond.id]
        target = min(candidates, key=lambda t: reported.get(t, 0.0))
        bias = 100.0 + max(reported.values()) - reported.get(target, min(reported.values()))
        body = {**self.score_request(tokens, spec), "logit_bias": {str(target): bias}}
        try:
            answer = self.http.post_json("/v1/completions", body, retry=True)
        except EngineHTTPError as exc:
            raise too_long_or(exc, len(tokens), self.n_ctx) from None
        if sampled_token(answer, self.http.url, vocab_size(self.tokenizer)) != target:
            raise EngineError(f"vLLM at {self.http.url} does not honour logit_bias: a bias of +{bias:.0f} on decision "
                              f"token {target} did not make greedy decoding pick it; refusal-edge needs logit_bias "
                              "honoured (see docs/engines.md)")

    # scoring ----------------------------------------------------------------------------------
    def score_request(self, tokens: Sequence[int], spec: RefusalSpec) -> dict:
        body = {"model": self.model_id, "prompt": list(tokens), "max_tokens": 1, "temperature": 0.0,
                "return_tokens_as_token_ids": True, "add_special_tokens": False, "skip_special_tokens": False,
                "logit_bias": {str(t): AWAY for t in spec.token_ids}}
        if self.token_ids:
            body.update(logprobs=1, logprob_token_ids=list(spec.token_ids))
        else:
            body.update(logprobs=self.top_k)
        return body

    def score(self, tokens: Sequence[int], spec: RefusalSpec, temperature: float):
        if abs(temperature - 1.0) > 1e-9:
            raise EngineError(f"vLLM reports temperature-1 log-probabilities (--logprobs-mode raw_logprobs); the "
                              f"policy's temperature is {temperature:g}: use temperature 1 with a vLLM engine")
        t0 = time.perf_counter()
        logprobs, cached = self._logprobs(self.score_request(tokens, spec), len(tokens), spec)
        if not self.token_ids:
            check_top_report(logprobs, self.top_k, vocab_size(self.tokenizer), f"vLLM at {self.http.url}")
        top = [v for t, v in logprobs.items() if t not in spec.token_ids] if not self.token_ids else []
        bound = min(top) if top else None
        scores = scores_from_logprobs(logprobs, spec, 1.0, upper_bound=bound, n_vocab=vocab_size(self.tokenizer))
        return scores, PrefillStats(len(tokens), cached, (time.perf_counter() - t0) * 1e3)

    def _logprobs(self, body: dict, n_tokens: int, spec: RefusalSpec | None = None) -> tuple[dict[int, float], int]:
        try:
            answer = self.http.post_json("/v1/completions", body, retry=True)
        except EngineHTTPError as exc:
            raise too_long_or(exc, n_tokens, self.n_ctx) from None
        reported = parse_logprobs(answer, self.http.url, vocab_size(self.tokenizer))
        if spec is not None and sampled_token(answer, self.http.url, vocab_size(self.tokenizer)) in spec.token_ids:
            raise EngineError(f"vLLM at {self.http.url} does not honour logit_bias: it sampled a decision token the "
                              f"request biased by {AWAY:g}: no decision is taken (see docs/engines.md)")
        return reported, cached_tokens(answer)

    # generation -------------------------------------------------------------------------------
    def sample_first(self, tokens: Sequence[int], params, bias: Mapping[int, float]) -> int:
        body = {**self.generation_request(tokens, params, 1), "stream": False, "return_token_ids": True,
                "logit_bias": {str(t): float(b) for t, b in bias.items()}}
        try:
            answer = self.http.post_json("/v1/completions", body, retry=False)
        except EngineHTTPError as exc:
            raise too_long_or(exc, len(tokens), self.n_ctx) from None
        try:
            sampled = answer["choices"][0]["token_ids"][0]
        except (KeyError, IndexError, TypeError, ValueError):
            raise EngineError(f"vLLM at {self.http.url} returned no token ids (a release without "
                              "return_token_ids?)") from None
        return token_id(sampled, vocab_size(self.tokenizer), "a sampled token")

    def generation_request(self, tokens: Sequence[int], params, n_predict: int) -> dict:
        return {"model": self.model_id, "prompt": list(tokens), "max_tokens": n_predict, "stream": True,
                "return_token_ids": True, "add_special_tokens": False, "skip_special_tokens": False,
                "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k or -1,
                "min_p": params.min_p, "repetition_penalty": params.repeat_penalty,
                **({} if params.seed is None else {"seed": params.seed})}

    def stream(self, tokens: Sequence[int], params, n_predict: int, n_ctx: int) -> Iterator[int]:
        last = None
        body = self.generation_request(tokens, params, min(n_predict, n_ctx - len(tokens)))
        for event in self.http.stream_events("/v1/completions", body, progress=_made_progress):
            choices = event.get("choices") or []
            if not choices:
                continue  # a usage-only chunk
            choice = choices[0] if isinstance(choices, list) else None
            if not isinstance(choice, dict) or not isinstance(choice.get("token_ids") or [], list):
                raise EngineError(f"vLLM at {self.http.url} streamed a chunk without token ids: {str(event)[:120]}")
            for token in choice.get("token_ids") or []:
                last = token_id(token, vocab_size(self.tokenizer), "a streamed token")
                yield last
            if choice.get("finish_reason"):
                if choice["finish_reason"] == "stop" and (last is None or not self.tokenizer.is_eog(last)):
                    yield self.tokenizer.eos
                return


def _made_progress(event: dict) -> bool:
    """A chunk that brings tokens or the end (usage-only and empty ones do not keep a stream open)."""
    choices = event.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    return isinstance(choice, dict) and bool(choice.get("token_ids") or choice.get("finish_reason"))


def parse_logprobs(answer: dict, url: str, n_vocab: int | None = None) -> dict[int, float]:
    """Token id -> log-probability from a /v1/completions answer with ``return_tokens_as_token_ids``: the reported
    tokens of the first position, and the generated token's own. Ids outside the vocabulary, and values that are
    not numbers, are an EngineError (what the numbers may be is checked by scores_from_logprobs)."""
    try:
        logprobs = answer["choices"][0]["logprobs"]
        reported = {_token_id(name, n_vocab): real(value, "a log-probability")
                    for name, value in (logprobs["top_logprobs"][0] or {}).items()}
        reported.setdefault(_token_id(logprobs["tokens"][0], n_vocab),
                            real(logprobs["token_logprobs"][0], "a log-probability"))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise EngineError(f"vLLM at {url} answered without the expected log-probabilities "
                          f"({type(exc).__name__}: {exc})") from None
    return reported


def sampled_token(answer: dict, url: str, n_vocab: int | None = None) -> int:
    """The token a /v1/completions answer with ``return_tokens_as_token_ids`` generated first."""
    try:
        return _token_id(answer["choices"][0]["logprobs"]["tokens"][0], n_vocab)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise EngineError(f"vLLM at {url} answered without the token it generated ({type(exc).__name__}: {exc})") \
            from None


def cached_tokens(answer: dict) -> int:
    """The prompt tokens vLLM found cached (statistics only: anything that is not a count is 0)."""
    usage = answer.get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and not isinstance(cached, bool) and cached >= 0 else 0


def _token_id(name: str, n_vocab: int | None) -> int:
    if not isinstance(name, str) or not name.startswith(TOKEN_ID_PREFIX) \
            or not name[len(TOKEN_ID_PREFIX):].isdigit() or len(name) > 32:
        raise ValueError(f"token {name!r} is not named by id (return_tokens_as_token_ids)")
    return token_id(int(name[len(TOKEN_ID_PREFIX):]), n_vocab, "a log-probability's token")

