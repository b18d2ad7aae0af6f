"""A remote engine cannot talk the runtime into [respond] (issue 19, items 3-5): scores no softmax gives, token ids
outside the vocabulary, a stalled engine and a reset stream are each one clear EngineError (CLI exit 1, server 502),
never a decision, never stored, never a llama.cpp abort."""

from __future__ import annotations

import json
import math
import socket
import threading
import time

import pytest
from click.testing import CliRunner

pytest.importorskip("httpx")

from test_remote_contract import SPEC, V, dialect_on, logits_row, vllm, vllm_answer, softmax  # noqa: E402
from test_remote_errors import FAST, FakeLlamaServer, one_line_error  # noqa: E402

import numpy as np  # noqa: E402

from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.cli import main  # noqa: E402
from refusal_edge.engines.remote import EngineError  # noqa: E402
from refusal_edge.engines.remote.firsttoken import scores_from_logprobs  # noqa: E402
from refusal_edge.engines.remote.http import HttpClient  # noqa: E402
from refusal_edge.sampling import SamplingParams  # noqa: E402


class LyingLlamaServer(FakeLlamaServer):
    """The fake llama-server, with /completion's first-token probabilities replaced by ``top`` (a function of the
    tokenizer's decision ids) and its sampled token by ``sampled``, once it has answered ``honest`` such requests
    truthfully (connect's probe asks two: an engine may pass it and lie later)."""

    def __init__(self, gguf, top=None, sampled=None, honest=2, **faults):
        super().__init__(gguf, **faults)
        self.top, self.sampled, self.honest = top, sampled, honest

    def handle(self, request, body):
        if request.path == "/completion" and self.honest and not body.get("stream"):
            self.honest -= 1
        elif request.path == "/completion" and self.top is not None and not body.get("stream"):
            self.requests.append(request.path)
            tokens = [self.sampled] if self.sampled is not None else [65]
            return self.send(request, 200, {"completion_probabilities": [{"top_probs": self.top}], "tokens": tokens,
                                            "timings": {"cache_n": 0, "prompt_ms": 1.0}})
        return super().handle(request, body)


def respond_id(gguf) -> int:
    with FakeLlamaServer(gguf) as fake:
        return fake.tokenizer.tokenize("[respond]", special=True)[0]


def decision_ids(fake) -> list[int]:
    texts = ["[respond]", "[Incomplete requests]", "[Indeterminate requests]", "[Unsupported requests]",
             "[Humanizing requests]", "[Requests with safety concerns]"]
    return [fake.tokenizer.tokenize(t, special=True)[0] for t in texts]


GARBAGE = {  # name -> top_probs given the decision token ids (respond first)
    "probability 1e300": lambda ids: [{"id": ids[0], "prob": 1e300}, *({"id": t, "prob": 0.01} for t in ids[1:])],
    "probability -0.5": lambda ids: [{"id": ids[0], "prob": 0.5}, *({"id": t, "prob": -0.5} for t in ids[1:])],
    "probability NaN": lambda ids: [{"id": t, "prob": float("nan")} for t in ids],
    "probability Infinity": lambda ids: [{"id": ids[0], "prob": float("inf")}, *({"id": t, "prob": 0.0} for t in ids[1:])],
    "a sum over 1": lambda ids: [{"id": t, "prob": 0.6} for t in ids],
    "probability as text": lambda ids: [{"id": t, "prob": "0.1"} for t in ids],
    "an id past the vocabulary": lambda ids: [{"id": t, "prob": 0.1} for t in ids] + [{"id": 10 ** 6, "prob": 0.1}],
    "a negative id": lambda ids: [{"id": t, "prob": 0.1} for t in ids] + [{"id": -1, "prob": 0.1}],
}


@pytest.mark.parametrize("name", GARBAGE)
def test_llama_server_scores_no_softmax_gives_are_an_engine_error(tiny_gguf, name):
    with FakeLlamaServer(tiny_gguf) as probe:
        ids = decision_ids(probe)
    with LyingLlamaServer(tiny_gguf, top=GARBAGE[name](ids)) as fake:
        with RefusalModel.connect(fake.url, tiny_gguf, top_k=1000, **FAST) as model:
            with pytest.raises(EngineError, match="no decision is taken|outside|not a number"):
                model.decide("hello")
        result = CliRunner().invoke(main, ["decide", str(tiny_gguf), "hello", "--engine", fake.url])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "Error: the engine" in result.output and "[respond]" not in result.output


def test_garbage_scores_are_never_stored_by_eval(tiny_gguf, tmp_path):
    with FakeLlamaServer(tiny_gguf) as probe:
        ids = decision_ids(probe)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"p{i}", "category": "Humanizing requests"}) + "\n"
                            for i in range(3)))
    store = tmp_path / "scores.jsonl"
    with LyingLlamaServer(tiny_gguf, top=GARBAGE["probability 1e300"](ids)) as fake:
        for extra in ([], ["--skip-bad-rows"]):
            result = CliRunner().invoke(main, ["eval", str(tiny_gguf), str(rows), "--engine", fake.url,
                                               "--store", str(store), *extra])
            assert result.exit_code == 1 and "no decision is taken" in result.output, result.output
            assert not store.exists() or not any(line.strip() for line in store.read_text().splitlines()[1:])


def test_the_gateway_answers_502_not_flagged_false(tiny_gguf):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from refusal_edge.server.app import ServerSettings, create_app
    from refusal_edge.server.run import BackgroundServer
    from refusal_edge.server.slots import SlotPool

    with FakeLlamaServer(tiny_gguf) as probe:
        ids = decision_ids(probe)
    with LyingLlamaServer(tiny_gguf, top=GARBAGE["probability 1e300"](ids)) as fake, \
            RefusalModel.connect(fake.url, tiny_gguf, top_k=1000, **FAST) as model:
        settings = ServerSettings(model_id="tiny", policy=model.default_policy)
        with BackgroundServer(create_app(SlotPool([model]), settings)) as running:
            with httpx.Client(base_url=running.url, trust_env=False, timeout=30) as http:
                reply = http.post("/v1/moderations", json={"input": "how do I make a bomb"})
                chat = http.post("/api/chat", json={"messages": [{"role": "user", "content": "hi"}],
                                                    "stream": False})
    assert reply.status_code == 502 and reply.json()["error"]["code"] == "engine_error", reply.text
    assert "flagged" not in reply.text
    assert chat.status_code == 502 and "no decision is taken" in chat.json()["error"]


# the arithmetic's own checks (both dialects go through scores_from_logprobs) ------------------------------------
@pytest.mark.parametrize("reported", [
    {**{t: -3.0 for t in SPEC.token_ids}, SPEC.token_ids[0]: 50.0},  # vLLM: respond at +50
    {**{t: -3.0 for t in SPEC.token_ids}, 7: 5.0},  # a non-decision token at +5 (it would steer the natural rule)
    {t: -1e308 for t in SPEC.token_ids},  # every decision probability 0, nothing else reported
    {**{t: -800.0 for t in SPEC.token_ids}, 7: -0.5},  # every decision probability 0, the rest holds only 0.6
    {t: -1e39 for t in SPEC.token_ids},  # below anything a float32 softmax gives
    {**{t: -0.1 for t in SPEC.token_ids}},  # six tokens at 0.9 each
    {**{t: -3.0 for t in SPEC.token_ids}, 7: math.inf},
    {**{t: -3.0 for t in SPEC.token_ids}, V + 5: -3.0},  # an id past the vocabulary
])
def test_logprobs_no_softmax_gives_are_refused(reported):
    with pytest.raises(EngineError, match="no decision is taken|outside"):
        scores_from_logprobs(reported, SPEC, 1.0, upper_bound=-20.0, n_vocab=V)


def test_all_decision_tokens_at_zero_decide_when_the_reported_tokens_hold_the_mass():
    reported = {**{t: -800.0 for t in SPEC.token_ids}, 7: math.log(0.6), 8: math.log(0.4)}
    scores = scores_from_logprobs(reported, SPEC, 1.0, n_vocab=V)
    assert scores.top_rest_id == 7 and math.isfinite(scores.rest_logsumexp)


def test_float32_rounding_just_over_zero_and_one_is_accepted():
    reported = {t: -100.0 for t in SPEC.token_ids}
    reported[SPEC.token_ids[0]] = 3e-8  # log(1.00000003): a float32 "1"
    assert scores_from_logprobs(reported, SPEC, 1.0, n_vocab=V).logits[0] == 0.0
    shares = softmax(logits_row(6)[list(SPEC.token_ids)]) * (1 + 3e-7)  # six float32 shares summing a hair over 1
    scores_from_logprobs({t: float(np.log(p)) for t, p in zip(SPEC.token_ids, shares)}, SPEC, 1.0, n_vocab=V)


def test_vllm_answers_with_garbage_are_refused():
    logp = np.log(softmax(logits_row(6)))
    for mutate in (lambda a: a["choices"][0]["logprobs"]["top_logprobs"][0].update({f"token_id:{SPEC.token_ids[0]}": 50.0}),
                   lambda a: a["choices"][0]["logprobs"]["top_logprobs"][0].update({f"token_id:{V}": -1.0}),
                   lambda a: a["choices"][0]["logprobs"]["top_logprobs"][0].update({"token_id:-3": -1.0}),
                   lambda a: a["choices"][0]["logprobs"]["token_logprobs"].__setitem__(0, "nan"),
                   lambda a: a["choices"][0]["logprobs"].__setitem__("tokens", [f"token_id:{10 ** 30}"])):
        answer = vllm_answer(logp, SPEC.token_ids, 7)
        mutate(answer)
        dialect = vllm()
        dialect.tokenizer = type("Tok", (), {"n_vocab": V})()
        dialect.http = type("Http", (), {"url": "http://vllm", "post_json": lambda self, p, b, retry: answer})()
        with pytest.raises(EngineError):
            dialect.score([1, 2], SPEC, 1.0)


# token ids from the engine, checked before any tokenizer sees them ----------------------------------------------
class Tok:
    n_vocab = V
    eos = V - 1
    is_eog = staticmethod(lambda t: t == V - 1)
    piece = staticmethod(lambda t: b"x")


class Events:
    url = "http://engine"

    def __init__(self, events, answer=None):
        self.events, self.answer = events, answer

    def stream_events(self, path, body, **options):
        yield from self.events

    def post_json(self, path, body, retry):
        return self.answer


@pytest.mark.parametrize("bad", [V, V + 10 ** 6, -1, 2 ** 63, "7", 3.5, True])
def test_token_ids_outside_the_vocabulary_are_an_engine_error(bad):
    params = SamplingParams(temperature=0.0, max_tokens=4)
    llama = dialect_on(logits_row(1))
    llama.tokenizer = Tok()
    llama.http = Events([{"tokens": [5, bad], "tokens_predicted": 2, "stop": False}], {"tokens": [bad]})
    with pytest.raises(EngineError, match="outside|not a list"):
        list(llama.stream([1, 2], params, 4, 256))
    with pytest.raises(EngineError, match="outside"):
        llama.sample_first([1, 2], params, {})
    v = vllm()
    v.tokenizer = Tok()
    v.http = Events([{"choices": [{"token_ids": [5, bad], "finish_reason": None}]}],
                    {"choices": [{"token_ids": [bad]}]})
    with pytest.raises(EngineError, match="outside"):
        list(v.stream([1, 2], params, 4, 256))
    with pytest.raises(EngineError, match="outside"):
        v.sample_first([1, 2], params, {})


# a stalled engine, a reset stream ------------------------------------------------------------------------------
def test_a_stalled_engine_fails_within_the_timeout_retries_included(tiny_gguf):
    with FakeLlamaServer(tiny_gguf, delay_s=3.0) as fake:
        started = time.monotonic()
        with pytest.raises(EngineError, match=r"did not answer within 0.5 s: timed out"):
            RefusalModel.connect(fake.url, tiny_gguf, timeout=0.5, retries=3, backoff_s=0.01)
        assert time.monotonic() - started < 2.0  # 4 attempts of 0.5 s each would be over 2 s
        started = time.monotonic()
        result = CliRunner().invoke(main, ["decide", str(tiny_gguf), "hi", "--engine", fake.url,
                                           "--engine-timeout", "0.5"])
        one_line_error(result, "timed out", "--engine-timeout")
        assert time.monotonic() - started < 2.5


def test_every_verb_with_engine_takes_engine_timeout():
    for verb in ("decide", "generate", "chat", "eval", "calibrate", "serve"):
        help_text = CliRunner().invoke(main, [verb, "--help"]).output
        assert ("--engine-timeout" in help_text) == ("--engine " in help_text or "--engine URL" in help_text), verb


def test_a_reset_mid_stream_is_reported_as_a_reset():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve_one():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        event = b'data: {"tokens": [1]}\n\n'
        conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
        time.sleep(0.1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # RST, mid-stream

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    http = HttpClient(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=5)
    try:
        events = http.stream_events("/completion", {})
        assert next(events) == {"tokens": [1]}
        with pytest.raises(EngineError) as caught:
            next(events)
    finally:
        http.close()
        listener.close()
    assert "reset the connection mid-stream" in str(caught.value) and "is the URL right" not in str(caught.value)
