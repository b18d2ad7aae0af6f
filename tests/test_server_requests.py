"""Request validation of the OpenAI-compatible server, without a server: every rule names the bad field."""

import json

import pytest

from refusal_edge import Policy
from refusal_edge.metadata import CATEGORIES
from refusal_edge.server.errors import ApiError, openai_error_body
from refusal_edge.server.requests import Limits, RequestTerms, chat_request, load_json

TOKENS = frozenset(["[respond]", *(f"[{c}]" for c in CATEGORIES)])
SERVER_POLICY = Policy(rule="per-category", threshold=0.5, thresholds={"Humanizing requests": 0.2},
                       biases={"respond": 0.5})
TERMS = RequestTerms(SERVER_POLICY, CATEGORIES, TOKENS, Limits(max_messages=4, max_tokens=100))
HELLO = [{"role": "user", "content": "hello"}]


def parse(**body):
    """As the server reads a chat request: the body's bytes as one JSON object, then the chat request."""
    return chat_request(load_json(json.dumps(body).encode()), TERMS)


def test_standard_fields_reach_the_sampler():
    chat = parse(messages=HELLO, temperature=0.3, top_p=0.9, max_tokens=7, stop="\n", seed=-5, stream=True,
                 stream_options={"include_usage": True})
    s = chat.sampling
    assert (s.temperature, s.top_p, s.max_tokens, s.stop, s.seed) == (0.3, 0.9, 7, ("\n",), -5)
    assert chat.stream and chat.include_usage


def test_openai_defaults_and_the_server_token_limit_apply_when_fields_are_absent():
    chat = parse(messages=HELLO)
    assert (chat.sampling.temperature, chat.sampling.top_p, chat.sampling.max_tokens) == (1.0, 1.0, 100)
    assert not chat.stream and not chat.include_usage
    assert chat.policy == SERVER_POLICY


def test_max_completion_tokens_wins_over_max_tokens():
    assert parse(messages=HELLO, max_tokens=50, max_completion_tokens=9).sampling.max_tokens == 9


def test_refusal_object_overrides_the_server_policy_key_by_key():
    chat = parse(messages=HELLO, refusal={"rule": "paper-category", "thresholds": {"safety": 0.3},
                                          "biases": {"respond": -1.0, "incomplete": 2.0}})
    p = chat.policy
    assert p.rule == "paper-category" and p.threshold == 0.5
    assert p.thresholds == {"Humanizing requests": 0.2, "Requests with safety concerns": 0.3}
    assert p.biases == {"respond": -1.0, "Incomplete requests": 2.0}


def test_text_parts_are_joined_and_developer_means_system():
    chat = parse(messages=[{"role": "developer", "content": "be brief"},
                           {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert chat.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a\nb"}]


def test_an_echoed_refusal_token_is_kept_and_a_missing_one_is_fine():
    history = [*HELLO, {"role": "assistant", "content": "no", "refusal_token": "[Unsupported requests]"},
               {"role": "assistant", "content": "ok", "refusal_token": None}, {"role": "user", "content": "why?"}]
    messages = parse(messages=history).messages
    assert messages[1] == {"role": "assistant", "content": "no", "refusal_token": "[Unsupported requests]"}
    assert "refusal_token" not in messages[2]


@pytest.mark.parametrize("body, status, param, words", [
    ({}, 400, "messages", "non-empty list"),
    ({"messages": []}, 400, "messages", "non-empty list"),
    ({"messages": HELLO * 5}, 400, "messages", "at most 4"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role", "'tool' is not supported"),
    ({"messages": [{"role": "user", "content": 3}]}, 400, "messages[0].content", "string or a list"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
     "messages[0].content", "'image_url'"),
    ({"messages": [{"role": "assistant", "content": "x", "refusal_token": "<|im_start|>"}]}, 400,
     "messages[0].refusal_token", "not one of this model's decision tokens"),
    ({"messages": [{"role": "user", "content": "x", "refusal_token": "[respond]"}]}, 400,
     "messages[0].refusal_token", "only assistant messages"),
    ({"messages": HELLO, "temperature": 2.5}, 400, "temperature", "[0, 2]"),
    ({"messages": HELLO, "temperature": "hot"}, 400, "temperature", "'hot'"),
    ({"messages": HELLO, "top_p": 0}, 400, "top_p", "(0, 1]"),
    ({"messages": HELLO, "max_tokens": 101}, 400, "max_tokens", "limit of 100"),
    ({"messages": HELLO, "max_tokens": 0}, 400, "max_tokens", ">= 1"),
    ({"messages": HELLO, "seed": 1.5}, 400, "seed", "integer"),
    ({"messages": HELLO, "stop": ["a"] * 17}, 400, "stop", "at most 16"),
    ({"messages": HELLO, "stream": "yes"}, 400, "stream", "true or false"),
    ({"messages": HELLO, "n": 2}, 400, "n", "not supported"),
    ({"messages": HELLO, "tools": [{"type": "function"}]}, 400, "tools", "not supported"),
    ({"messages": HELLO, "refusal": "strict"}, 400, "refusal", "must be an object"),
    ({"messages": HELLO, "refusal": {"thresholds": {"violence": 0.2}}}, 400, "refusal", "unknown category 'violence'"),
    ({"messages": HELLO, "refusal": {"thresholds": {"safety": 1.5}}}, 400, "refusal", "not a probability"),
    ({"messages": HELLO, "refusal": {"rule": "strict"}}, 400, "refusal", "'strict' is not one of"),
    ({"messages": HELLO, "refusal": {"threshhold": 0.2}}, 400, "refusal", "unknown policy field(s): threshhold"),
    ({"messages": HELLO, "refusal": {"biases": {"respond": "up"}}}, 400, "refusal", "is not a number in"),
])
def test_bad_requests_name_the_problem(body, status, param, words):
    with pytest.raises(ApiError) as caught:
        parse(**body)
    error = caught.value
    assert (error.status, error.param) == (status, param)
    assert words in error.message
    assert openai_error_body(error)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw, words", [(b"{nope", "not valid JSON"), (b"[1, 2]", "JSON object"),
                                        (b"\xff\xfe", "not valid JSON")])
def test_a_body_that_is_not_a_json_object_is_refused(raw, words):
    with pytest.raises(ApiError) as caught:
        load_json(raw)
    assert caught.value.status == 400 and words in caught.value.message


def test_neutral_values_of_unsupported_fields_are_accepted():
    chat = parse(messages=HELLO, n=1, presence_penalty=0, frequency_penalty=0.0, logprobs=False, tools=[],
                 tool_choice="none", response_format={"type": "text"}, user="someone", model="anything")
    assert chat.messages == HELLO


@pytest.mark.parametrize("module", ["refusal_edge.server.requests", "refusal_edge.server.app"])
def test_the_server_library_does_not_import_the_command_line(module):
    """`refusal-edge serve` (click) is one module of the package; the wire format and the app work without it."""
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted(m for m in ('click', 'refusal_edge.server.cli') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("module", ["requests", "errors", "openai_wire", "ollama_wire"])
def test_requests_errors_and_wire_shapes_need_no_web_framework(module):
    """Every rule and shape in them is testable without a server (imports as written, lazy ones included)."""
    from test_layering import PACKAGE, imports, offending

    assert offending(imports(PACKAGE / "server" / f"{module}.py"), ("starlette", "uvicorn")) == []
