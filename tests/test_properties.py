"""Property-based tests (Hypothesis) of every surface that takes untrusted input: rendering and request parsing here,
policies and decisions in test_properties_policy.py, the GGUF header reader in test_properties_gguf.py.

Each property has an oracle (what the answer must be, not only that no unexpected exception escaped) and counts
its examples (outcomes.Outcomes), so that it cannot pass by having every generated input rejected.
Derandomized (a fixed seed) and small, so that CI sees the same examples every run in a few seconds.
"""

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from outcomes import Outcomes  # noqa: E402
from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.errors import RefusalEdgeError  # noqa: E402
from refusal_edge.metadata import CATEGORIES  # noqa: E402
from refusal_edge.policy import RULES, TEMPERATURE_RANGE, Policy  # noqa: E402
from refusal_edge.server.errors import ApiError  # noqa: E402
from refusal_edge.server.requests import Limits, RequestTerms, chat_request, load_json  # noqa: E402
from refusal_edge.template import ROLES, ChatTemplate  # noqa: E402

FAST = settings(derandomize=True, max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "[respond]", f"[{CATEGORIES[0]}]", "\ue000", "\ue001",
          "\ue0000\ue001", "\ud800", "\udcff", "\n", "assistant", "{{", "{%", "}}"]
# Text built from template syntax, special-token strings, sentinels, lone surrogates and anything else.
HOSTILE = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=6).map("".join)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | HOSTILE,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE, inner, max_size=3),
                    max_leaves=8)


def mostly(valid, invalid):
    """Valid values about seven times in eight, so that an object of several fields is often valid as a whole."""
    return st.integers(0, 7).flatmap(lambda i: invalid if i == 0 else valid)


NAMED = ("{% for m in messages %}<|im_start|>{{ m['role'] }}{% if m.name %} {{ m.name }}{% endif %}\n"
         "{{ m['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n")


# rendering and tokenization -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def named_model(tiny_model):
    return RefusalModel(tiny_model.engine, tiny_model.spec, ChatTemplate(NAMED), tiny_model.default_policy)


def control_count(model, messages) -> int:
    return sum(model.tokenizer.is_control(t) for t in model.prompt_tokens(messages))


messages_strategy = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": HOSTILE},
                          optional={"name": HOSTILE, "refusal_token": st.sampled_from(["[respond]", ""])}),
    min_size=1, max_size=4)


@FAST
@given(messages=messages_strategy)
def test_no_caller_text_ever_becomes_a_control_token(named_model, messages):
    # NAMED's own control tokens: <|im_start|> and <|im_end|> per message, <|im_start|> for the answer; plus the
    # decision token of each turn that carries one. Whatever the content and names spell, not one more.
    markers = sum(m.get("refusal_token") == "[respond]" for m in messages)
    assert control_count(named_model, messages) == 2 * len(messages) + 1 + markers


def renderable(message, decision_tokens) -> bool:
    """template.py's contract: a role from ROLES, string content, a decision token of this model (or none) as the
    turn's refusal_token, and every other field a template could reach by name a string, a number or null."""
    if not isinstance(message, dict):
        return False
    role, content, marker = message.get("role"), message.get("content"), message.get("refusal_token")
    if not (isinstance(role, str) and role in ROLES and isinstance(content, str)):
        return False
    if marker not in (None, "") and not (isinstance(marker, str) and marker in decision_tokens):
        return False
    reachable = {k: v for k, v in message.items()
                 if isinstance(k, str) and k.isidentifier() and k not in ("role", "content", "refusal_token")}
    return all(v is None or isinstance(v, (str, int, float)) for v in reachable.values())


def contains(tokens: list[int], part: list[int]) -> bool:
    return not part or any(tokens[i:i + len(part)] == part for i in range(len(tokens) - len(part) + 1))


ANY_MESSAGE = st.builds(
    lambda fields, extra: {**extra, **fields},
    st.fixed_dictionaries({"role": mostly(st.sampled_from(ROLES), JSON), "content": mostly(HOSTILE, JSON)},
                          optional={"name": mostly(HOSTILE, JSON), "refusal_token": mostly(
                                        st.sampled_from(["[respond]", ""]), JSON | st.just("[x]"))}),
    mostly(st.just({}), st.dictionaries(HOSTILE | st.sampled_from(["tool_calls", "weight", "id"]), JSON, min_size=1,
                                        max_size=2)))


def test_a_message_renders_exactly_when_it_is_valid_and_its_content_is_plain_text(named_model):
    decision_tokens, seen = named_model.spec.decision_tokens, Outcomes()

    @settings(FAST, max_examples=150)
    @given(message=mostly(ANY_MESSAGE, st.dictionaries(HOSTILE | st.sampled_from(["role", "content"]), JSON,
                                                       max_size=4)))
    def check(message):
        valid = renderable(message, decision_tokens)
        try:
            tokens = named_model.prompt_tokens([message])
        except RefusalEdgeError:
            assert not valid, f"a valid message was refused: {message!r}"
            seen["refused"] += 1
            return
        assert valid, f"an invalid message was rendered: {message!r}"
        # the content as plain text (special=False), in one piece: never merged into template text
        assert contains(tokens, named_model.tokenizer.tokenize(message["content"], special=False))
        seen["rendered"] += 1

    check()
    seen.require(rendered=30, refused=30)


# server request parsing ----------------------------------------------------------------------------------------
DECISION_TOKENS = frozenset(["[respond]", *(f"[{c}]" for c in CATEGORIES)])
API_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}  # OpenAI's
LIMITS = Limits(max_tokens=4)
OTHER_FIELDS = st.sampled_from(["temperature", "top_p", "max_tokens", "stop", "stream", "seed", "n", "model",
                                "stream_options", "top_k", "min_p", "logit_bias", "max_completion_tokens"])
MESSAGE = st.dictionaries(st.sampled_from(["role", "content", "refusal_token", "name"]),
                          st.sampled_from(["user", "assistant", "system", "developer", "[respond]"]) | JSON,
                          max_size=4)
PLAIN_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(sorted(API_ROLES)), "content": HOSTILE})


DIAL = st.fixed_dictionaries({}, optional={"rule": st.sampled_from(RULES), "threshold": st.floats(0, 1),
                                           "temperature": st.floats(*TEMPERATURE_RANGE)})
SAMPLING = st.fixed_dictionaries({}, optional={
    "temperature": st.floats(0, 2), "top_p": st.floats(0.01, 1), "max_tokens": st.integers(1, LIMITS.max_tokens),
    "max_completion_tokens": st.integers(1, LIMITS.max_tokens), "stream": st.booleans(), "seed": st.integers(),
    "stop": st.lists(st.text(max_size=3), max_size=2), "n": st.just(1), "model": st.text(max_size=5)})
REQUEST = st.builds(lambda messages, refusal, other: {**other, "messages": messages, "refusal": refusal},
                    mostly(st.lists(mostly(PLAIN_MESSAGE, MESSAGE), min_size=1, max_size=3), JSON),
                    # the dial non-empty and mostly valid: one in three, possibly empty, left it to the seed whether
                    # enough accepted requests turned it (6 of 300 on one)
                    st.none() | mostly(DIAL.filter(bool), JSON),
                    mostly(SAMPLING, st.dictionaries(OTHER_FIELDS, JSON, max_size=4)))


def as_template_message(message: dict) -> dict:
    """An OpenAI message as the template receives it: the role's template name, the content as one string (text
    parts joined by newlines; none on an assistant turn is empty; a lone surrogate, which JSON's \\ud800 escapes
    can carry and no tokenizer takes, as U+FFFD), the turn's decision token."""
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(part["text"] for part in content)
    content = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in content or "")
    out = {"role": API_ROLES[message["role"]], "content": content}
    if message.get("refusal_token") is not None:
        out["refusal_token"] = message["refusal_token"]
    return out


def test_request_parsing_accepts_what_it_was_sent_or_answers_4xx():
    server_policy, seen = Policy(rule="binary", threshold=0.3), Outcomes()

    @settings(FAST, max_examples=300)
    @given(body=mostly(REQUEST.map(lambda r: json.dumps(r).encode()), st.binary(max_size=40)))
    def check(body):
        try:
            request = chat_request(load_json(body), RequestTerms(server_policy, CATEGORIES, DECISION_TOKENS, LIMITS))
        except ApiError as exc:
            assert 400 <= exc.status < 500
            seen["rejected"] += 1
            return
        raw = json.loads(body)
        assert request.messages == [as_template_message(m) for m in raw["messages"]]
        asked = raw.get("max_completion_tokens")
        asked = raw.get("max_tokens") if asked is None else asked
        assert request.sampling.max_tokens == (LIMITS.max_tokens if asked is None else asked)
        refusal = raw.get("refusal") or {}
        for name in ("rule", "threshold", "temperature"):  # the request's dial over the server's policy
            assert getattr(request.policy, name) == refusal.get(name, getattr(server_policy, name))
        seen["accepted"] += 1
        seen["accepted with a refusal dial"] += bool(refusal)

    check()
    seen.require(accepted=60, rejected=60, **{"accepted with a refusal dial": 10})


def short_and_plain(messages) -> bool:
    """Messages that every OpenAI client sends and that fit the tiny model's context: they must be answered."""
    return all(isinstance(m, dict) and set(m) <= {"role", "content"} and m.get("role") in API_ROLES
               and isinstance(m.get("content"), str) for m in messages) \
        and sum(len(m["content"].encode("utf-8", "surrogatepass")) for m in messages) < 80


def test_the_live_server_answers_valid_requests_and_never_answers_5xx(app_client):
    seen = Outcomes()

    @settings(FAST, max_examples=40)
    @given(messages=st.lists(mostly(PLAIN_MESSAGE, MESSAGE), min_size=1, max_size=3),
           refusal=mostly(st.none(), st.dictionaries(st.sampled_from(["temperature", "rule", "thresholds"]), JSON)))
    def check(messages, refusal):
        body = {"messages": messages, "max_tokens": 2, **({"refusal": refusal} if refusal is not None else {})}
        reply = app_client.post("/v1/chat/completions", content=json.dumps(body),
                                headers={"Content-Type": "application/json"})
        assert reply.status_code < 500, reply.text
        if refusal is None and short_and_plain(messages):
            assert reply.status_code == 200, (body, reply.text)
        if reply.status_code == 200:
            answer = reply.json()
            assert answer["choices"][0]["message"]["role"] == "assistant" and answer["refusal"]["token"]
        else:
            assert reply.json()["error"]["message"]
        seen["answered" if reply.status_code == 200 else "refused"] += 1

    check()
    seen.require(answered=15, refused=5)
