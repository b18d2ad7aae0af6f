"""Guard mode: a refusal-token model decides, the model the user already runs answers.

``GuardedModel(decision_model, AnswerEngine(url))`` has the calls of a ``RefusalModel`` (decide, stream, generate,
``aio``): every request is decided by the decision model with the request's policy; on ``[respond]`` the messages
(role and content only: no decision tokens) and the sampling go to the answer engine (answer_engine.py) and its
answer streams back; on a refusal the decision model writes the refusal as it does alone, or, with
``refusal_writer="answer-engine"``, the answer engine writes it from an instruction naming the category. A refused
request never reaches the answer engine, unless ``speculative=True`` (see Speculation). Every decision says who
answered in ``decision.meta["answered_by"]``.

Thread-safe: the decision model serializes its own calls (its lock is held for the decision, and for a refusal it
writes), answers stream from the engine concurrently, one connection pool shared.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

from .access import Stream
from .answer_engine import AnswerEngine, AnswerPiece
from .decision import Decision
from .sampling import SamplingParams
from .streaming import Chunk, GenerationResult, collect

REFUSAL_WRITERS = ("decision-model", "answer-engine")
ANSWERED_BY = "answered_by"  # the decision's meta field naming the model that wrote the answer


class GuardedModel:
    """A decision model in front of an answer engine; it owns both (``close`` closes them). ``name``: how answers
    written by the decision model name it [default: its own name]."""

    def __init__(self, model, answer: AnswerEngine, *, refusal_writer: str = "decision-model",
                 speculative: bool = False, name: str | None = None) -> None:
        if refusal_writer not in REFUSAL_WRITERS:
            raise ValueError(f"refusal_writer must be one of {', '.join(REFUSAL_WRITERS)}, got {refusal_writer!r}")
        self.model, self.answer = model, answer
        self.refusal_writer, self.speculative = refusal_writer, speculative
        self.decision_name = name or model.name

    # what the server and the window code read from a model: the decision model's --------------------------------
    @property
    def name(self) -> str:
        return self.decision_name

    @property
    def engine(self):
        return self.model.engine

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def spec(self):
        return self.model.spec

    @property
    def categories(self) -> tuple[str, ...]:
        return self.model.categories

    @property
    def default_policy(self):
        return self.model.default_policy

    def policy(self, policy=None):
        return self.model.policy(policy)

    def prompt_tokens(self, messages) -> list[int]:
        return self.model.prompt_tokens(messages)

    def fit(self, messages, max_tokens: int = 0, **options):
        """The window that fits the decision model's context (the answer engine gets the same window)."""
        return self.model.fit(messages, max_tokens, **options)

    def decide(self, messages, policy=None, **options) -> Decision:
        """The decision alone: the answer engine is not asked."""
        return self.model.decide(messages, policy, **options)

    def scores(self, messages, temperature: float = 1.0, **options):
        return self.model.scores(messages, temperature, **options)

    def score_many(self, conversations: Iterable, temperature: float = 1.0, **options):
        return self.model.score_many(conversations, temperature, **options)

    @property
    def aio(self):
        """The same calls for asyncio, in worker threads (aio.py)."""
        from .aio import AsyncRefusalModel

        return AsyncRefusalModel(self)

    def close(self) -> None:
        try:
            self.answer.close()
        finally:
            self.model.close()

    def __enter__(self) -> "GuardedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # answers -----------------------------------------------------------------------------------------------------
    def stream(self, messages, policy=None, *, sampling: SamplingParams | None = None, blocking: bool = True,
               timeout: float | None = None, **sampling_kwargs) -> Stream:
        """The Decision, then Chunks of the answer, from whichever model writes it. On ``[respond]`` the decision
        is yielded with the engine's first piece, so that an engine that is down fails before any event."""
        return Stream(self._stream(messages, policy, sampling, sampling_kwargs, blocking, timeout))

    def generate(self, messages, policy=None, **sampling) -> GenerationResult:
        """The whole answer of ``stream``."""
        return collect(self.stream(messages, policy, **sampling))

    def _stream(self, messages, policy, sampling, sampling_kwargs, blocking, timeout):
        params = sampling or SamplingParams(**sampling_kwargs)
        messages = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
        speculation = Speculation(self.answer, messages, params) if self.speculative and params.max_tokens else None
        try:
            decided = self.model.stream(messages, policy, sampling=params, blocking=blocking, timeout=timeout)
            with closing(decided):
                decision = next(decided)
                if decision.refused and speculation is not None:  # cancelled now, not after the refusal
                    speculation.cancel()
                    speculation = None
                if params.max_tokens == 0 or (decision.refused and self.refusal_writer == "decision-model"):
                    yield labelled(decision, self.decision_name)
                    yield from decided  # the refusal, written by the decision model as it does alone
                    return
            # the decision model is free again: the answer streams from the engine
            if decision.refused:
                answer = self.answer.refusal(decision.category, params)
            elif speculation is not None:
                answer, speculation = speculation.take(), None
            else:
                answer = self.answer.stream(messages, params)
            with closing(answer):
                first = next(answer)
                yield labelled(decision, self.answer.label)
                yield from chunks(first, answer, params.max_tokens)
        finally:
            if speculation is not None:
                speculation.cancel()


def labelled(decision: Decision, answered_by: str) -> Decision:
    return replace(decision, meta={**decision.meta, ANSWERED_BY: answered_by})


def chunks(first: AnswerPiece, rest: Iterator[AnswerPiece], max_tokens: int) -> Iterator[Chunk]:
    """The engine's pieces as the runtime's Chunks; the count is of pieces until the engine reports its own. An
    engine that goes on past ``max_tokens`` pieces (each holds a token or more) is cut there: finish "length"."""
    pieces = 0
    with closing(_chain(first, rest)) as answer:
        for piece in answer:
            pieces += bool(piece.text)
            if piece.finish_reason or pieces > max_tokens:
                reported = piece.completion_tokens
                yield Chunk(piece.text if pieces <= max_tokens else "", piece.finish_reason or "length",
                            min(pieces, max_tokens) if reported is None else reported,
                            prompt_tokens=piece.prompt_tokens)
                return
            yield Chunk(piece.text, completion_tokens=pieces)


def _chain(first, rest):
    try:
        yield first
        yield from rest
    finally:
        rest.close()  # also when closed before reaching ``rest``: its connection is closed now, not when collected


class Speculation:
    """The answer asked for while the decision is made (``speculative=True``): its first piece may be ready when the
    decision is. The price: a request that is then refused has reached the engine (its prefill, its logs) before
    the request is cancelled, which happens at the engine's first piece (a blocked read cannot be interrupted)."""

    def __init__(self, answer: AnswerEngine, messages, params: SamplingParams) -> None:
        self._events = answer.stream(messages, params)
        self._first: Future = Future()
        self._lock = threading.Lock()
        self._cancelled = False
        threading.Thread(target=self._run, name="refusal-edge-speculation", daemon=True).start()

    def _run(self) -> None:
        try:
            self._first.set_result(next(self._events))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the answer
            self._first.set_exception(exc)
        with self._lock:  # closing under the lock: never from two threads at once
            if self._cancelled:
                self._events.close()

    def take(self) -> Iterator[AnswerPiece]:
        """The answer, from its first piece on (waiting for it, or raising the engine's error)."""
        first = self._first.result()
        return _chain(first, self._events)

    def cancel(self) -> None:
        """Close the request now if its first piece is in, else as soon as it is."""
        with self._lock:
            self._cancelled = True
            if self._first.done():
                self._events.close()



@dataclass(frozen=True)
class AnswerTarget:
    """Guard mode as the command line gives it (--answer-engine and its companions)."""

    url: str
    model: str | None = None
    api_key: str | None = None
    timeout: float = 60.0  # seconds one request to the answer engine may take to start answering (--engine-timeout)
    refusal_writer: str = "decision-model"
    speculative: bool = False

    def guard(self, decision_model, name: str | None = None, connections: int = 16) -> GuardedModel:
        """``decision_model`` in front of this answer engine; the guard owns the model once this returns."""
        answer = AnswerEngine(self.url, model=self.model, api_key=self.api_key, timeout=self.timeout,
                              connections=connections)
        return GuardedModel(decision_model, answer, refusal_writer=self.refusal_writer,
                            speculative=self.speculative, name=name)
