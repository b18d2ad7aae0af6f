"""RefusalModel: one prefill, a policy-chosen first token, then ordinary decoding on the same KV cache.

It runs the model only through the engine seam (engine.py); llama.cpp in-process is the default engine.
"""

from __future__ import annotations

import os
import time
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Mapping, Sequence, Union

from .decision import Decision, FirstTokenScores, assistant_message, bias_vector, decide, decision_for_token
from .engine import Engine, PrefillStats, Tokenizer
from .errors import MetadataError, RefusalEdgeError
from .metadata import KEY_SPEC, RefusalSpec, discover
from .policy import Policy
from .sampling import SamplingParams
from .streaming import TextAssembler
from .template import CHATML_TEMPLATE, ChatTemplate

Messages = Union[str, Sequence[Mapping]]


@dataclass(frozen=True)
class Chunk:
    """A piece of the answer; the last one of a stream carries ``finish_reason`` ("stop" or "length")."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0


@dataclass(frozen=True)
class GenerationResult:
    decision: Decision
    text: str
    finish_reason: str
    completion_tokens: int
    generation_ms: float

    @property
    def message(self) -> dict:
        """The assistant turn to append to the history; it remembers its decision token for the next turn."""
        return assistant_message(self.text, self.decision)


class RefusalModel:
    def __init__(self, engine: Engine, spec: RefusalSpec, template: ChatTemplate, default_policy: Policy):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.spec = spec
        self.template = template
        self.default_policy = default_policy
        self._decision_ids = frozenset(spec.token_ids)
        self._decision_tokens = frozenset(ref.token for ref in spec.refs)
        # The decision token ``stream`` expects next: the last one it fed, at first [respond]. An engine may evaluate
        # it with the prompt (a hint: LlamaBackend does with predict_decision=True), so that when the policy picks it
        # the first answer token costs no extra decode step.
        self._predicted = spec.token_ids[0]

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        n_batch: int = 512,
        verbose: bool = False,
        repack: str | None = None,
        **llama_kwargs,
    ) -> "RefusalModel":
        """Load a GGUF on the CPU (``n_gpu_layers=-1`` offloads everything to Metal/CUDA builds). ``repack``:
        llama.cpp's extra CPU buffer types (repacked and AMX kernels) "on", "off" or "auto" (the default, or
        $REFUSAL_EDGE_REPACK: on unless a canary decode shows they crash or miscompute on this machine)."""
        from .backend import LlamaBackend  # the default engine; nothing else here knows it is llama.cpp

        return cls.from_engine(LlamaBackend(path, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                                            n_batch=n_batch, verbose=verbose, repack=repack, **llama_kwargs))

    @classmethod
    def connect(cls, url: str, tokenizer_source: str | os.PathLike, *, model: str | None = None,
                api_key: str | None = None, **options) -> "RefusalModel":
        """The model served by a remote engine (llama.cpp's llama-server or vLLM) at ``url``. ``tokenizer_source``
        is the GGUF it serves, loaded vocabulary-only, or the served Hugging Face checkpoint's directory (its
        tokenizer files): template, tokenizer and refusal spec stay here, and the engine is checked to serve that
        same model. ``options`` go to ``remote.connect`` (timeout, retries,
        concurrency, top_k)."""
        from .remote import connect

        return cls.from_engine(connect(url, tokenizer_source, model=model, api_key=api_key, **options))

    @classmethod
    def from_engine(cls, engine: Engine) -> "RefusalModel":
        """A model on any engine: spec, chat template and default policy come from its tokenizer's metadata.
        The model owns the engine from here on (``close`` closes it, also when this fails)."""
        tokenizer = engine.tokenizer
        try:
            spec = read_spec(tokenizer)
            default = Policy.from_dict(spec.default_policy, spec.category_names) if spec.default_policy else Policy()
        except RefusalEdgeError as exc:
            engine.close()
            raise type(exc)(f"{tokenizer.name}: {exc}") from None
        source = tokenizer.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        template = ChatTemplate(source, tokenizer.token_text(tokenizer.bos), tokenizer.token_text(tokenizer.eos))
        return cls(engine, spec, template, default)

    @property
    def backend(self) -> Engine:
        """The engine under its earlier name (tests and benchmarks of the llama.cpp engine reach it this way)."""
        return self.engine

    @property
    def name(self) -> str:
        """The model's display name (e.g. the GGUF's file stem)."""
        return self.tokenizer.name

    def close(self) -> None:
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
        tokens: list[int] = []
        for segment in self.template.render(messages, decision_tokens=self._decision_tokens):
            tokens += self.tokenizer.tokenize(segment.text, special=segment.special)
        bos = self.tokenizer.bos
        if self.tokenizer.add_bos and bos >= 0 and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    # decision ---------------------------------------------------------------------------------
    def decide(self, messages: Messages, policy: Policy | Mapping | None = None) -> Decision:
        """Prefill once (reusing the cached prefix) and choose the first response token. No decoding."""
        return self._decide(self.prompt_tokens(messages), self.policy(policy))

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

    def scores(self, messages: Messages, temperature: float = 1.0) -> FirstTokenScores:
        """The first-token scores alone, for offline evaluation: any policy can be applied to them later."""
        return self.engine.score(self.prompt_tokens(messages), self.spec, temperature)[0]

    def score_many(self, conversations: Iterable[Messages], temperature: float = 1.0
                   ) -> Iterator[Union[tuple[FirstTokenScores, PrefillStats], RefusalEdgeError]]:
        """Scores and prefill statistics per conversation, yielded in order as the engine delivers them (batched
        or concurrent where it can). A conversation that cannot be scored yields its error in its place."""
        prompts: list = []
        for messages in conversations:
            try:
                prompts.append(self.prompt_tokens(messages))
            except RefusalEdgeError as exc:
                prompts.append(exc)
        scored = self.engine.score_many([p for p in prompts if isinstance(p, list)], self.spec, temperature)
        for prompt in prompts:
            yield next(scored) if isinstance(prompt, list) else prompt

    # generation -------------------------------------------------------------------------------
    def stream(
        self,
        messages: Messages,
        policy: Policy | Mapping | None = None,
        *,
        sampling: SamplingParams | None = None,
        **sampling_kwargs,
    ) -> Iterator[Union[Decision, Chunk]]:
        """Yield the Decision, then Chunks of text. The decision token is fed into the same KV cache."""
        params = sampling or SamplingParams(**sampling_kwargs)
        tokens = self.prompt_tokens(messages)
        decision = self._decide(tokens, self.policy(policy), self._predicted if params.max_tokens > 0 else None)
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

    def generate(self, messages: Messages, policy: Policy | Mapping | None = None, **sampling) -> GenerationResult:
        t0 = time.perf_counter()
        decision, parts, last = None, [], Chunk("", "stop")
        for event in self.stream(messages, policy, **sampling):
            if isinstance(event, Decision):
                decision = event
            else:
                parts.append(event.text)
                last = event
        return GenerationResult(decision, "".join(parts), last.finish_reason or "stop", last.completion_tokens,
                                (time.perf_counter() - t0) * 1e3)

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


def read_spec(tokenizer: Tokenizer) -> RefusalSpec:
    raw = tokenizer.metadata.get(KEY_SPEC)
    spec = RefusalSpec.from_json(raw) if raw else discover(tokenizer.vocabulary())
    if spec is None:
        raise MetadataError(
            "not a refusal-token model: the GGUF has no refusal metadata (refusal.spec) and its vocabulary lacks the "
            "paper's tokens ([respond] with [refuse] or the five category tokens). Convert a refusal-token checkpoint "
            "with `refusal-edge convert`, or add metadata with `refusal-edge annotate`"
        )
    spec.check_against(tokenizer.token_text, tokenizer.is_control, tokenizer.n_vocab)
    return spec
