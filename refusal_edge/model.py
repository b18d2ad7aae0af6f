"""RefusalModel: one prefill, a policy-chosen first token, then ordinary decoding on the same KV cache."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Iterator, Mapping, Sequence, Union

from .backend import LlamaBackend
from .decision import Decision, FirstTokenScores, assistant_message, decide, decision_for_token
from .errors import MetadataError, RefusalEdgeError
from .metadata import KEY_SPEC, RefusalSpec, discover
from .policy import RESPOND, Policy
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
    def __init__(self, backend: LlamaBackend, spec: RefusalSpec, template: ChatTemplate, default_policy: Policy):
        self.backend = backend
        self.spec = spec
        self.template = template
        self.default_policy = default_policy
        self._decision_ids = frozenset(spec.token_ids)
        self._decision_tokens = frozenset(ref.token for ref in spec.refs)

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
        **llama_kwargs,
    ) -> "RefusalModel":
        """Load a GGUF on the CPU (``n_gpu_layers=-1`` offloads everything to Metal/CUDA builds)."""
        backend = LlamaBackend(path, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                               n_batch=n_batch, verbose=verbose, **llama_kwargs)
        try:
            spec = read_spec(backend)
            default = Policy.from_dict(spec.default_policy, spec.category_names) if spec.default_policy else Policy()
        except RefusalEdgeError as exc:
            backend.close()
            raise type(exc)(f"{backend.path}: {exc}") from None
        source = backend.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        template = ChatTemplate(source, backend.token_text(backend.bos), backend.token_text(backend.eos))
        return cls(backend, spec, template, default)

    def close(self) -> None:
        self.backend.close()

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
            tokens += self.backend.tokenize(segment.text, special=segment.special)
        bos = self.backend.bos
        if self.backend.add_bos and bos >= 0 and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    # decision ---------------------------------------------------------------------------------
    def decide(self, messages: Messages, policy: Policy | Mapping | None = None) -> Decision:
        """Prefill once (reusing the cached prefix) and choose the first response token. No decoding."""
        policy = self.policy(policy)
        tokens = self.prompt_tokens(messages)
        t0 = time.perf_counter()
        reused = self.backend.prefill(tokens)
        t1 = time.perf_counter()
        scores = FirstTokenScores.from_logits(self.backend.logits(), self.spec, policy.temperature)
        decision = decide(scores, self.spec, policy)
        t2 = time.perf_counter()
        if decision.token_id not in self._decision_ids:
            decision = replace(decision, token=self._text(decision.token_id))
        return replace(decision, prefill_ms=(t1 - t0) * 1e3, decision_ms=(t2 - t1) * 1e3,
                       prompt_tokens=len(tokens), cached_tokens=reused)

    def scores(self, messages: Messages, temperature: float = 1.0) -> FirstTokenScores:
        """The first-token scores alone, for offline evaluation: any policy can be applied to them later."""
        self.backend.prefill(self.prompt_tokens(messages))
        return FirstTokenScores.from_logits(self.backend.logits(), self.spec, temperature)

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
        decision = self.decide(messages, policy)
        sampler = self.backend.sampler(params)
        try:
            if not decision.forced and params.temperature > 0:
                decision = self._sample_own_choice(decision, sampler)
            yield decision
            yield from self._continue(decision.token_id, sampler, params)
        finally:
            sampler.close()

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

    def _sample_own_choice(self, decision: Decision, sampler) -> Decision:
        """The model picks its first token itself (natural rule, or an uncontrolled category), biases applied."""
        biases = decision.policy.biases
        if biases:
            logits = self.backend.logits()
            logits[self.spec.respond.id] += biases.get(RESPOND, 0.0)
            for ref in self.spec.categories:
                logits[ref.id] += biases.get(ref.name, 0.0)
        token = sampler.sample()
        text = "" if token in self._decision_ids else self._text(token)
        return decision_for_token(token, self.spec, decision, text)

    def _continue(self, token: int, sampler, params: SamplingParams) -> Iterator[Chunk]:
        text = TextAssembler(params.stop)
        is_decision_token = token in self._decision_ids
        generated = 0 if is_decision_token else 1
        finish = "length"
        while True:
            if not is_decision_token:
                if self.backend.is_eog(token):
                    finish = "stop"
                    break
                piece = text.push(self.backend.piece(token))
                if piece:
                    yield Chunk(piece, completion_tokens=generated)
                if text.stopped:
                    finish = "stop"
                    break
            is_decision_token = False
            if generated >= params.max_tokens or self.backend.context_left <= 1:
                break
            self.backend.feed(token)
            token = sampler.sample()
            generated += 1
        yield Chunk(text.finish(), finish_reason=finish, completion_tokens=generated)

    def _text(self, token: int) -> str:
        return self.backend.piece(token).decode("utf-8", errors="replace")


def read_spec(backend: LlamaBackend) -> RefusalSpec:
    raw = backend.metadata.get(KEY_SPEC)
    spec = RefusalSpec.from_json(raw) if raw else discover(backend.vocabulary())
    if spec is None:
        raise MetadataError(
            "not a refusal-token model: the GGUF has no refusal metadata (refusal.spec) and its vocabulary lacks the "
            "paper's tokens ([respond] with [refuse] or the five category tokens). Convert a refusal-token checkpoint "
            "with `refusal-edge convert`, or add metadata with `refusal-edge annotate`"
        )
    spec.check_against(backend.token_text, backend.is_control, backend.n_vocab)
    return spec
