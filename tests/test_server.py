"""The OpenAI-compatible server, live on a loopback port, driven by the official openai client and raw HTTP.

Expected answers come from an in-process RefusalModel on the same file: greedy decoding must give the same
text through the server as without it.
"""

import concurrent.futures
import json
import threading
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.metadata import CATEGORIES  # noqa: E402
from refusal_edge.server.app import ServerSettings, create_app  # noqa: E402
from refusal_edge.server.requests import Limits  # noqa: E402
from refusal_edge.server.run import BackgroundServer  # noqa: E402
from refusal_edge.server.slots import SlotPool  # noqa: E402
from conftest import THREADS  # noqa: E402

API_KEY = "test-key"
N_CTX = 256  # the tiny_model fixture's context: references and server must match
LIMITS = Limits(max_body_bytes=64_000, max_messages=8, max_tokens=64)
HELLO = [{"role": "user", "content": "hello world"}]
SAFETY = {"threshold": 1.0, "thresholds": {"safety": 0.0}}  # forces [Requests with safety concerns]


def start_server(gguf, slots: int, api_key=None):
    models = [RefusalModel.load(gguf, n_ctx=N_CTX, n_threads=THREADS) for _ in range(slots)]
    settings = ServerSettings(model_id="tiny", policy=models[0].default_policy, api_key=api_key, limits=LIMITS)
    return models, BackgroundServer(create_app(SlotPool(models), settings))


@pytest.fixture(scope="module")
def server(tiny_gguf):
    """One slot, so that consecutive requests share a KV cache; an API key, so every /v1 call must send it."""
    models, running = start_server(tiny_gguf, slots=1, api_key=API_KEY)
    with running:
        yield running
    for model in models:
        model.close()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60,
                      trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(trust_env=False) as transport:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60,
                            http_client=transport)


def test_completion_matches_the_runtime(client, tiny_model):
    reply = client.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=16)
    expected = tiny_model.generate(HELLO, temperature=0, max_tokens=16)
    choice = reply.choices[0]
    assert choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert reply.usage.completion_tokens == expected.completion_tokens
    assert reply.usage.prompt_tokens == expected.decision.prompt_tokens
    assert reply.refusal["token"] == expected.decision.token
    assert reply.refusal["probabilities"] == pytest.approx(expected.decision.probabilities, rel=1e-4)
    assert reply.refusal["respond_probability"] == pytest.approx(expected.decision.respond_probability, rel=1e-4)


@pytest.mark.parametrize("name, category", [("safety", "Requests with safety concerns"),
                                            ("humanizing", "Humanizing requests")])
def test_per_request_thresholds_force_a_category(client, tiny_model, name, category):
    refusal = {"threshold": 1.0, "thresholds": {name: 0.0}}
    reply = client.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=12,
                                           extra_body={"refusal": refusal})
    decision = reply.refusal
    assert (decision["category"], decision["token"]) == (category, f"[{category}]")
    assert decision["refused"] and decision["forced"]
    assert decision["policy"]["thresholds"] == {category: 0.0}
    assert reply.choices[0].message.refusal_token == f"[{category}]"
    expected = tiny_model.generate(HELLO, refusal, temperature=0, max_tokens=12)
    assert reply.choices[0].message.content == expected.text
    assert f"[{category}]" not in reply.choices[0].message.content


def test_without_a_refusal_object_the_server_policy_decides(client, tiny_model):
    reply = client.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=4)
    assert reply.refusal["token"] == tiny_model.decide(HELLO).token
    assert reply.refusal["policy"] == tiny_model.default_policy.to_dict()


def test_stream_carries_the_decision_in_its_first_chunk(client, tiny_model):
    chunks = list(client.chat.completions.create(
        model="tiny", messages=HELLO, temperature=0, max_tokens=16, stream=True,
        stream_options={"include_usage": True}, extra_body={"refusal": SAFETY}))
    expected = tiny_model.generate(HELLO, SAFETY, temperature=0, max_tokens=16)
    first, *rest = chunks
    assert first.refusal["category"] == "Requests with safety concerns"
    assert first.choices[0].delta.role == "assistant"
    assert all("refusal" not in (c.model_extra or {}) for c in rest)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text and "[Requests with safety concerns]" not in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [expected.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == expected.completion_tokens


def test_seed_top_p_and_stop_behave_as_in_the_runtime(client, tiny_model):
    sampled = dict(temperature=0.9, top_p=0.8, seed=11, max_tokens=20)
    reply = client.chat.completions.create(model="tiny", messages=HELLO, **sampled)
    expected = tiny_model.generate(HELLO, temperature=0.9, top_p=0.8, seed=11, max_tokens=20)
    assert (reply.choices[0].message.content, reply.refusal["token_id"]) == (expected.text, expected.decision.token_id)

    greedy = tiny_model.generate(HELLO, temperature=0, max_tokens=20).text
    stop = greedy[4:6]
    reply = client.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=20, stop=[stop])
    assert reply.choices[0].message.content == greedy[: greedy.find(stop)]
    assert reply.choices[0].finish_reason == "stop"


def test_an_echoed_refusal_token_is_replayed_and_the_shared_prefix_reused(http, tiny_model):
    body = {"messages": HELLO, "temperature": 0, "max_tokens": 8, "refusal": SAFETY}
    first = http.post("/v1/chat/completions", json=body).json()
    assistant = first["choices"][0]["message"]
    assert assistant["refusal_token"] == "[Requests with safety concerns]"
    history = [*HELLO, assistant, {"role": "user", "content": "why not?"}]
    second = http.post("/v1/chat/completions", json={**body, "messages": history}).json()
    expected = tiny_model.generate(history, SAFETY, temperature=0, max_tokens=8)
    assert second["choices"][0]["message"]["content"] == expected.text
    assert second["usage"]["prompt_tokens"] == expected.decision.prompt_tokens
    without_token = [*HELLO, {"role": "assistant", "content": assistant["content"]}, history[-1]]
    assert len(tiny_model.prompt_tokens(without_token)) == expected.decision.prompt_tokens - 1
    # One slot: the second turn starts where the first one's prompt left the KV cache.
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= first["usage"]["prompt_tokens"] - 1


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    card = client.models.retrieve("tiny")
    assert card.refusal["categories"] == list(CATEGORIES)
    health = httpx.get(server.url + "/health", trust_env=False)  # no key needed
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_the_api_key_is_required(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        reply = httpx.post(server.url + "/v1/chat/completions", json={"messages": HELLO}, headers=headers,
                           trust_env=False)
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"
    with httpx.Client(trust_env=False) as transport:
        stranger = openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0, http_client=transport)
        with pytest.raises(openai.AuthenticationError):
            stranger.models.list()


@pytest.mark.parametrize("body, status, param, code, words", [
    ("{bad json", 400, None, "invalid_json", "not valid JSON"),
    ({"messages": HELLO, "refusal": {"thresholds": {"violence": 0.1}}}, 400, "refusal", "invalid_refusal_policy",
     "unknown category 'violence'"),
    ({"messages": HELLO, "refusal": {"thresholds": {"safety": -0.1}}}, 400, "refusal", "invalid_refusal_policy",
     "not a probability"),
    ({"messages": [{"role": "user", "content": "hello " * 300}]}, 400, "messages", "context_length_exceeded",
     "the context holds 256"),
    ({"messages": HELLO * 9}, 400, "messages", None, "at most 8"),
    ({"messages": HELLO, "max_tokens": 65}, 400, "max_tokens", None, "limit of 64"),
    ({"messages": [{"role": "user", "content": "x" * 70_000}]}, 413, None, "request_too_large", "over 64000 bytes"),
])
def test_bad_requests_get_openai_shaped_errors(http, body, status, param, code, words):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    reply = http.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert reply.status_code == status
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert words in error["message"] and error["type"] == "invalid_request_error"


def test_clients_see_errors_as_their_own_exceptions_and_the_server_carries_on(client, http):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=HELLO, extra_body={"refusal": {"rule": "strict"}})
    assert caught.value.body["param"] == "refusal"
    assert http.get("/v1/nowhere").json()["error"]["code"] == "not_found"
    assert http.get("/v1/chat/completions").status_code == 405
    assert client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2).choices[0].finish_reason


def test_twenty_concurrent_clients_each_get_their_own_complete_answer(tiny_gguf, tiny_model):
    prompts = ["hello world", "tell me a story about the sea", "what is the capital of france?",
               "can you help me write an email?", "the quick brown fox"]
    policies = [None, SAFETY, {"rule": "natural"}, {"threshold": 1.0, "thresholds": {"unsupported": 0.0}}]
    jobs = [(prompts[i % 5], policies[i % 4], i % 2 == 0) for i in range(20)]
    expected = {}
    for prompt, policy, _ in jobs:
        result = tiny_model.generate(prompt, policy, temperature=0, max_tokens=24)
        expected[prompt, json.dumps(policy)] = (result.text, result.decision.token, result.finish_reason)

    models, running = start_server(tiny_gguf, slots=2)
    barrier = threading.Barrier(len(jobs), timeout=60)

    def ask(job):
        prompt, policy, stream = job
        extra = {"refusal": policy} if policy else {}
        barrier.wait()  # all twenty in flight together
        reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                               temperature=0, max_tokens=24, stream=stream, extra_body=extra)
        if not stream:
            return reply.choices[0].message.content, reply.refusal["token"], reply.choices[0].finish_reason
        chunks = list(reply)
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        return text, chunks[0].refusal["token"], chunks[-1].choices[0].finish_reason

    try:
        with running, httpx.Client(trust_env=False, limits=httpx.Limits(max_connections=32)) as transport:
            client = openai.OpenAI(base_url=running.url + "/v1", api_key="none", max_retries=0, timeout=120,
                                   http_client=transport)
            with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
                futures = [pool.submit(ask, job) for job in jobs]
                done, pending = concurrent.futures.wait(futures, timeout=180)
                assert not pending, f"{len(pending)} of {len(jobs)} requests never finished"
                answers = [f.result() for f in futures]
            stats = settled_health(running.url, completed=len(jobs))
    finally:
        for model in models:
            model.close()
    for (prompt, policy, _), answer in zip(jobs, answers):
        assert answer == expected[prompt, json.dumps(policy)], (prompt, policy)
    assert (stats["completed"], stats["failed"], stats["busy"], stats["queued"]) == (len(jobs), 0, 0, 0)


def settled_health(url, completed, wait_s=30.0) -> dict:
    """A slot counts its job once the generator has closed, a moment after the client has the last token."""
    deadline = time.monotonic() + wait_s
    while True:
        stats = httpx.get(url + "/health", trust_env=False).json()
        if stats["completed"] + stats["failed"] >= completed or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)
