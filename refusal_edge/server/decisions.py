"""Decisions without generation: OpenAI's ``POST /v1/moderations`` and the native ``POST /v1/refusal/decisions``.

Each input is prefilled once and decided by the policy (the server's, merged with the request's ``refusal``
object); nothing is decoded. All inputs of one call run back to back on one slot, so a shared prefix (the chat
template's opening) stays in its KV cache.

Moderation categories are the model's own refusal categories, by name. For the paper's CoCoNot models:
"Requests with safety concerns" covers what OpenAI splits into harassment, hate, illicit, self-harm, sexual and
violence (one score for all of them); "Incomplete", "Indeterminate", "Unsupported" and "Humanizing" requests
have no OpenAI counterpart; OpenAI's categories have no score here and are absent from the results.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import ClassVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..decision import Decision
from ..policy import Policy
from .errors import ApiError
from .headers import decision_headers
from .requests import parse_messages, parse_policy, read_json, text_content
from .service import Service, answer, next_event


@dataclass(frozen=True)
class DecisionRequest:
    inputs: list[list[dict]]  # one conversation per input
    policy: Policy
    prompt_field: ClassVar[str] = "input"  # what an error about a prompt (too long) names

    def run(self, model):
        """What a slot does with it: one Decision per input, in order."""
        for messages in self.inputs:
            yield model.decide(messages, self.policy)


def routes(service: Service) -> list[Route]:
    terms = service.terms

    async def moderations(request: Request) -> Response:
        raw = await read_json(request, terms.limits.max_body_bytes)
        work = DecisionRequest(moderation_inputs(raw.get("input"), terms.limits.max_messages),
                               parse_policy(raw.get("refusal"), terms))
        head = {"id": f"modr-{uuid.uuid4().hex}", "model": service.settings.model_id}
        return await run(request, service, work,
                         lambda decisions: {**head, "results": [moderation_result(d) for d in decisions]})

    async def refusal_decisions(request: Request) -> Response:
        raw = await read_json(request, terms.limits.max_body_bytes)
        work = DecisionRequest(conversations(raw.get("input"), terms.limits.max_messages, terms.decision_tokens),
                               parse_policy(raw.get("refusal"), terms))
        return await run(request, service, work, lambda decisions: {
            "object": "list", "model": service.settings.model_id, "policy": work.policy.to_dict(),
            "data": [{"object": "refusal.decision", "index": i, **d.to_dict()}
                     for i, d in enumerate(decisions)],
        })

    return [Route("/v1/moderations", moderations, methods=["POST"]),
            Route("/v1/refusal/decisions", refusal_decisions, methods=["POST"])]


async def run(request: Request, service: Service, work: DecisionRequest, render) -> Response:
    decisions: list[Decision] = []

    async def complete(job, first: Decision) -> dict:
        decisions.append(first)
        while len(decisions) < len(work.inputs):
            decisions.append(await next_event(job))
        return render(decisions)

    response = await answer(request, service.pool, work, False, None, complete)
    if len(decisions) == len(work.inputs):  # answered: the headers name every input's decision, not the first's
        response.headers.update(decision_headers(decisions))
    return response


def moderation_result(decision: Decision) -> dict:
    """OpenAI's result shape. ``flagged`` is the policy's decision; the chosen category is the one flagged."""
    return {
        "flagged": decision.refused,
        "categories": {name: name == decision.category for name in decision.probabilities},
        "category_scores": dict(decision.probabilities),
        "category_applied_input_types": {name: ["text"] for name in decision.probabilities},
        "refusal": {"token": decision.token, "category": decision.category,
                    "respond_probability": decision.respond_probability},
    }


def moderation_inputs(raw: object, limit: int) -> list[list[dict]]:
    """OpenAI's ``input``: a string, a list of strings (one result each), or a list of text parts (one input)."""
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        texts = raw
    elif isinstance(raw, list) and raw and all(isinstance(item, dict) for item in raw):
        texts = [text_content(raw, "input")]
    else:
        raise ApiError(400, "'input' must be a string, a non-empty list of strings, or a list of text parts",
                       param="input")
    _check_count(len(texts), limit)
    return [[{"role": "user", "content": text}] for text in texts]


def conversations(raw: object, limit: int, decision_tokens: frozenset[str]) -> list[list[dict]]:
    """The native ``input``: a string, or a list whose items are strings or conversations (lists of messages)."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'input' must be a string or a non-empty list of strings and conversations "
                            "(lists of {role, content} messages)", param="input")
    _check_count(len(raw), limit)
    inputs = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            inputs.append([{"role": "user", "content": item}])
            continue
        try:
            inputs.append(parse_messages(item, limit, decision_tokens))
        except ApiError as exc:
            raise ApiError(400, f"input[{i}]: {exc.message}", param="input") from None
    return inputs


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise ApiError(400, f"'input' holds {count} inputs; this server accepts at most {limit} per call "
                            "(refusal-edge serve --max-messages)", param="input")
