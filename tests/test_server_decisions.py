"""/v1/moderations (driven by the official openai client) and /v1/refusal/decisions: decisions without generation,
checked against the in-process runtime on the same file."""

import json

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from refusal_edge.server.app import ServerSettings, create_app  # noqa: E402
from refusal_edge.server.requests import Limits  # noqa: E402
from refusal_edge.server.run import BackgroundServer  # noqa: E402
from refusal_edge.server.slots import SlotPool  # noqa: E402
from test_server import API_KEY, client, http, server  # noqa: E402,F401 (fixtures)

SAFETY_NAME = "Requests with safety concerns"
FORCE_SAFETY = {"threshold": 1.0, "thresholds": {"safety": 0.0}}
PROMPTS = ["hello world", "tell me a story about the sea", "what is the capital of france?"]


def test_moderation_scores_every_input_with_the_server_policy(client, tiny_model):
    reply = client.moderations.create(model="tiny", input=PROMPTS)
    assert reply.id.startswith("modr-") and reply.model == "tiny" and len(reply.results) == len(PROMPTS)
    for prompt, result in zip(PROMPTS, reply.results):
        expected = tiny_model.decide(prompt)
        scores = result.category_scores.model_dump(exclude_none=True)
        # the same numbers up to kernel rounding (AVX-512 kernels differ from the in-process run by ~2e-7 absolute
        # on probabilities of 1e-3: far below any threshold a policy sets)
        assert scores == pytest.approx(expected.probabilities, rel=1e-4, abs=1e-6)
        assert result.flagged == expected.refused
        flags = result.categories.model_dump(exclude_none=True)
        assert flags == {name: name == expected.category for name in tiny_model.categories}
        assert result.model_extra["refusal"]["token"] == expected.token


def test_flagged_follows_the_request_policy_merged_over_the_server_policy(client, tiny_model):
    one = client.moderations.create(input="hello world", extra_body={"refusal": FORCE_SAFETY})
    result = one.results[0]
    assert result.flagged and result.categories.model_dump(exclude_none=True)[SAFETY_NAME]
    assert tiny_model.decide("hello world", FORCE_SAFETY).category == SAFETY_NAME
    never = client.moderations.create(input="hello world", extra_body={"refusal": {"threshold": 1.0}})
    assert not never.results[0].flagged
    assert not any(never.results[0].categories.model_dump(exclude_none=True).values())


def test_decisions_return_the_full_decision_per_input(http, tiny_model):
    conversation = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi",
                    "refusal_token": "[respond]"}, {"role": "user", "content": "tell me a story"}]
    reply = http.post("/v1/refusal/decisions", json={"input": ["hello world", conversation],
                                                       "refusal": {"biases": {"respond": 2.0}}})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    policy = tiny_model.default_policy.with_bias("respond", 2.0)
    assert body["policy"] == policy.to_dict() and body["model"] == "tiny"
    for i, (given, got) in enumerate(zip(["hello world", conversation], body["data"])):
        expected = tiny_model.decide(given, policy)
        assert got["index"] == i and got["object"] == "refusal.decision"
        assert (got["token"], got["token_id"], got["category"], got["refused"], got["forced"]) == (
            expected.token, expected.token_id, expected.category, expected.refused, expected.forced)
        assert got["probabilities"] == pytest.approx(expected.probabilities, rel=1e-4)
        assert got["respond_probability"] == pytest.approx(expected.respond_probability, rel=1e-4)
        assert got["policy"] == policy.to_dict() and got["prompt_tokens"] == expected.prompt_tokens


@pytest.mark.parametrize("path, body, status, param, words", [
    ("/v1/moderations", {}, 400, "input", "'input' must be a string"),
    ("/v1/moderations", {"input": [1, 2]}, 400, "input", "'input' must be a string"),
    ("/v1/moderations", {"input": [{"type": "image_url", "image_url": {"url": "x"}}]}, 400, "input.content",
     "only text parts are supported"),
    ("/v1/moderations", {"input": ["a"] * 9}, 400, "input", "at most 8 per call"),
    ("/v1/moderations", {"input": "hi", "refusal": {"thresholds": {"violence": 0.1}}}, 400, "refusal",
     "unknown category 'violence'"),
    ("/v1/moderations", {"input": ["fine", "hello " * 300]}, 400, "input", "the context holds 256"),
    ("/v1/refusal/decisions", {"input": [[{"role": "tool", "content": "x"}]]}, 400, "input", "input[0]: messages[0]"),
    ("/v1/refusal/decisions", {"input": []}, 400, "input", "non-empty list"),
    ("/v1/refusal/decisions", "[1, 2]", 400, None, "must be a JSON object"),
])
def test_bad_decision_requests_get_openai_shaped_errors(http, path, body, status, param, words):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    reply = http.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_decision_endpoints_need_the_key_and_the_server_carries_on(server, http):
    for path in ("/v1/moderations", "/v1/refusal/decisions"):
        reply = httpx.post(server.url + path, json={"input": "hi"}, trust_env=False)
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"
    assert http.get("/v1/moderations").status_code == 405
    assert http.post("/v1/moderations", json={"input": "still here"}).status_code == 200


class DecideOnly:
    """A slot model that can decide but fails the test if anything tries to generate."""

    def __init__(self, model):
        self.model, self.spec = model, model.spec
        self.decided = 0

    def decide(self, messages, policy):
        self.decided += 1
        return self.model.decide(messages, policy)

    def stream(self, *args, **kwargs):
        raise AssertionError("a decision endpoint generated text")


def test_decisions_prefill_once_per_input_and_never_generate(tiny_model):
    wrapped = DecideOnly(tiny_model)
    settings = ServerSettings(model_id="decide-only", policy=tiny_model.default_policy, limits=Limits(max_messages=8))
    with BackgroundServer(create_app(SlotPool([wrapped]), settings)) as running:
        with httpx.Client(base_url=running.url, trust_env=False, timeout=60) as http:
            moderated = http.post("/v1/moderations", json={"input": PROMPTS})
            decided = http.post("/v1/refusal/decisions", json={"input": PROMPTS[:2]})
    assert moderated.status_code == 200 and decided.status_code == 200
    assert len(moderated.json()["results"]) == 3 and len(decided.json()["data"]) == 2
    assert wrapped.decided == 5
