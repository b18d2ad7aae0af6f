"""Property-based tests (Hypothesis) of every surface that takes untrusted input.

Derandomized (a fixed seed) and small, so that CI sees the same examples every run in a few seconds.
"""

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.decision import FirstTokenScores, decide  # noqa: E402
from refusal_edge.errors import PolicyError, RefusalEdgeError  # noqa: E402
from refusal_edge.gguf_header import check_data, read_header, tensor_extents  # noqa: E402
from refusal_edge.inspection import describe  # noqa: E402
from refusal_edge.metadata import CATEGORIES, RefusalSpec, TokenRef  # noqa: E402
from refusal_edge.policy import BIAS_LIMIT, RULES, TEMPERATURE_RANGE, Policy  # noqa: E402
from refusal_edge.server.protocol import ApiError, Limits, parse_chat_request  # noqa: E402
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
    neutral = [{**m, "content": "a", **({"name": "a"} if "name" in m else {})} for m in messages]
    assert control_count(named_model, messages) == control_count(named_model, neutral)


@FAST
@given(message=st.dictionaries(HOSTILE | st.sampled_from(["role", "content", "name", "refusal_token"]), JSON,
                               max_size=5))
def test_any_message_object_renders_or_raises_a_refusal_edge_error(named_model, message):
    try:
        named_model.prompt_tokens([message])
    except RefusalEdgeError:
        pass


# policies -----------------------------------------------------------------------------------------------------
FIELDS = st.sampled_from(["rule", "threshold", "thresholds", "biases", "temperature"]) | HOSTILE
NUMBERS = st.floats() | st.integers() | st.sampled_from([1e-40, 1e300, 0.01, 100.0, -100.0])
TABLE = st.dictionaries(st.sampled_from(["safety", "Safety", "respond", "human", "req"]) | HOSTILE, NUMBERS | JSON,
                        max_size=3)


@FAST
@given(raw=st.dictionaries(FIELDS, st.sampled_from(RULES) | NUMBERS | TABLE | JSON, max_size=5))
def test_policy_parsing_gives_a_valid_policy_or_a_policy_error(raw):
    try:
        policy = Policy.from_dict(raw, CATEGORIES)
    except PolicyError:
        return
    assert TEMPERATURE_RANGE[0] <= policy.temperature <= TEMPERATURE_RANGE[1]
    assert all(0 <= v <= 1 for v in (policy.threshold, *policy.thresholds.values()))
    assert all(abs(v) <= BIAS_LIMIT for v in policy.biases.values())
    assert set(policy.thresholds) <= set(CATEGORIES) and set(policy.biases) <= {*CATEGORIES, "respond"}


@FAST
@given(data=st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()),
       suffix=st.sampled_from([".toml", ".json"]))
def test_policy_files_of_anything_load_or_raise_a_policy_error(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"p{suffix}"
        path.write_bytes(data)
        try:
            Policy.load(path, CATEGORIES)
        except PolicyError as exc:
            assert str(path) in str(exc)


SPEC = RefusalSpec(TokenRef("respond", "[respond]", 0), tuple(TokenRef(n, f"[{n}]", 1 + i) for i, n in enumerate("AB")))


@FAST
@given(logits=st.lists(st.floats(-1e4, 1e4, width=32), min_size=6, max_size=6),
       temperature=st.floats(*TEMPERATURE_RANGE), bias=st.floats(-BIAS_LIMIT, BIAS_LIMIT),
       rule=st.sampled_from(RULES), threshold=st.floats(0, 1))
def test_every_valid_policy_on_finite_logits_gives_finite_probabilities(logits, temperature, bias, rule, threshold):
    policy = Policy(rule=rule, threshold=threshold, temperature=temperature, biases={"A": bias, "respond": -bias})
    scores = FirstTokenScores.from_logits(np.array(logits, np.float32), SPEC, temperature)
    d = decide(scores, SPEC, policy)
    probs = [d.respond_probability, *d.probabilities.values()]
    assert all(np.isfinite(probs)) and all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-9


# server request parsing ----------------------------------------------------------------------------------------
DECISION_TOKENS = frozenset(["[respond]", *(f"[{c}]" for c in CATEGORIES)])
OTHER_FIELDS = st.sampled_from(["temperature", "top_p", "max_tokens", "stop", "stream", "seed", "n", "model",
                                "stream_options", "top_k", "min_p", "logit_bias", "max_completion_tokens"])
MESSAGE = st.dictionaries(st.sampled_from(["role", "content", "refusal_token", "name"]),
                          st.sampled_from(["user", "assistant", "system", "developer", "[respond]"]) | JSON,
                          max_size=4)
REQUEST = st.builds(lambda messages, refusal, other: {**other, "messages": messages, "refusal": refusal},
                    st.lists(MESSAGE, max_size=3) | JSON, st.none() | TABLE | JSON,
                    st.dictionaries(OTHER_FIELDS, JSON, max_size=4))


@settings(FAST, max_examples=200)
@given(body=REQUEST.map(lambda r: json.dumps(r).encode()) | st.binary(max_size=40))
def test_request_parsing_accepts_or_answers_4xx(body):
    try:
        parse_chat_request(body, policy=Policy(), categories=CATEGORIES, decision_tokens=DECISION_TOKENS,
                           limits=Limits(max_tokens=4))
    except ApiError as exc:
        assert 400 <= exc.status < 500


@settings(FAST, max_examples=40)
@given(messages=st.lists(MESSAGE | st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": HOSTILE}),
                         min_size=1, max_size=3),
       refusal=st.none() | TABLE | st.dictionaries(st.sampled_from(["temperature", "rule", "thresholds"]), JSON))
def test_the_live_server_never_answers_5xx(app_client, messages, refusal):
    body = {"messages": messages, "max_tokens": 2, **({"refusal": refusal} if refusal is not None else {})}
    reply = app_client.post("/v1/chat/completions", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert reply.status_code < 500, reply.text
    assert reply.status_code == 200 or "error" in reply.json()


# the GGUF header reader on mutated files -----------------------------------------------------------------------
class Original:
    """The tiny GGUF's bytes, with a short repr for Hypothesis's failure reports."""

    def __init__(self, path):
        self.data, self.header_end = path.read_bytes(), read_header(path).data_offset

    def __repr__(self) -> str:
        return f"<tiny GGUF, {len(self.data)} bytes>"


@pytest.fixture(scope="module")
def original(tiny_gguf):
    return Original(tiny_gguf)


MUTATION = st.tuples(st.sampled_from(["set", "u64", "cut", "insert", "delete"]), st.integers(0, 1 << 30),
                     st.integers(0, 255), st.sampled_from([0, 1, 255, 1 << 31, 1 << 62, (1 << 64) - 1]))


def mutate(data: bytes, header_end: int, mutations) -> bytes:
    buf = bytearray(data)
    for kind, pos, byte, big in mutations:
        at = pos % max(1, min(len(buf), header_end + 64))  # mostly the header: that is what the reader parses
        if kind == "set" and at < len(buf):
            buf[at] = byte
        elif kind == "u64":
            buf[at:at + 8] = struct.pack("<Q", big)
        elif kind == "cut":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = bytes([byte]) * (1 + byte % 9)
        else:
            del buf[at:at + 1 + byte % 9]
    return bytes(buf)


@settings(FAST, max_examples=150)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_the_header_reader_raises_only_its_own_errors_on_mutated_files(original, mutations):
    data, header_end = original.data, original.header_end
    fd, name = tempfile.mkstemp(suffix=".gguf")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(mutate(data, header_end, mutations))
        try:
            header = read_header(name)
            for key in header.kv:
                header.get(key)
            tensor_extents(header)
            check_data(header)
            describe(Path(name))  # what `refusal-edge inspect` prints
        except RefusalEdgeError:
            pass
    finally:
        os.unlink(name)
