"""The decision reaches the clients people use (issue 38, item 1): the X-Refusal-* headers on every deciding route
(streams too), OpenAI's message.refusal for refused answers, through the real openai, ollama and LangChain clients.
Expected decisions come from the in-process runtime on the same file."""

import json
from urllib.parse import unquote

import pytest

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from test_server import API_KEY, HELLO, http, server  # noqa: E402,F401 (fixtures)
from test_server import SAFETY as FORCE_SAFETY  # noqa: E402 (the policy forcing the safety token)

from refusal_edge.server.app import ServerSettings, create_app  # noqa: E402
from refusal_edge.server.browser_guard import Access  # noqa: E402
from refusal_edge.server.headers import decision_headers  # noqa: E402
from refusal_edge.server.slots import SlotPool  # noqa: E402

SAFETY = "Requests with safety concerns"
FORCE_RESPOND = {"threshold": 1.0, "thresholds": {}, "rule": "binary"}


def assert_headers_say(headers, decision):
    """The three headers, as any client reads them (case-insensitive), against an in-process Decision."""
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["x-refusal-token"] == (decision.token if decision.decision_token else "")
    assert lower["x-refusal-category"] == (decision.category or "")
    assert float(lower["x-refusal-probability"]) == pytest.approx(decision.refusal_probability, rel=1e-4)


@pytest.fixture(scope="module")
def openai_client(server):
    with httpx.Client(trust_env=False) as transport:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60,
                            http_client=transport)


@pytest.mark.parametrize("refusal", [FORCE_SAFETY, FORCE_RESPOND])
def test_openai_client_reads_the_headers_and_message_refusal(openai_client, tiny_model, refusal):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="tiny", messages=HELLO, temperature=0, max_tokens=8, extra_body={"refusal": refusal})
    reply = raw.parse()
    expected = tiny_model.generate(HELLO, refusal, temperature=0, max_tokens=8)
    assert_headers_say(raw.headers, expected.decision)
    message = reply.choices[0].message
    assert message.content == expected.text  # kept for clients that only read content
    assert message.refusal == (expected.text if expected.decision.refused else None)
    assert (expected.decision.category == SAFETY) == (refusal is FORCE_SAFETY)


def test_openai_stream_sends_the_headers_before_the_first_chunk_and_delta_refusal(openai_client, tiny_model):
    expected = tiny_model.generate(HELLO, FORCE_SAFETY, temperature=0, max_tokens=8)
    with openai_client.chat.completions.with_streaming_response.create(
            model="tiny", messages=HELLO, temperature=0, max_tokens=8, stream=True,
            extra_body={"refusal": FORCE_SAFETY}) as response:
        assert_headers_say(response.headers, expected.decision)  # read before any chunk
        chunks = list(response.parse())
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == expected.text
    assert "".join(d.refusal or "" for d in deltas) == expected.text


def test_the_server_option_leaves_message_refusal_empty(tiny_model):
    from starlette.testclient import TestClient

    settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy, refusal_message=False)
    with TestClient(create_app(SlotPool([tiny_model]), settings)) as client:
        reply = client.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 4, "temperature": 0,
                                                          "refusal": FORCE_SAFETY})
    assert reply.json()["choices"][0]["message"]["refusal"] is None
    assert reply.headers["x-refusal-category"] == SAFETY and reply.json()["refusal"]["refused"]


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_client_sees_the_headers_through_an_httpx_event_hook(server, tiny_model, stream):
    """Ollama's Python client drops body fields it does not know (reply["refusal"] is a KeyError), but it is an
    httpx client: a response hook receives the headers, sent before the first NDJSON line."""
    seen = []
    client = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, trust_env=False,
                           event_hooks={"response": [lambda response: seen.append(dict(response.headers))]})
    options = {"temperature": 0, "num_predict": 8, "refusal": FORCE_SAFETY}
    reply = client.chat(model="tiny", messages=HELLO, options=options, stream=stream)
    text = "".join(part.message.content for part in reply) if stream else reply.message.content
    expected = tiny_model.generate(HELLO, FORCE_SAFETY, temperature=0, max_tokens=8)
    assert text == expected.text
    assert len(seen) == 1
    assert_headers_say(seen[0], expected.decision)
    generated = client.generate(model="tiny", prompt="hello world", options={**options, "num_predict": 2})
    assert generated.done and seen[-1]["x-refusal-category"] == SAFETY


def test_langchain_reads_message_refusal_and_the_headers(server, tiny_model):
    chat_openai = pytest.importorskip("langchain_openai")
    llm = chat_openai.ChatOpenAI(base_url=server.url + "/v1", api_key=API_KEY, model="tiny", temperature=0,
                                 max_tokens=8, max_retries=0, include_response_headers=True,
                                 extra_body={"refusal": FORCE_SAFETY},
                                 http_client=httpx.Client(trust_env=False))
    reply = llm.invoke("hello world")
    expected = tiny_model.generate(HELLO, FORCE_SAFETY, temperature=0, max_tokens=8)
    assert reply.content == expected.text
    assert reply.additional_kwargs["refusal"] == expected.text
    assert_headers_say(reply.response_metadata["headers"], expected.decision)
    streamed = list(llm.stream("hello world"))
    assert "".join(part.content for part in streamed) == expected.text
    assert_headers_say(streamed[0].response_metadata["headers"], expected.decision)


def test_deciding_routes_list_one_decision_per_input(http, tiny_model):
    prompts = ["hello world", "tell me a story"]
    expected = [tiny_model.decide([{"role": "user", "content": p}], FORCE_SAFETY if i else None)
                for i, p in enumerate(prompts)]
    moderation = http.post("/v1/moderations", json={"input": prompts[0]})
    assert_headers_say(moderation.headers, expected[0])
    native = http.post("/v1/refusal/decisions", json={"input": prompts[1], "refusal": FORCE_SAFETY})
    assert_headers_say(native.headers, expected[1])
    both = http.post("/v1/moderations", json={"input": prompts})
    tokens = both.headers["x-refusal-token"].split(",")
    assert tokens == [d.token for d in (expected[0], tiny_model.decide([{"role": "user", "content": prompts[1]}]))]
    assert len(both.headers["x-refusal-probability"].split(",")) == 2
    # A long batch's headers would outgrow what HTTP clients read (h11: 16 KiB), so it has none (the body has them).
    batch = http.post("/v1/moderations", json={"input": ["hi"] * 8, "refusal": FORCE_SAFETY})
    assert batch.status_code == 200 and len(batch.json()["results"]) == 8
    assert len(batch.headers["x-refusal-category"].split(",")) == 8  # 8 x ~100 bytes: within the bound
    many = decision_headers([tiny_model.decide(HELLO, FORCE_SAFETY)] * 256)
    assert many == {}


def test_errors_carry_no_decision(http):
    reply = http.post("/v1/chat/completions", json={"messages": []})
    assert reply.status_code == 400 and "x-refusal-token" not in reply.headers


def test_an_allowed_origin_may_read_the_headers(tiny_model):
    from starlette.testclient import TestClient

    settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy,
                              access=Access(origins=("http://localhost:3000",)))
    with TestClient(create_app(SlotPool([tiny_model]), settings)) as client:
        reply = client.post("/api/generate", headers={"Origin": "http://localhost:3000"},
                            json={"prompt": "hi", "stream": False, "options": {"num_predict": 1}})
    assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == "http://localhost:3000"
    exposed = {name.strip().lower() for name in reply.headers["access-control-expose-headers"].split(",")}
    assert {"x-refusal-token", "x-refusal-category", "x-refusal-probability"} <= exposed
    assert json.loads(reply.text)["refusal"]["token"] == reply.headers["x-refusal-token"]


def test_header_values_stay_ascii_and_split_on_commas(tiny_model):
    from dataclasses import replace

    decision = tiny_model.decide(HELLO, FORCE_SAFETY)
    odd = replace(decision, category="Gefährlich, sehr", token="[Gefährlich, sehr]")
    headers = decision_headers([odd, decision])
    assert all(value.isascii() for value in headers.values())
    assert [unquote(v) for v in headers["X-Refusal-Category"].split(",")] == ["Gefährlich, sehr", SAFETY]
    assert [unquote(v) for v in headers["X-Refusal-Token"].split(",")] == ["[Gefährlich, sehr]", f"[{SAFETY}]"]
    # The model's own first token (the natural rule) is ordinary text, no decision token: an empty value.
    own = replace(decision, token=" ca", category=None, refused=False, decision_token=False)
    assert decision_headers([own])["X-Refusal-Token"] == "" and decision_headers([own])["X-Refusal-Category"] == ""
