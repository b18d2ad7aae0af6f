"""A remote engine: the model runs on llama-server or vLLM; the vocabulary, template, policy and decision stay here.

``connect`` loads the served model's GGUF vocabulary only (no weights; from its Hugging Face tokenizer files where
the engine serves a checkpoint, see tokenizer_source.py), finds out which engine answers at the URL,
and checks that it serves that same model before anything is scored. Prompts travel as token ids.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Mapping, Sequence, Union

from ...engine import Engine, Scored, Tokenizer
from ...errors import PromptTooLongError, RefusalEdgeError
from ...metadata import RefusalSpec
from .dialect import Dialect
from .errors import EngineError
from .http import EngineHTTPError, HttpClient
from .llama_server import LlamaServerDialect
from .tokenizer_source import tokenizer_gguf
from .vllm import VllmDialect

# Tokenized on both sides at connect: a different vocabulary or merges almost surely split it differently.
PROBE = "Refusal-edge probe: the quick brown fox jumps over 13 lazy dogs; don't panic!"


class RemoteEngine(Engine):
    """An engine over HTTP. Thread-safe: ``score_many`` keeps ``concurrency`` scoring requests in flight, and a
    server may stream several answers at once through one instance (one httpx connection pool, which is
    thread-safe; the vocabulary is read-only)."""

    thread_safe = True
    run_stopping_errors = (EngineError,)  # the engine failing (or answering nonsense) is not one prompt's problem

    def __init__(self, dialect: Dialect, tokenizer: Tokenizer, concurrency: int | None = None) -> None:
        self.dialect, self.tokenizer = dialect, tokenizer
        self.n_ctx = dialect.n_ctx
        self.kind, self.url, self.model_id = dialect.kind, dialect.http.url, dialect.model_id
        self.concurrency = max(1, concurrency or dialect.slots or 1)
        self._closed = False

    @property
    def identity(self) -> str:
        """Which engine, serving what (not where: replicas of one served model give the same scores)."""
        return f"{self.kind}:{self.model_id}"

    def score_fitting(self, tokens: list[int], spec: RefusalSpec, temperature: float) -> Scored:
        return self.dialect.score(tokens, spec, temperature)

    def prompt_too_long(self, n_tokens: int) -> PromptTooLongError:
        return PromptTooLongError(f"the prompt is {n_tokens} tokens, the engine's context holds {self.n_ctx}: "
                                  "shorten it or serve the model with a longer context")

    def score_many(self, batch: Sequence[Sequence[int]], spec: RefusalSpec,
                   temperature: float = 1.0) -> Iterator[Union[Scored, RefusalEdgeError]]:
        """Up to ``concurrency`` requests in flight (the engine batches them), results yielded in order."""
        def one(tokens):
            return self.score_or_error(tokens, spec, temperature)

        if self.concurrency == 1 or len(batch) <= 1:
            yield from map(one, batch)
            return

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="refusal-edge-score") as pool:
            pending: deque = deque()
            items = iter(batch)
            try:
                for tokens in items:
                    pending.append(pool.submit(one, tokens))
                    if len(pending) >= 2 * self.concurrency:  # a small queue ahead of the engine, not the whole list
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def continue_from(self, tokens: list[int], params, first_token_bias: Mapping[int, float] | None
                      ) -> Iterator[int]:
        if first_token_bias is not None:
            self.check_fits(tokens)
            first = self.dialect.sample_first(tokens, params, first_token_bias)
            yield first
            if self.tokenizer.is_eog(first) or params.max_tokens <= 0:
                return
            tokens.append(first)
            if len(tokens) >= self.n_ctx:
                return
        yield from self.dialect.stream(tokens, params, params.max_tokens, self.n_ctx)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.dialect.http.close()
            close = getattr(self.tokenizer, "close", None)
            if close is not None:
                close()


def connect(url: str, tokenizer_source: str | os.PathLike, *, model: str | None = None, api_key: str | None = None,
            timeout: float = 60.0, retries: int = 3, backoff_s: float = 0.5, concurrency: int | None = None,
            top_k: int = 20, verbose: bool = False) -> RemoteEngine:
    """A RemoteEngine for the engine at ``url`` serving ``tokenizer_source``: the GGUF it serves, or the served
    Hugging Face checkpoint's directory (its tokenizer files), either loaded vocabulary-only.

    ``model`` names the served model where the engine serves several (vLLM); ``top_k`` is how many top tokens a
    top-k engine is asked for per scoring request. Idempotent requests are retried ``retries`` times after a
    transport error or a 5xx, waiting ``backoff_s`` doubled each time; ``timeout`` bounds each request, its retries
    included (a stream: each wait for its next bytes).
    """
    from ..llama.vocab import load_tokenizer
    from ...metadata import read_spec

    tokenizer = load_tokenizer(tokenizer_gguf(tokenizer_source), verbose=verbose)
    http = None
    try:
        spec = read_spec(tokenizer)
        http = HttpClient(url, api_key=api_key, timeout=timeout, retries=retries, backoff_s=backoff_s,
                          connections=max(16, 2 * (concurrency or 1)))
        dialect = detect(http, model, tokenizer, top_k)
        check_same_model(dialect, tokenizer, spec)
        dialect.probe(tokenizer.tokenize(PROBE, special=False), spec)
        return RemoteEngine(dialect, tokenizer, concurrency)
    except BaseException:
        if http is not None:
            http.close()
        tokenizer.close()
        raise


def detect(http: HttpClient, model: str | None, tokenizer: Tokenizer, top_k: int = 20) -> Dialect:
    """Which engine answers at the URL: llama-server's /v1/models says "llamacpp", vLLM's says "vllm"."""
    models = http.get_json("/v1/models")
    cards = models.get("data") if isinstance(models, dict) else None
    if not isinstance(cards, list) or not cards or not all(isinstance(card, dict) for card in cards):
        raise EngineError(f"{http.url}/v1/models lists no model: is this an OpenAI-compatible engine?")
    owner = str(cards[0].get("owned_by", ""))
    if owner == "vllm":
        return VllmDialect(http, models, model, tokenizer, top_k)
    if owner == "llamacpp" or "meta" in cards[0]:
        if model and model not in {str(c.get("id")) for c in cards}:
            raise EngineError(f"llama-server at {http.url} serves {cards[0].get('id')!r}, not {model!r}")
        try:
            props = http.get_json("/props")
        except EngineHTTPError:
            props = {}
        return LlamaServerDialect(http, models, props, tokenizer, top_k)
    raise EngineError(f"{http.url} is an engine refusal-edge does not know (owned_by {owner!r}); supported: "
                      "llama.cpp's llama-server and vLLM")


def check_same_model(dialect: Dialect, tokenizer: Tokenizer, spec: RefusalSpec) -> None:
    """The engine must serve the model whose vocabulary we hold: same size, same decision token ids, same
    tokenization of a probe text. Anything else would turn token ids into other tokens silently."""
    where = f"{dialect.kind} at {dialect.http.url} serves {dialect.model_id!r}, which is not {tokenizer.name}"
    if dialect.n_vocab is not None and dialect.n_vocab != tokenizer.n_vocab:
        raise EngineError(f"{where}: its vocabulary has {dialect.n_vocab} tokens, {tokenizer.name}'s "
                          f"{tokenizer.n_vocab}")
    texts = [tokenizer.token_text(t) for t in spec.token_ids]
    theirs = dialect.tokenize("".join(texts), special=True)
    if theirs != list(spec.token_ids):
        raise EngineError(f"{where}: the decision tokens {texts} are ids {list(spec.token_ids)} here, {theirs} there")
    ours = tokenizer.tokenize(PROBE, special=False)
    if dialect.tokenize(PROBE, special=False) != ours:
        raise EngineError(f"{where}: it tokenizes a probe text differently")
    if not dialect.n_ctx:
        raise EngineError(f"{dialect.kind} at {dialect.http.url} did not say its context length")
