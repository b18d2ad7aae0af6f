"""llama.cpp's ``llama-server``: the requests it takes and what its answers mean.

Scoring uses ``/completion`` with ``n_probs`` and ``post_sampling_probs``: the probabilities after a sampler chain
that holds only the logit bias and the temperature (``samplers: ["temperature"]``), so they are the full-vocabulary
softmax of (raw logits + bias) / temperature. (Without ``post_sampling_probs`` llama-server reports the raw softmax
at temperature 1, which no bias can move; see ``populate_token_probs`` in tools/server/server-context.cpp.)
Decision tokens outside the top ``n_probs`` are pushed into it with a logit bias and the bias is undone exactly
(firsttoken.unbias); the prompt is cached, so each extra round costs one token's evaluation.
"""

from __future__ import annotations

import math
import time
from typing import Iterator, Mapping, Sequence

from ...engine import PrefillStats, Tokenizer
from ...metadata import RefusalSpec
from .errors import EngineError
from ...settings import SERVER_MAX_PARALLEL
from .checks import (check_logprobs, check_top_report, count, probability_as_logprob, token_id, token_ids, tokens_of,
                     vocab_size)
from .firsttoken import scores_from_logprobs, unbias
from .http import EngineHTTPError, HttpClient, too_long_or
from .pieces import first_split

KIND = "llama-server"
MAX_BIAS_ROUNDS = 16  # enough to double a bias from a few nats past float32's range, then halve it into place
PROBE_BIAS = 100.0  # nats past the top a connect-time probe pushes the respond token: any engine honouring it shows it
BIAS_SLACK = 1e-2  # nats a bias undone through float32 probabilities may come back above where it started
SEEDS = 16  # samplings tried before giving up on a first token that ends inside a character (see _top)
MARGIN = 4.0  # nats a pushed token lands above the anchor token, so that it surely enters the top k
UTF8_SLACK = 8  # tokens asked for beyond the budget, so that none is withheld at the end (see stream)
MAX_WITHHELD = 64  # tokens llama-server may hold back inside one UTF-8 character (a few); more is a broken count


class LlamaServerDialect:
    kind = KIND

    def __init__(self, http: HttpClient, models: dict, props: dict, tokenizer: Tokenizer, top_k: int = 20):
        self.http, self.tokenizer, self.top_k = http, tokenizer, top_k
        where = f"llama-server at {http.url}"
        card = models["data"][0]
        meta = _object(card.get("meta"), "meta", where)
        self.model_id = str(card.get("id", "llama-server"))
        self.n_vocab = count(meta.get("n_vocab"), "n_vocab", where, default=None)
        settings = _object(props.get("default_generation_settings"), "default_generation_settings", where)
        self.n_ctx = count(meta.get("n_ctx") or settings.get("n_ctx"), "n_ctx", where)
        self.slots = count(props.get("total_slots") or 1, "total_slots", where, most=SERVER_MAX_PARALLEL) or 1
        # What it runs with, as far as /props says: its llama.cpp build. (It does not report flash attention or
        # --no-repack; the documented recipe passes `refusal-edge doctor --llama-server-flags`.)
        self.build_info = str(props.get("build_info") or "")
        self._pieces = None  # see _piece_index, built when first needed

    # vocabulary -------------------------------------------------------------------------------
    def probe(self, tokens: Sequence[int], spec: RefusalSpec) -> None:
        """Refuse at connect an engine whose answers could not show the decision tokens' real probabilities: it must
        report its top ``n_probs`` (``_top`` checks every report) and honour ``logit_bias``: a bias of +100 nats past
        the top on its least likely decision token must make that token the most probable one (docs/engines.md)."""
        k = max(self.top_k, len(spec.token_ids) + 1)
        plain = self._top(tokens, 1.0, k, {})
        bound = min(plain.logprobs.values())
        target = min(spec.token_ids, key=lambda t: plain.logprobs.get(t, bound))
        bias = PROBE_BIAS + max(plain.logprobs.values()) - plain.logprobs.get(target, bound)
        pushed = self._top(tokens, 1.0, k, {target: bias})
        shown = pushed.logprobs.get(target, -math.inf)
        if max(pushed.logprobs, key=pushed.logprobs.get) != target or shown < math.log(0.5) \
                or max(plain.logprobs, key=plain.logprobs.get) == target:
            where = "out of its report" if shown == -math.inf else f"at probability {math.exp(shown):.3g}"
            raise EngineError(f"llama-server at {self.http.url} does not honour logit_bias: a bias of +{bias:.0f} on "
                              f"decision token {target} left it {where}, not at the top; refusal-edge needs "
                              "logit_bias and n_probs honoured (see docs/engines.md)")

    def tokenize(self, text: str, special: bool) -> list[int]:
        answer = self.http.post_json("/tokenize", {"content": text, "add_special": False, "parse_special": special},
                                     retry=True)
        return token_ids(tokens_of(answer.get("tokens"), self.http.url), None, "a tokenized")

    # scoring ----------------------------------------------------------------------------------
    def score(self, tokens: Sequence[int], spec: RefusalSpec, temperature: float):
        t0 = time.perf_counter()
        k = max(self.top_k, len(spec.token_ids) + 1)  # room for every decision token and one other
        first = self._top(tokens, temperature, k, {})
        known = dict(first.logprobs)
        missing = [t for t in spec.token_ids if t not in known]
        if missing:
            self._push_in(tokens, temperature, first, known, missing)
        # Every decision token is now reported: exact scores, never a bound taken on the engine's word.
        scores = scores_from_logprobs(known, spec, temperature, n_vocab=vocab_size(self.tokenizer))
        return scores, PrefillStats(len(tokens), first.cached, first.prompt_ms or (time.perf_counter() - t0) * 1e3)

    def _push_in(self, tokens, temperature: float, first: "_Top", known: dict, missing: list[int]) -> None:
        """Bias the missing decision tokens until they enter the top k, undoing the bias each round; ``known`` gains
        the recovered log-probabilities. A token still missing, or one that comes back more probable than the
        unbiased report allowed, means the engine did not apply the bias: an EngineError, never a bound."""
        anchor = max(first.logprobs, key=first.logprobs.get)  # never biased, so present in every round's top k
        bound = min(first.logprobs.values())  # no unreported token is more likely
        too_low, too_high = 0.0, math.inf
        below = bound  # where the missing tokens lie, if the bias is honoured
        bias = temperature * (known[anchor] - below + MARGIN)
        for _ in range(MAX_BIAS_ROUNDS):
            biased = frozenset(missing)
            top = self._top(tokens, temperature, len(missing) + 1, {t: bias for t in missing})
            if anchor not in top.logprobs:  # pushed so far that the anchor's probability underflowed
                too_high = bias
                bias = (too_low + too_high) / 2
                continue
            recovered = unbias(top.logprobs, biased, bias, temperature, anchor, known[anchor])
            for token, value in recovered.items():
                if value > bound + BIAS_SLACK:
                    raise EngineError(
                        f"llama-server at {self.http.url} does not honour logit_bias: decision token {token}, under a "
                        f"bias of +{bias:.3g}, is reported at probability {math.exp(top.logprobs[token]):.3g}, more "
                        "than the bias allows for a token outside its unbiased top: no decision is taken")
            known.update(recovered)
            missing = [t for t in missing if t not in known]
            if not missing:
                return
            too_low = bias
            # Still missing: below the smallest reported (biased) entry, mapped back through the anchor.
            below = min(top.logprobs.values()) - bias / temperature + known[anchor] - top.logprobs[anchor]
            bias = min(max(temperature * (known[anchor] - below + MARGIN), 2 * bias), (too_low + too_high) / 2)
        raise EngineError(f"llama-server at {self.http.url} did not report decision token(s) {missing} even under a "
                          f"logit bias of +{bias:.3g}: it does not honour logit_bias (or they lie beyond float32's "
                          "range): no decision is taken (see docs/engines.md)")

    def _top(self, tokens, temperature: float, k: int, bias: Mapping[int, float]) -> "_Top":
        body = {"prompt": list(tokens), "n_predict": 1, "n_probs": k, "post_sampling_probs": True,
                "samplers": ["temperature"], "temperature": temperature, "cache_prompt": True, "stream": False,
                "logit_bias": [[int(t), float(b)] for t, b in bias.items()]}
        for seed in range(SEEDS):
            # llama-server drops the probabilities when the token it samples ends inside a UTF-8 character (it
            # waits for the rest of the character): sample again with another seed. Same prompt, cached.
            try:
                answer = self.http.post_json("/completion", {**body, "seed": seed}, retry=True)
            except EngineHTTPError as exc:
                raise too_long_or(exc, len(tokens), self.n_ctx) from None
            if answer.get("completion_probabilities"):
                break
        try:
            entries = answer["completion_probabilities"][0]["top_probs"]
            logprobs = {token_id(e["id"], vocab_size(self.tokenizer)): probability_as_logprob(e["prob"]) for e in entries}
            timings = answer.get("timings")
            timings = timings if isinstance(timings, dict) else {}  # statistics only: malformed ones are no timings
            cached, prompt_ms = int(timings.get("cache_n") or 0), float(timings.get("prompt_ms") or 0.0)
        except (KeyError, IndexError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise EngineError(f"llama-server at {self.http.url} answered /completion without token probabilities "
                              f"({type(exc).__name__}: {exc})") from None
        if not logprobs:
            raise EngineError(f"llama-server at {self.http.url} reported no token probabilities")
        check_logprobs(logprobs, vocab_size(self.tokenizer))
        check_top_report(logprobs, k, vocab_size(self.tokenizer), f"llama-server at {self.http.url}")
        return _Top(logprobs, cached, prompt_ms)

    # generation -------------------------------------------------------------------------------
    def sample_first(self, tokens: Sequence[int], params, bias: Mapping[int, float]) -> int:
        """One token sampled after ``tokens`` with ``bias`` added (the first response token when the model
        chooses); the continuation is then requested without the bias, which belongs to the first token only."""
        body = {**self._sampling(params), "prompt": list(tokens), "n_predict": 1, "stream": False,
                "return_tokens": True, "logit_bias": [[int(t), float(b)] for t, b in bias.items()]}
        try:
            answer = self.http.post_json("/completion", body, retry=False)
        except EngineHTTPError as exc:
            raise too_long_or(exc, len(tokens), self.n_ctx) from None
        sampled = answer.get("tokens") if isinstance(answer, dict) else None
        if not sampled or not isinstance(sampled, list):
            raise EngineError(f"llama-server at {self.http.url} sampled no token (stop_type "
                              f"{answer.get('stop_type')!r})")
        return token_id(sampled[0], vocab_size(self.tokenizer), "a sampled token")

    def stream(self, tokens: Sequence[int], params, n_predict: int, n_ctx: int) -> Iterator[int]:
        """Token ids as llama-server samples them. It withholds a token that ends inside a UTF-8 character until
        the character completes, then sends its bytes (exact, in ``completion_probabilities[].bytes``) with the
        next token; ids with exactly those pieces are recovered. It also drops withheld tokens when it stops,
        so it is asked for a few tokens more than the caller reads (who closes the stream at its budget)."""
        body = {**self._sampling(params), "prompt": list(tokens), "stream": True, "return_tokens": True,
                "n_probs": 1, "n_predict": min(n_predict + UTF8_SLACK, n_ctx - len(tokens))}
        produced, sent = 0, []
        for event in self.http.stream_events("/completion", body, progress=_made_progress):
            ids = token_ids(_list(event.get("tokens")), vocab_size(self.tokenizer), "a streamed token")
            predicted = _count(event.get("tokens_predicted"), produced + len(ids))
            if predicted - produced - len(ids) > MAX_WITHHELD:
                raise EngineError(f"llama-server at {self.http.url} counts {predicted - produced} new tokens but sent "
                                  f"{len(ids)}")
            if ids and predicted > produced + len(ids):
                ids = self._withheld(event, ids, predicted - produced - len(ids)) + ids
            if event.get("stop") and predicted > produced + len(ids):
                # It stopped (end of generation, say) right after tokens it withheld: their ids and bytes are
                # gone. Sample them again, unstreamed (greedy decoding gives the same tokens).
                ids += self._replay([*tokens, *sent, *ids], body, predicted - produced - len(ids))
            for token in ids:
                sent.append(token)
                yield token
            produced = predicted
            if event.get("stop"):
                if event.get("stop_type") == "eos" and (not sent or not self.tokenizer.is_eog(sent[-1])):
                    yield self.tokenizer.eos
                return

    def _replay(self, tokens: list[int], body: dict, count: int) -> list[int]:
        again = {**body, "prompt": tokens, "stream": False, "n_probs": 0, "n_predict": count}
        answer = self.http.post_json("/completion", again, retry=False)
        return token_ids(_list(answer.get("tokens") if isinstance(answer, dict) else None), vocab_size(self.tokenizer),
                         "a sampled token")

    def _withheld(self, event: dict, sent: list[int], count: int) -> list[int]:
        pieces, silent = self._piece_index()
        try:
            raw = event["completion_probabilities"][-1]["bytes"]
            # A list of byte values no longer than the pieces it could hold (never bytes(10**11), which allocates).
            if not isinstance(raw, list) or len(raw) > (count + len(sent)) * max(map(len, pieces), default=0):
                return []
            text = bytes(raw)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return []
        tail = b"".join(map(self.tokenizer.piece, sent))
        if not text.endswith(tail):
            return []
        withheld = text[: len(text) - len(tail)]
        # Tokens without text (control tokens) may be among the withheld: as many as needed, any one will do.
        found = first_split(withheld, [count - n_silent for n_silent in range(count if silent is not None else 1)],
                            pieces)
        return [] if found is None else found[1] + [silent] * (count - found[0])

    def _piece_index(self) -> tuple[dict[bytes, int], int | None]:
        """Piece -> a token with that piece, and a token with no text that does not end generation."""
        if self._pieces is None:
            tok, pieces, silent = self.tokenizer, {}, None
            for token in range(tok.n_vocab):
                piece = tok.piece(token)
                if piece:
                    pieces.setdefault(piece, token)
                elif silent is None and not tok.is_eog(token):
                    silent = token
            self._pieces = pieces, silent
        return self._pieces

    @staticmethod
    def _sampling(params) -> dict:
        # The same chain and order as the in-process sampler (llama/sampler.Sampler). One difference: llama-server's
        # repeat penalty also counts the prompt's last tokens.
        return {"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p,
                "min_p": params.min_p, "repeat_penalty": params.repeat_penalty,
                "repeat_last_n": params.repeat_last_n, "seed": -1 if params.seed is None else params.seed,
                "samplers": ["penalties", "top_k", "top_p", "min_p", "temperature"], "cache_prompt": True}


def _object(value, what: str, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EngineError(f"{where} reported {what} as {type(value).__name__}, not an object")
    return value


def _made_progress(event: dict) -> bool:
    """A stream event that brings tokens or the end (empty ones do not keep a stream open past the timeout)."""
    return bool(event.get("tokens")) or bool(event.get("stop"))


def _list(value) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EngineError(f"llama-server sent tokens as {type(value).__name__}, not a list")
    return value


def _count(value, default: int) -> int:
    """``tokens_predicted``: how many tokens it has generated so far (a count, so never negative)."""
    if value is None or value == 0:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EngineError(f"llama-server sent tokens_predicted {value!r}, not a count")
    return value


class _Top:
    __slots__ = ("logprobs", "cached", "prompt_ms")

    def __init__(self, logprobs: dict[int, float], cached: int, prompt_ms: float):
        self.logprobs, self.cached, self.prompt_ms = logprobs, cached, prompt_ms

