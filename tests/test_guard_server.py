"""`refusal-edge serve --answer-engine` and `chat --answer-engine` against a fake Ollama answer engine: the OpenAI and
Ollama APIs, moderations and the page in guard mode, errors in each API's shape, and the engine's address and key
never shown to a client."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("httpx")
testclient = pytest.importorskip("starlette.testclient")

from click.testing import CliRunner  # noqa: E402
from fake_answer_engine import ANSWER, Behaviour, serve  # noqa: E402

from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.cli import main  # noqa: E402
from refusal_edge.guarded import AnswerTarget  # noqa: E402
from refusal_edge.policy import Policy  # noqa: E402
from refusal_edge.server.app import ServerSettings, create_app  # noqa: E402
from refusal_edge.server.requests import Limits  # noqa: E402
from refusal_edge.server.slots import SlotPool  # noqa: E402

THREADS = 1
KEY = "sk-secret-answer-key"
PROMPT = "What is the capital of France? zq-marker-7731"
ASK = [{"role": "user", "content": PROMPT}]
FORCE_SAFETY = {"thresholds": {"safety": 0.0}}  # over the server's policy below, which refuses nothing


@pytest.fixture
def engine():
    behaviour = Behaviour(api_key=KEY)
    with serve(behaviour) as server:
        yield behaviour, server.url


@pytest.fixture
def client(tiny_gguf, engine):
    behaviour, url = engine
    model = RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS)
    guard = AnswerTarget(url + "/v1", behaviour.model, KEY, timeout=2.0).guard(model, name="tiny")
    settings = ServerSettings(model_id="tiny", policy=Policy(rule="per-category", threshold=1.0),
                              limits=Limits(max_tokens=8))
    with testclient.TestClient(create_app(SlotPool([guard, guard]), settings), raise_server_exceptions=False) as c:
        yield c
    guard.close()


def sse(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def test_openai_answers_come_from_the_engine_and_say_so(client, engine):
    behaviour, _ = engine
    reply = client.post("/v1/chat/completions", json={"messages": ASK, "temperature": 0}).json()
    assert reply["choices"][0]["message"]["content"] == "".join(ANSWER)
    assert reply["refusal"]["token"] == "[respond]" and reply["refusal"]["meta"]["answered_by"] == behaviour.model
    assert reply["usage"]["prompt_tokens"] == 7 and reply["usage"]["completion_tokens"] == len(ANSWER)
    streamed = sse(client.post("/v1/chat/completions", json={"messages": ASK, "stream": True,
                                                             "stream_options": {"include_usage": True}}).text)
    assert streamed[0]["refusal"]["meta"]["answered_by"] == behaviour.model
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in streamed if c["choices"]) == "".join(ANSWER)
    assert streamed[-1]["usage"]["completion_tokens"] == len(ANSWER)
    assert len(behaviour.received) == 2 and behaviour.received[0]["messages"] == ASK


def test_ollama_chat_in_guard_mode(client, engine):
    behaviour, _ = engine
    reply = client.post("/api/chat", json={"model": "tiny", "messages": ASK, "stream": False,
                                           "options": {"temperature": 0}}).json()
    assert reply["message"]["content"] == "".join(ANSWER) and reply["done"]
    assert reply["refusal"]["meta"]["answered_by"] == behaviour.model and reply["prompt_eval_count"] == 7
    lines = [json.loads(line) for line in client.post("/api/chat", json={"model": "tiny", "messages": ASK}).text
             .splitlines()]
    assert "".join(line["message"]["content"] for line in lines) == "".join(ANSWER) and lines[-1]["done"]


def test_refused_requests_and_moderations_never_reach_the_engine(client, engine):
    behaviour, _ = engine
    reply = client.post("/v1/chat/completions", json={"messages": ASK, "refusal": FORCE_SAFETY}).json()
    assert reply["refusal"]["refused"] and reply["refusal"]["category"] == "Requests with safety concerns"
    assert reply["refusal"]["meta"]["answered_by"] == "tiny"
    streamed = sse(client.post("/v1/chat/completions", json={"messages": ASK, "stream": True,
                                                             "refusal": FORCE_SAFETY}).text)
    assert streamed[0]["refusal"]["refused"]
    ollama = client.post("/api/chat", json={"messages": ASK, "stream": False, "refusal": FORCE_SAFETY}).json()
    assert ollama["refusal"]["refused"]
    moderation = client.post("/v1/moderations", json={"input": PROMPT}).json()
    assert "results" in moderation
    assert behaviour.received == []


@pytest.mark.parametrize("misbehave", ["error", "garbage", "slow"])
def test_engine_failures_are_errors_in_each_apis_shape_without_its_address(client, engine, misbehave):
    behaviour, url = engine
    behaviour.misbehave, behaviour.delay_s = misbehave, 5.0 if misbehave == "slow" else 0.0
    for streaming in (False, True):
        openai = client.post("/v1/chat/completions", json={"messages": ASK, "stream": streaming})
        assert openai.status_code == 502 and "the answer engine" in openai.json()["error"]["message"]
        ollama = client.post("/api/chat", json={"messages": ASK, "stream": streaming})
        assert ollama.status_code == 502 and set(ollama.json()) == {"error"}
        for response in (openai, ollama):
            assert url.split("//")[1] not in response.text and KEY not in response.text


def test_an_engine_failing_mid_answer_ends_the_stream_with_an_error_in_its_shape(client, engine):
    behaviour, url = engine
    behaviour.misbehave = "mid-stream-error"
    openai = client.post("/v1/chat/completions", json={"messages": ASK, "stream": True})
    frames = sse(openai.text)
    assert frames[0]["refusal"]["token"] == "[respond]" and "the answer engine" in frames[-1]["error"]["message"]
    ollama = client.post("/api/chat", json={"messages": ASK})
    lines = [json.loads(line) for line in ollama.text.splitlines()]
    assert "refusal" in lines[0] and set(lines[-1]) == {"error"} and "the answer engine" in lines[-1]["error"]
    assert client.post("/v1/chat/completions", json={"messages": ASK}).status_code == 502
    for response in (openai, ollama):
        assert url.split("//")[1] not in response.text and KEY not in response.text


def test_a_server_whose_engine_is_down(tiny_gguf):
    with serve(Behaviour()) as gone:
        url = gone.url
    model = RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS)
    guard = AnswerTarget(url, "m", KEY, timeout=2.0).guard(model, name="tiny")
    settings = ServerSettings(model_id="tiny", policy=Policy(rule="per-category", threshold=1.0))
    with testclient.TestClient(create_app(SlotPool([guard]), settings), raise_server_exceptions=False) as c:
        reply = c.post("/v1/chat/completions", json={"messages": ASK})
        assert reply.status_code == 502 and "the answer engine" in reply.json()["error"]["message"]
        assert "unreachable" in reply.text and url.split("//")[1] not in reply.text
        assert c.post("/v1/chat/completions", json={"messages": ASK, "refusal": FORCE_SAFETY}).status_code == 200
    guard.close()


def test_no_page_or_model_listing_shows_the_engines_address_or_key(client, engine):
    _, url = engine
    client.post("/v1/chat/completions", json={"messages": ASK})
    pages = ["/", "/health", "/v1/models", "/api/tags", "/api/ps", "/api/version", "/ui/dials.js",
             "/ui/chat.js"]
    shown = [client.get(page) for page in pages] + [client.post("/api/show", json={"model": "tiny"})]
    for response in shown:
        assert response.status_code == 200, response.url
        assert url.split("//")[1] not in response.text and KEY not in response.text


def test_chat_with_an_answer_engine(tiny_gguf, engine):
    behaviour, url = engine
    result = CliRunner().invoke(main, ["chat", str(tiny_gguf), "--answer-engine", url, "--answer-api-key", KEY,
                                       "--answer-model", behaviour.model, "--threads", "1", "--rule", "per-category",
                                       "--threshold", "1"], input=f"{PROMPT}\n")
    assert result.exit_code == 0, result.output
    assert "".join(ANSWER) in result.output and f"answered by {behaviour.model}" in result.output
    assert behaviour.received[0]["messages"] == ASK


def test_answer_options_need_an_answer_engine(tiny_gguf):
    result = CliRunner().invoke(main, ["serve", str(tiny_gguf), "--answer-model", "x"])
    assert result.exit_code == 2 and "need --answer-engine URL" in result.output


def test_the_page_says_who_answered(tiny_gguf, engine):
    from refusal_edge.server.run import BackgroundServer
    from test_server_ui import CHROMIUM, CHROMIUM_ARGS, chromium_or_skip, dials_page, send

    sync_playwright = chromium_or_skip()
    behaviour, url = engine
    model = RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS)
    guard = AnswerTarget(url, behaviour.model, KEY, timeout=5.0).guard(model, name="tiny")
    settings = ServerSettings(model_id="tiny", policy=Policy(rule="per-category", threshold=1.0))
    with BackgroundServer(create_app(SlotPool([guard]), settings)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        with dials_page(browser, server.url, api_key=None) as page:
            sent = send(page, PROMPT, 1)
            assert sent["token"] == "[respond]"
            verdict = page.inner_text(f"{sent['answer']} .verdict")
            assert f"answered by {behaviour.model}" in verdict
            assert "".join(ANSWER) in page.inner_text(sent["answer"])
            assert url.split("//")[1] not in page.content() and KEY not in page.content()
        browser.close()
    guard.close()
