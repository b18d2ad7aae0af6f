"""`refusal-edge serve --answer-engine`: the slots of guard mode (guarded.py holds the guard itself)."""

from __future__ import annotations

import click

from ..answer_engine import AnswerEngineError
from ..guarded import AnswerTarget, GuardedModel

DEFAULT_PARALLEL = 4  # answers streaming from the answer engine at once; decisions take the decision model in turn


def guard_slots(decision_model, answer: AnswerTarget, parallel: int | None,
                name: str | None) -> tuple[list[GuardedModel], int]:
    """One guard shared by every slot (it is thread-safe: the decision model serializes its own calls, answers
    stream concurrently); the slots bound what is in flight. An answer engine that does not answer now is a
    warning, not a failure: it may come up after this server."""
    parallel = parallel or DEFAULT_PARALLEL
    guard = answer.guard(decision_model, name=name, connections=parallel)
    try:
        guard.answer.probe()
    except AnswerEngineError as exc:
        click.echo(f"warning: {exc}; requests answered by it fail until it answers", err=True)
    return [guard] * parallel, parallel
