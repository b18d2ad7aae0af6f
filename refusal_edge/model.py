"""RefusalModel: one prefill, a policy-chosen first token, then ordinary decoding on the same KV cache.

It runs the model only through the engine seam (engine.py); llama.cpp in-process is the default engine.
"""

from __future__ import annotations

import os
import time
from contextlib import closing
from dataclasses import replace
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Sequence, Union

from .access import ModelLock, Stream
from .decision import Decision, FirstTokenScores, bias_vector, decide, decision_for_token
from .engine import Engine, PrefillStats
from .errors import RefusalEdgeError
from .metadata import RefusalSpec, read_spec
from .policy import Policy
from .sampling import SamplingParams
from .streaming import Chunk, GenerationResult, TextAssembler, collect
from .template import ChatTemplate, prompt_token_ids, template_of
from .window import Window, fit

if TYPE_CHECKING:  # typed keywords (keywords.py); never evaluated at run time, so no typing_extensions is needed
    from typing_extensions import Unpack

    from .keywords import LoadOptions, SamplingOptions, StreamOptions

Messages = Union[str, Sequence[Mapping]]


class RefusalModel:
    def __init__(self, engine: Engine, spec: RefusalSpec, template: ChatTemplate, default_policy: Policy):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.spec = spec
        self.template = template
        self.default_policy = default_policy
        self._decision_ids = frozenset(spec.token_ids)
        self._decision_tokens = spec.decision_tokens
        # The decision token ``stream`` expects next: the last one it fed, at first [respond]. An engine may evaluate
        # it with the prompt (a hint: LlamaEngine does where that pays), so that when the policy picks it
        # the first answer token costs no extra decode step.
        self._predicted = spec.token_ids[0]
        self._access = ModelLock(serialize=not engine.thread_safe)  # one caller at a time: access.py

    @classmethod
    def load(cls, path: str | os.PathLike, **options: Unpack[LoadOptions]) -> "RefusalModel":
        """Load a GGUF on the in-process llama.cpp engine. ``options`` are ``LlamaEngine``'s, with its defaults:
        ``n_ctx``, ``n_threads``, ``n_gpu_layers`` (-1 offloads everything to Metal/CUDA builds), ``n_batch``,
        ``batch_sequences``, ``score_block`` (``score_many`` prefills each prompt at fixed decode boundaries, so its
        scores do not depend on its batch; 0: batch prompts instead, faster), ``predict_decision``, ``verbose``,
        ``repack`` (llama.cpp's extra CPU buffer types, repacked and AMX kernels: "on", "off" or "auto", the default,
        or $REFUSAL_EDGE_REPACK: on unless a canary decode shows they crash or miscompute on this machine) and any
        other ``llama_cpp.Llama`` argument."""
        from .engines.llama.engine import LlamaEngine  # the default engine; nothing else here knows it is llama.cpp

        return cls.from_engine(LlamaEngine(path, **options))

    @staticmethod
    def read_file_spec(path: str | os.PathLike) -> RefusalSpec:
        """A GGUF's refusal spec from its vocabulary alone, no weights loaded (a driver that only hands the file
        to workers needs no more)."""
        from .engines.llama.vocab import load_tokenizer  # the default engine's vocabulary, as ``load`` uses it

        tokenizer = load_tokenizer(path)
        try:
            return read_spec(tokenizer)
        finally:
            tokenizer.close()

    @classmethod
    def connect(cls, url: str, tokenizer_source: str | os.PathLike, *, model: str | None = None,
                api_key: str | None = None, **options) -> "RefusalModel":
        """The model served by a remote engine (llama.cpp's llama-server or vLLM) at ``url``. ``tokenizer_source``
        is the GGUF it serves, loaded vocabulary-only, or the served Hugging Face checkpoint's directory (its
        tokenizer files): template, tokenizer and refusal spec stay here, and the engine is checked to serve that
        same model. ``options`` go to ``remote.connect`` (timeout, retries,
        concurrency, top_k)."""
        from .engines.remote import connect

        return cls.from_engine(connect(url, tokenizer_source, model=model, api_key=api_key, **options))

    @classmethod
    def from_engine(cls, engine: Engine) -> "RefusalModel":
        """A model on any engine: spec, chat template and default policy come from its tokenizer's metadata.
        The model owns the engine from here on (``close`` closes it, also when this fails)."""
        tokenizer = engine.tokenizer
        try:
            spec = read_spec(tokenizer)
            default = Policy.default_of(spec)
        except RefusalEdgeError as exc:
            engine.close()
            raise type(exc)(f"{tokenizer.name}: {exc}") from None
        return cls(engine, spec, template_of(tokenizer), default)

    @property
    def aio(self):
        """The same calls for asyncio (``await model.aio.decide(...)``, ``async for e in model.aio.stream(...)``),
        run in worker threads under this model's lock (aio.py)."""
        from .aio import AsyncRefusalModel

        return AsyncRefusalModel(self)

    @property
    def name(self) -> str:
        """The model's display name (e.g. the GGUF's file stem)."""
        return self.tokenizer.name

    def close(self) -> None:
        """Free the engine, once other threads' calls on it have finished."""
        with self._access.closing():
            self.engine.close()

    def __enter__(self) -> "RefusalModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def categories(self) -> tuple[str, ...]:
        return self.spec.category_names

    def policy(self, policy: Policy | Mapping | None = None) -> Policy:
        """Normalise a policy argument: None -> the model's default; a mapping is parsed; names are resolved."""
        if policy is None:
            return self.default_policy
        if isinstance(policy, Mapping):
            return Policy.from_dict(policy, self.categories)
        return policy.resolved(self.categories)

    # prompt -----------------------------------------------------------------------------------
    def prompt_tokens(self, messages: Messages) -> list[int]:
        """Template parts may hold control tokens; message content never does."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not messages:
            raise RefusalEdgeError("no messages to answer")
        return prompt_token_ids(self.tokenizer, self.template, messages, self._decision_tokens)

    def fit(self, messages: Messages, max_tokens: int = 0, *, n_ctx: int | None = None, drop: str = "turns",
            spare: int = 0, option: str = "n_ctx") -> Window:
        """The window of a conversation that fits the context with room for ``max_tokens`` of answer: the oldest
        whole turns left out, never a system message or the current one (window.py). Send ``window.messages``;
        ``window.dropped_turns`` and ``window.notice`` say what was left out."""
        return fit(self, messages, max_tokens, n_ctx=n_ctx, drop=drop, spare=spare, option=option)

    # decision ---------------------------------------------------------------------------------
    def decide(self, messages: Messages, policy: Policy | Mapping | None = None, *, blocking: bool = True,
               timeout: float | None = None) -> Decision:
        """Prefill once (reusing the cached prefix) and choose the first response token. No decoding.

        Calls on one model are serialized: this waits while another thread's call or open stream holds the model,
        or raises ModelBusyError at once (``blocking=False``) or after ``timeout`` seconds. So do the other calls."""
        policy = self.policy(policy)
        with self._access.hold(blocking, timeout):
            return self._decide(self.prompt_tokens(messages), policy)

    def _decide(self, tokens: list[int], policy: Policy, predicted: int | None = None) -> Decision:
        t0 = time.perf_counter()
        scores, stats = self.engine.score_ahead(tokens, self.spec, policy.temperature, predicted)
        decision = decide(scores, self.spec, policy)
        total_ms = (time.perf_counter() - t0) * 1e3
        if decision.token_id not in self._decision_ids:
            decision = replace(decision, token=self._text(decision.token_id))
        return replace(decision, prefill_ms=stats.prefill_ms, decision_ms=max(total_ms - stats.prefill_ms, 0.0),
                       prompt_tokens=stats.prompt_tokens, cached_tokens=stats.reused_tokens,
                       meta={**decision.meta, "scores": "exact" if scores.exact else "bounded"})

    def scores(self, messages: Messages, temperature: float = 1.0, *, blocking: bool = True,
               timeout: float | None = None) -> FirstTokenScores:
        """The first-token scores alone, for offline evaluation: any policy can be applied to them later."""
        with self._access.hold(blocking, timeout):
            return self.engine.score(self.prompt_tokens(messages), self.spec, temperature)[0]

    def score_many(self, conversations: Iterable[Messages], temperature: float = 1.0, *, blocking: bool = True,
                   timeout: float | None = None
                   ) -> Stream[Union[tuple[FirstTokenScores, PrefillStats], RefusalEdgeError]]:
        """Scores and prefill statistics per conversation, yielded in order as the engine delivers them (batched
        or concurrent where it can). A conversation that cannot be scored yields its error in its place. Holds
        the model from the first result until the last, like ``stream``."""
        return Stream(self._score_many(conversations, temperature, blocking, timeout))

    def _score_many(self, conversations, temperature, blocking, timeout):
        last = ()
        with self._access.hold(blocking, timeout):
            prompts: list = []
            for messages in conversations:
                try:
                    prompts.append(self.prompt_tokens(messages))
                except RefusalEdgeError as exc:
                    prompts.append(exc)
            scored = self.engine.score_many([p for p in prompts if isinstance(p, list)], self.spec, temperature)
            with closing(scored):
                for i, prompt in enumerate(prompts):
                    result = next(scored) if isinstance(prompt, list) else prompt
                    if i == len(prompts) - 1:
                        last = (result,)
                        break
                    yield result
        # The model is free once the last result is computed: a caller that stops reading there (zip with a list
        # of keys does) must not hold it until the stream is garbage-collected.
        yield from last

    # generation -------------------------------------------------------------------------------
    def stream(
        self,
        messages: Messages,
        policy: Policy | Mapping | None = None,
        *,
        sampling: SamplingParams | None = None,
        blocking: bool = True,
        timeout: float | None = None,
        **sampling_kwargs: Unpack[SamplingOptions],
    ) -> Stream[Union[Decision, Chunk]]:
        """Yield the Decision, then Chunks of text. The decision token is fed into the same KV cache.

        The stream holds the model (other threads' calls wait) from its first event until it is exhausted or
        closed: ``with model.stream(...) as events:`` closes it at the end of the block; one dropped half-way is
        closed when garbage-collected. ``blocking``/``timeout`` apply when it starts, as for ``decide``."""
        return Stream(self._stream(messages, policy, sampling, sampling_kwargs, blocking, timeout))

    def _stream(self, messages, policy, sampling, sampling_kwargs, blocking, timeout):
        # A generator: bad arguments raise on the first event, as the answer's other errors do.
        params = sampling or SamplingParams(**sampling_kwargs)
        policy = self.policy(policy)
        last = ()
        with self._access.hold(blocking, timeout):
            with closing(self._events(self.prompt_tokens(messages), policy, params)) as events:
                for event in events:
                    if isinstance(event, Chunk) and event.finish_reason:
                        last = (event,)  # the model is free once the answer is complete (as in score_many)
                        break
                    yield event
        yield from last

    def _events(self, tokens: list[int], policy: Policy, params: SamplingParams):
        decision = self._decide(tokens, policy, self._predicted if params.max_tokens > 0 else None)
        if not decision.forced and params.temperature > 0:
            # The model picks its first token itself (natural rule, or an uncontrolled category), biases applied.
            bias = dict(zip(self.spec.token_ids, map(float, bias_vector(self.spec, decision.policy))))
            answer = self.engine.generate(tokens, params, first_token_bias=bias)
            with closing(answer):
                token = next(answer)
                text = "" if token in self._decision_ids else self._text(token)
                decision = decision_for_token(token, self.spec, decision, text)
                if token in self._decision_ids:
                    self._predicted = token
                yield decision
                yield from self._continue(token, answer, params)
        else:
            if decision.token_id in self._decision_ids:
                self._predicted = decision.token_id
            answer = self.engine.generate([*tokens, decision.token_id], params)
            with closing(answer):
                yield decision
                yield from self._continue(decision.token_id, answer, params)

    def generate(self, messages: Messages, policy: Policy | Mapping | None = None,
                 **sampling: Unpack[StreamOptions]) -> GenerationResult:
        """The whole answer of ``stream`` (``blocking``/``timeout`` as there)."""
        return collect(self.stream(messages, policy, **sampling))

    def _continue(self, token: int, answer: Iterator[int], params: SamplingParams) -> Iterator[Chunk]:
        """Text from the first response token on; ``answer`` yields the tokens after it (ends: context full)."""
        text = TextAssembler(params.stop)
        is_decision_token = token in self._decision_ids
        generated = 0 if is_decision_token else 1
        finish = "length"
        while True:
            if not is_decision_token:
                if self.tokenizer.is_eog(token):
                    finish = "stop"
                    break
                piece = text.push(self.tokenizer.piece(token))
                if piece:
                    yield Chunk(piece, completion_tokens=generated)
                if text.stopped:
                    finish = "stop"
                    break
            is_decision_token = False
            if generated >= params.max_tokens:
                break
            token = next(answer, None)
            if token is None:
                break
            generated += 1
        yield Chunk(text.finish(), finish_reason=finish, completion_tokens=generated)

    def _text(self, token: int) -> str:
        return self.tokenizer.piece(token).decode("utf-8", errors="replace")

