"""Requests that used to reach a 500 (issue 19, items 6-9): deep nesting, integer literals past Python's 4,300-digit
limit, integers too large for a float, top_k past int32, repeat_penalty Infinity, tools on /api/generate; and a
503 that says when to come back. Each is a 4xx naming the problem, in the shape of the API that was called."""

import asyncio
import json
from types import SimpleNamespace

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from refusal_edge.server.app import ServerSettings, api_error_response, create_app  # noqa: E402
from refusal_edge.server.errors import ApiError  # noqa: E402
from refusal_edge.server.run import BackgroundServer  # noqa: E402
from refusal_edge.server.slots import SlotPool  # noqa: E402

JSON_TYPE = {"Content-Type": "application/json"}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def live(tiny_model):
    settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy)
    with BackgroundServer(create_app(SlotPool([tiny_model]), settings)) as running:
        with httpx.Client(base_url=running.url, trust_env=False, timeout=30) as http:
            yield http


@pytest.mark.parametrize("depth", [480, 700, 980, 5000])
def test_deep_nesting_is_400_and_the_connection_stays_open(live, depth):
    body = '{"input": ' + "[" * depth + '"x"' + "]" * depth + "}"
    reply = live.post("/v1/moderations", content=body, headers=JSON_TYPE)
    assert reply.status_code == 400, reply.text[:300]
    error = reply.json()["error"]  # too deep to parse, or parsed and not a string or a list of strings
    assert error["code"] == "invalid_json" and "nested too deeply" in error["message"] or error["param"] == "input"
    assert reply.headers.get("connection", "").lower() != "close"  # keep-alive intact
    assert live.get("/health").status_code == 200


@pytest.mark.parametrize("digits", [4301, 100_000, 900_000])
def test_an_integer_literal_past_4300_digits_is_400_promptly(live, digits):
    body = '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + "9" * digits + "}"
    reply = live.post("/v1/chat/completions", content=body, headers=JSON_TYPE, timeout=10)
    assert reply.status_code == 400, reply.text[:300]
    assert "not valid JSON" in reply.json()["error"]["message"] and len(reply.text) < 1000


HUGE = 10 ** 400  # a valid JSON integer (400 digits) that no float holds


@pytest.mark.parametrize("field", ["temperature", "top_p", "min_p", "repeat_penalty"])
def test_a_huge_integer_in_a_float_field_is_400_naming_it(live, field):
    reply = live.post("/v1/chat/completions", content=json.dumps({"messages": HELLO, field: HUGE}), headers=JSON_TYPE)
    assert reply.status_code == 400, reply.text[:300]
    error = reply.json()["error"]
    assert error["param"] == field and f"'{field}'" in error["message"] and len(error["message"]) < 300
    ollama = live.post("/api/chat", content=json.dumps({"messages": HELLO, "options": {field: HUGE}}),
                       headers=JSON_TYPE)
    assert ollama.status_code == 400, ollama.text[:300]
    assert f"'options.{field}'" in ollama.json()["error"]  # Ollama's {"error": "..."} shape


@pytest.mark.parametrize("body, words", [
    ({"messages": HELLO, "top_k": 2 ** 31}, "'top_k' must be an integer >= 0 and <= 2147483647"),
    ({"messages": HELLO, "top_k": 2 ** 64 + 1}, "'top_k'"),
    ({"messages": HELLO, "max_tokens": 10 ** 300}, "max_tokens"),
])
def test_integers_past_what_llama_cpp_takes_are_refused(live, body, words):
    reply = live.post("/v1/chat/completions", content=json.dumps(body), headers=JSON_TYPE)
    assert reply.status_code == 400 and words in reply.json()["error"]["message"], reply.text[:300]


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_repeat_penalty_must_be_finite(live, literal):
    body = '{"messages": [{"role": "user", "content": "hi"}], "repeat_penalty": ' + literal + "}"
    reply = live.post("/v1/chat/completions", content=body, headers=JSON_TYPE)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "repeat_penalty", reply.text


def test_api_generate_refuses_tools_like_api_chat(live):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    for path, body in (("/api/generate", {"prompt": "hi", "tools": tools}),
                       ("/api/chat", {"messages": HELLO, "tools": tools})):
        reply = live.post(path, json={**body, "stream": False})
        assert reply.status_code == 400 and "'tools': this server runs no tools" in reply.json()["error"], reply.text


def test_a_full_queue_is_503_with_retry_after(tiny_model):
    pool = SlotPool([tiny_model], max_queue=1)  # not started: whatever is submitted stays queued

    async def overfill():
        pool.submit(object())
        pool.submit(object())

    with pytest.raises(ApiError) as caught:
        asyncio.run(overfill())
    assert caught.value.status == 503
    request = SimpleNamespace(url=SimpleNamespace(path="/v1/chat/completions"))  # the handler reads the path only
    response = asyncio.run(api_error_response(request, caught.value))
    assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
