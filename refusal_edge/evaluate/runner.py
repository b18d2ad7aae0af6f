"""The only part of evaluation that runs the model: score what the store lacks, decode answers on request.

Prompts are scored in sorted order of their messages, so prompts that share a system prompt (or any other
prefix) run back to back and the engine reuses that prefix's KV cache instead of prefilling it again. They go to
the engine as one ordered request (``RefusalModel.score_many``), so batched or concurrent engines see them all, and
each result is stored as it arrives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import RefusalEdgeError
from ..metadata import RefusalSpec
from ..policy import Policy
from ..progress import track
from .batch import ScoreMatrix
from .data import DataError, Example
from .store import ScoreStore, answer_key, prompt_key


def messages_for(example: Example, system: str | None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": example.prompt}]


@dataclass
class ScoringRun:
    """What scoring did: how many prompts came from the store, how many were prefilled, what was skipped."""

    keys: list[str]
    examples: list[Example]
    from_store: int = 0
    scored: int = 0
    prefill_tokens: int = 0
    reused_tokens: int = 0
    skipped: list[str] = field(default_factory=list)


def score_examples(examples: Sequence[Example], store: ScoreStore, load_model: Callable, *, system: str | None,
                   temperature: float = 1.0, skip_bad: bool = False, progress: bool = True) -> ScoringRun:
    """Make sure the store holds scores for every example; the model is loaded only if something is missing.

    A prompt the model cannot take (too long for the context) raises DataError naming file and line, or is
    dropped and counted with ``skip_bad``.
    """
    keys = [prompt_key(messages_for(e, system), temperature) for e in examples]
    todo: dict[str, tuple[list[dict], Example]] = {}
    for key, example in zip(keys, examples):
        if key not in store and key not in todo:
            todo[key] = (messages_for(example, system), example)
    run = ScoringRun(keys=[], examples=[], from_store=len(set(keys)) - len(todo))
    failed: set[str] = set()
    if todo:
        model = load_model()
        store.set_spec(model.spec)
        order = sorted(todo, key=lambda k: json.dumps(todo[k][0], ensure_ascii=False))
        results = model.score_many([todo[key][0] for key in order], temperature)
        try:
            # Counted as they are done: zip ends the loop with the last result, so the display reaches 100 %.
            for key, result in track(zip(order, results), "scoring prompts", len(order), unit="prompts",
                                     enabled=progress):
                if isinstance(result, RefusalEdgeError):
                    where = todo[key][1].where
                    if not skip_bad:
                        raise DataError(f"{where}: {result}") from None
                    run.skipped.append(f"{where}: {result}")
                    failed.add(key)
                    continue
                scores, stats = result
                store.add(key, scores)
                run.scored += 1
                run.prefill_tokens += stats.prompt_tokens
                run.reused_tokens += stats.reused_tokens
        finally:
            # zip stops at the last prompt and leaves a generator's last step pending: close it now, while its
            # engine (a Ray cluster) is still up, rather than in some later garbage collection.
            getattr(results, "close", lambda: None)()
    for key, example in zip(keys, examples):
        if key not in failed:
            run.keys.append(key)
            run.examples.append(example)
    return run


def score_matrix(store: ScoreStore, keys: Sequence[str], spec: RefusalSpec) -> ScoreMatrix:
    return ScoreMatrix.from_scores([store.get(k) for k in keys], width=len(spec.token_ids))


def generate_answers(examples: Sequence[Example], keys: Sequence[str], token_ids: np.ndarray, store: ScoreStore,
                     load_model: Callable, policy: Policy, *, system: str | None, max_tokens: int,
                     progress: bool = True) -> list[str]:
    """Greedy answers after each prompt's chosen first token; stored, so a rerun decodes only what is missing."""
    answers: list[str | None] = [store.answers.get(answer_key(k, int(t), max_tokens)) for k, t in zip(keys, token_ids)]
    missing = [i for i, a in enumerate(answers) if a is None]
    if missing:
        model = load_model()
        missing.sort(key=lambda i: examples[i].prompt)
        for i in track(missing, "generating answers", unit="answers", enabled=progress):
            result = model.generate(messages_for(examples[i], system), policy, temperature=0.0, max_tokens=max_tokens)
            # Stored under the token actually used; a float tie at a threshold could pick the neighbour.
            store.add_answer(answer_key(keys[i], result.decision.token_id, max_tokens), result.text)
            answers[i] = result.text
    return [a or "" for a in answers]
