"""Ollama's API on `refusal-edge serve`, driven by the official ollama client (streaming and not) and raw HTTP.
Expected answers come from the in-process runtime on the same file, as in test_server.py."""

import datetime
import json
import os
import re

import pytest

ollama = pytest.importorskip("ollama")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from test_server import API_KEY, HELLO, N_CTX, http, server  # noqa: E402,F401 (fixtures)
from test_server import SAFETY as FORCE_SAFETY  # noqa: E402 (the policy forcing the safety token)

from refusal_edge.gguf_header import read_header  # noqa: E402

SAFETY_NAME = "Requests with safety concerns"
GREEDY = {"temperature": 0, "num_predict": 12}


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, trust_env=False)


def test_chat_matches_the_runtime(client, tiny_model):
    reply = client.chat(model="tiny", messages=HELLO, options=GREEDY, keep_alive="5m")
    expected = tiny_model.generate(HELLO, temperature=0, max_tokens=12)
    assert reply.message.role == "assistant" and reply.message.content == expected.text
    assert reply.done and reply.done_reason == expected.finish_reason
    assert (reply.prompt_eval_count, reply.eval_count) == (expected.decision.prompt_tokens, expected.completion_tokens)
    assert reply.total_duration > 0 and reply.model == "tiny"


def test_streamed_chat_with_the_refusal_dial_in_options(client, tiny_model):
    parts = list(client.chat(model="tiny", messages=HELLO, stream=True,
                             options={**GREEDY, "refusal": FORCE_SAFETY}))
    expected = tiny_model.generate(HELLO, FORCE_SAFETY, temperature=0, max_tokens=12)
    assert "".join(p.message.content for p in parts) == expected.text
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].done_reason == expected.finish_reason and parts[-1].eval_count == expected.completion_tokens
    assert expected.decision.category == SAFETY_NAME


def test_the_decision_comes_back_in_a_refusal_field(http, tiny_model):
    body = {"model": "tiny", "messages": HELLO, "stream": False, "options": GREEDY, "refusal": FORCE_SAFETY}
    reply = http.post("/api/chat", json=body).json()
    assert reply["refusal"]["category"] == SAFETY_NAME and reply["refusal"]["forced"]
    assert reply["message"]["refusal_token"] == f"[{SAFETY_NAME}]"
    assert f"[{SAFETY_NAME}]" not in reply["message"]["content"]
    with http.stream("POST", "/api/chat", json={**body, "stream": True}) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[0]["refusal"]["token"] == f"[{SAFETY_NAME}]" and lines[-1]["refusal"]["category"] == SAFETY_NAME
    assert all("refusal" not in line for line in lines[1:-1])
    assert "".join(line["message"]["content"] for line in lines) == reply["message"]["content"]


def test_generate_streams_and_not_with_sampling_options(client, tiny_model):
    options = {"temperature": 0.9, "top_p": 0.8, "top_k": 20, "seed": 7, "num_predict": 16, "repeat_penalty": 1.1}
    reply = client.generate(model="tiny", prompt="tell me a story", system="be brief", options=options)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "tell me a story"}]
    expected = tiny_model.generate(messages, temperature=0.9, top_p=0.8, top_k=20, seed=7, max_tokens=16,
                                   repeat_penalty=1.1)
    assert reply.response == expected.text and reply.done
    streamed = list(client.generate(model="tiny", prompt="tell me a story", system="be brief", options=options,
                                    stream=True))
    assert "".join(p.response for p in streamed) == expected.text and streamed[-1].done

    greedy = tiny_model.generate("tell me a story", temperature=0, max_tokens=20).text
    stop = greedy[3:5]
    stopped = client.generate(model="tiny", prompt="tell me a story", options={"temperature": 0, "stop": [stop]})
    assert stopped.response == greedy[: greedy.find(stop)] and stopped.done_reason == "stop"


def test_an_empty_request_loads_the_model(client):
    assert client.generate(model="tiny").done_reason == "load"
    assert client.chat(model="tiny", messages=[]).done_reason == "load"


FORMATS = {b"GGUF": "gguf"}  # Ollama's details.format, by the file's magic bytes


def test_model_listing_and_show_describe_the_file_served(client, tiny_gguf):
    listed = client.list().models
    assert [m.model for m in listed] == ["tiny:latest"] and listed[0].size == tiny_gguf.stat().st_size
    stat, header = tiny_gguf.stat(), read_header(tiny_gguf)
    details = listed[0].details
    assert details.format == FORMATS[tiny_gguf.read_bytes()[:4]]
    assert details.family == header.get("general.architecture") and details.families == [details.family]
    assert listed[0].modified_at == datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc)
    shown = client.show("tiny:latest")
    assert shown.capabilities == ["completion"] and shown.details == details
    assert shown.modelinfo["general.architecture"] == details.family
    assert shown.modelinfo.keys() <= header.kv.keys()  # the file's metadata, none invented
    assert shown.template == header.get("tokenizer.chat_template")
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("llama3")
    assert caught.value.status_code == 404 and "'llama3' not found" in caught.value.error


def test_the_digest_changes_when_the_file_does(client, tiny_gguf):
    """Clients compare digests to notice a changed model; the file is not rewritten here, only its time moved."""
    before, stat = client.list().models[0], tiny_gguf.stat()
    try:
        os.utime(tiny_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        after = client.list().models[0]
    finally:
        os.utime(tiny_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert after.digest != before.digest
    assert (after.modified_at - before.modified_at).total_seconds() == pytest.approx(1, abs=1e-3)
    assert client.list().models[0].digest == before.digest


def test_ps_and_version(client, server):
    running = client.ps().models
    assert running[0].model == "tiny:latest" and running[0].context_length == N_CTX
    # --api-key covers every /api route, this one too (issue 35): without the key, 401
    assert httpx.get(server.url + "/api/version", trust_env=False).status_code == 401
    reply = httpx.get(server.url + "/api/version", headers={"Authorization": f"Bearer {API_KEY}"}, trust_env=False)
    assert reply.status_code == 200, reply.text
    # a release number as Ollama's CLI compares it (semver, no "v"); 0.0.0 is what a development build reports
    version = reply.json()["version"]
    assert re.fullmatch(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)", version), version
    assert version != "0.0.0"


@pytest.mark.parametrize("path, body, words", [
    ("/api/chat", {"messages": HELLO, "options": {"mirostat": 2}}, "'options.mirostat' = 2 is not supported"),
    ("/api/chat", {"messages": HELLO, "options": {"num_ctx": 4096}}, "context holds 256 tokens"),
    ("/api/chat", {"messages": HELLO, "options": {"temperature": 3}}, "'options.temperature' must be a number"),
    ("/api/chat", {"messages": HELLO, "options": {"num_predict": 65}}, "options.num_predict 65 is over"),
    ("/api/chat", {"messages": HELLO, "options": {"colour": 1}}, "unknown or unsupported option 'options.colour'"),
    ("/api/chat", {"messages": HELLO, "format": "json"}, "'format': structured output"),
    ("/api/chat", {"messages": HELLO, "tools": [{"type": "function"}]}, "'tools': this server runs no tools"),
    ("/api/chat", {"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, "'messages[0].images'"),
    ("/api/chat", {"messages": HELLO, "keep_alive": {"forever": True}}, "'keep_alive' must be a duration"),
    ("/api/chat", {"messages": HELLO, "refusal": {"thresholds": {"violence": 0.1}}}, "unknown category 'violence'"),
    ("/api/chat", {"messages": HELLO, "refusal": {}, "options": {"refusal": {}}}, "not both"),
    ("/api/chat", {"messages": [{"role": "user", "content": "hello " * 300}]}, "the context holds 256"),
    ("/api/generate", {"prompt": "hi", "raw": True}, "'raw': raw prompts would bypass"),
    ("/api/generate", {"prompt": "hi", "context": [1, 2, 3]}, "send the conversation to /api/chat"),
    ("/api/generate", {"prompt": "hi", "suffix": "end"}, "fill-in-the-middle"),
    ("/api/generate", {"prompt": 5}, "'prompt' must be a string"),
])
def test_what_cannot_be_honoured_is_a_clear_400(http, path, body, words):
    reply = http.post(path, json={"model": "tiny", "stream": False, **body})
    assert reply.status_code == 400, reply.text
    assert words in reply.json()["error"], reply.json()


def test_the_official_client_raises_on_errors_and_the_key_is_required(server, client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="tiny", messages=HELLO, options={"mirostat": 1})
    assert caught.value.status_code == 400 and "mirostat" in caught.value.error
    stranger = ollama.Client(host=server.url, trust_env=False)
    for call in (lambda: stranger.list(), lambda: stranger.chat(model="tiny", messages=HELLO, stream=False)):
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 401 and "API key" in caught.value.error
    assert client.chat(model="tiny", messages=HELLO, options={"num_predict": 2}).done
    assert httpx.get(server.url + "/api/chat", trust_env=False).json() == {"error": "GET is not allowed on /api/chat"}
    assert httpx.get(server.url + "/api/pull", trust_env=False).json() == {"error": "no route /api/pull"}
