"""Guard mode (guarded.py, answer_engine.py) against fake answer engines that speak Ollama's, LM Studio's,
llama-server's and vLLM's OpenAI-compatible wire formats: who answers, what reaches the engine (never a refused
request), the Python API (threads, asyncio), and every way an engine can fail, bounded by its timeout."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

pytest.importorskip("httpx")
pytest.importorskip("starlette")

from fake_answer_engine import ANSWER, FLAVORS, Behaviour, serve  # noqa: E402

from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.answer_engine import AnswerEngine, AnswerEngineError, request_sampling  # noqa: E402
from refusal_edge.guarded import ANSWERED_BY, GuardedModel  # noqa: E402
from refusal_edge.metadata import CATEGORIES  # noqa: E402
from refusal_edge.policy import Policy  # noqa: E402
from refusal_edge.sampling import SamplingParams  # noqa: E402

THREADS = 1
RESPOND = Policy(rule="per-category", threshold=1.0)  # nothing is over a threshold of 1: [respond], forced
REFUSE = Policy(rule="per-category", threshold=1.0, thresholds={CATEGORIES[1]: 0.0})  # that category, forced
PROMPT = "What is the capital of France? zq-marker-7731"
KEY = "sk-secret-guard-key"


@pytest.fixture
def engine():
    behaviour = Behaviour()
    with serve(behaviour) as server:
        yield behaviour, server.url


@pytest.fixture(scope="module")
def decision_model(tiny_gguf):
    model = RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS)
    yield model
    model.close()


class Unowned:
    """The shared decision model, lent to a guard that must not close it (the guards here are many)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def close(self):
        pass


def guard(decision_model, url, **options) -> GuardedModel:
    engine_options = {k: options.pop(k) for k in ("model", "api_key", "timeout") if k in options}
    return GuardedModel(Unowned(decision_model), AnswerEngine(url, **engine_options), **options)


def test_a_respond_is_answered_by_the_engine_with_the_clients_messages(decision_model, engine):
    behaviour, url = engine
    history = [{"role": "user", "content": "hi"},
               {"role": "assistant", "content": "hello", "refusal_token": decision_model.spec.respond.token},
               {"role": "user", "content": PROMPT}]
    with guard(decision_model, url) as g:
        result = g.generate(history, RESPOND, temperature=0, max_tokens=9)
    assert result.text == "".join(ANSWER) and result.finish_reason == "stop"
    assert result.completion_tokens == len(ANSWER)  # the engine's own count (its usage chunk)
    assert not result.decision.refused and result.decision.meta[ANSWERED_BY] == behaviour.model
    [sent] = behaviour.received
    assert sent["messages"] == [{k: m[k] for k in ("role", "content")} for m in history]  # no decision token
    assert (sent["model"], sent["stream"], sent["temperature"], sent["max_tokens"]) == (behaviour.model, True, 0, 9)
    assert sent["stream_options"] == {"include_usage": True} and "top_k" not in sent


def test_a_refused_request_never_reaches_the_engine(decision_model, engine):
    behaviour, url = engine
    expected = decision_model.generate(PROMPT, REFUSE, temperature=0, max_tokens=6)
    with guard(decision_model, url) as g:
        result = g.generate(PROMPT, REFUSE, temperature=0, max_tokens=6)
        assert g.decide(PROMPT, REFUSE).category == CATEGORIES[1]
    assert result.decision.refused and result.decision.category == CATEGORIES[1]
    assert result.text == expected.text  # the decision model's own refusal, as without an answer engine
    assert result.decision.meta[ANSWERED_BY] == decision_model.name
    assert behaviour.received == []


def test_the_engine_writes_a_refusal_from_the_category_alone(decision_model, engine):
    behaviour, url = engine
    with guard(decision_model, url, refusal_writer="answer-engine") as g:
        result = g.generate(PROMPT, REFUSE, temperature=0, max_tokens=6)
    assert result.decision.refused and result.text == "".join(ANSWER)
    [sent] = behaviour.received
    assert CATEGORIES[1] in json.dumps(sent) and "zq-marker-7731" not in json.dumps(sent)


def test_speculation_answers_a_respond_and_is_cancelled_on_a_refusal(decision_model, engine):
    behaviour, url = engine
    with guard(decision_model, url, speculative=True) as g:
        assert g.generate(PROMPT, RESPOND, temperature=0).text == "".join(ANSWER)
        refused = g.generate(PROMPT, REFUSE, temperature=0, max_tokens=4)
    expected = decision_model.generate(PROMPT, REFUSE, temperature=0, max_tokens=4)
    assert refused.decision.refused and refused.decision.meta[ANSWERED_BY] == decision_model.name
    assert refused.text == expected.text  # the engine's speculative answer never reaches the caller
    # the documented price: the refused prompt may have reached the engine before it was cancelled
    assert 1 <= len(behaviour.received) <= 2


@pytest.mark.parametrize("flavor", FLAVORS)
def test_every_engines_wire_format_gives_the_answer_and_its_usage(decision_model, flavor):
    behaviour = Behaviour(flavor=flavor, model="org/some-model" if flavor == "vllm" else "llama3.2:latest")
    with serve(behaviour) as server, guard(decision_model, server.url + "/v1") as g:
        events = list(g.stream(PROMPT, RESPOND, temperature=0))
    decision, *chunks = events
    assert decision.meta[ANSWERED_BY] == behaviour.model  # as the engine lists it in /v1/models
    assert "".join(c.text for c in chunks) == "".join(ANSWER) and "thinking" not in "".join(c.text for c in chunks)
    assert [c.finish_reason for c in chunks][-1] == "stop" and all(c.finish_reason is None for c in chunks[:-1])
    assert (chunks[-1].completion_tokens, chunks[-1].prompt_tokens) == (len(ANSWER), 7)


MISBEHAVIOURS = {
    "error": "failed: HTTP 500: out of memory",
    "garbage": "not JSON",
    "no-choices": "without a list of choices",
    "mid-stream-error": "mid-stream: the engine crashed",
    "unfinished": "ended before the answer finished",
    "slow": "within 1 s",
}


@pytest.mark.parametrize("flavor", ["ollama", "lmstudio"])
@pytest.mark.parametrize("misbehave", MISBEHAVIOURS)
def test_a_failing_engine_is_a_clear_error_that_hides_its_address_and_key(decision_model, misbehave, flavor):
    behaviour = Behaviour(flavor=flavor, misbehave=misbehave, delay_s=3.0 if misbehave == "slow" else 0.0,
                          api_key=KEY)
    with serve(behaviour) as server, guard(decision_model, server.url, api_key=KEY, timeout=1.0) as g:
        t0 = time.monotonic()
        with pytest.raises(AnswerEngineError) as failure:
            g.generate(PROMPT, RESPOND, temperature=0)
        assert time.monotonic() - t0 < 2.5  # bounded by the timeout, never a hang
    message = str(failure.value)
    assert MISBEHAVIOURS[misbehave] in message and message.startswith("the answer engine")
    assert server.url.split("//")[1] not in message and KEY not in message


def test_an_engine_that_is_down_or_refuses_the_key_says_so(decision_model):
    behaviour = Behaviour(api_key=KEY)
    with serve(behaviour) as server:
        with guard(decision_model, server.url, api_key="wrong", model="m") as g:
            with pytest.raises(AnswerEngineError, match="refused refusal-edge's API key"):
                g.generate(PROMPT, RESPOND)
        url = server.url
    with guard(decision_model, url, model="m") as g:  # the server is gone: nothing listens there now
        with pytest.raises(AnswerEngineError, match="unreachable") as failure:
            g.generate(PROMPT, RESPOND)
        assert url.split("//")[1] not in str(failure.value)
        assert g.decide(PROMPT, REFUSE).refused  # deciding needs no answer engine
        assert g.generate(PROMPT, REFUSE, max_tokens=2).decision.refused  # nor does a refusal


@pytest.mark.parametrize("flavor", ["ollama", "lmstudio"])
def test_a_model_the_engine_does_not_have_is_named_as_the_option_to_fix(decision_model, flavor):
    with serve(Behaviour(flavor=flavor)) as server, guard(decision_model, server.url, model="llama9") as g:
        with pytest.raises(AnswerEngineError, match=r"no such model or route \(HTTP 404\).*llama9.*--answer-model"):
            g.generate(PROMPT, RESPOND)


def test_the_guard_is_thread_safe_and_asyncio_friendly(decision_model, engine):
    behaviour, url = engine
    results, errors = [], []
    with guard(decision_model, url) as g:
        def ask(policy):
            try:
                results.append(g.generate(PROMPT, policy, temperature=0, max_tokens=8))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=ask, args=(RESPOND if i % 2 else REFUSE,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        async def both():
            answer = await g.aio.generate(PROMPT, RESPOND, temperature=0)
            streamed = [event async for event in g.aio.stream(PROMPT, RESPOND, temperature=0)]
            return answer, streamed

        answer, streamed = asyncio.run(both())
    assert errors == [] and len(results) == 6
    assert sorted(r.decision.refused for r in results) == [False] * 3 + [True] * 3
    assert all(r.text == "".join(ANSWER) for r in results if not r.decision.refused)
    assert answer.text == "".join(ANSWER) and "".join(e.text for e in streamed[1:]) == answer.text
    assert len(behaviour.received) == 3 + 2  # the refused three never reached it


def test_an_engine_that_ignores_max_tokens_is_cut_there(decision_model):
    behaviour = Behaviour(pieces=[f" word{i}" for i in range(50)])
    with serve(behaviour) as server, guard(decision_model, server.url) as g:
        result = g.generate(PROMPT, RESPOND, temperature=0, max_tokens=3)
    assert (result.text, result.finish_reason, result.completion_tokens) == (" word0 word1 word2", "length", 3)


def test_sampling_sends_openai_fields_and_only_changed_llama_cpp_extensions():
    sent = request_sampling(SamplingParams(temperature=0.2, top_p=0.5, max_tokens=7, top_k=5, seed=3, stop=("x",)))
    assert sent == {"temperature": 0.2, "top_p": 0.5, "max_tokens": 7, "top_k": 5, "seed": 3, "stop": ["x"]}


@pytest.mark.parametrize("listed, shown", [("/srv/models/Qwen2.5-7B.Q4_K_M.gguf", "Qwen2.5-7B.Q4_K_M.gguf"),
                                           ("C:\\models\\phi.gguf", "phi.gguf"), ("org/model", "org/model"),
                                           ("llama3.2:latest", "llama3.2:latest")])
def test_answers_name_the_model_not_the_directories_of_its_file(listed, shown):
    engine = AnswerEngine("http://127.0.0.1:9", model=listed)
    assert engine.label == shown and engine.model == listed  # the engine is still asked for it by its own name
