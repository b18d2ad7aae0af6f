"""What goes wrong with a remote engine, against a small fake llama-server on loopback: unreachable, another
model, 5xx (retried for scoring, never for generation), timeouts, a wrong API key. Each is one clear line."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("httpx")

from llama_server import free_port  # noqa: E402

from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.engines.llama.vocab import load_tokenizer
from refusal_edge.sampling import SamplingParams  # noqa: E402
from refusal_edge.cli import main  # noqa: E402
from refusal_edge.engines.remote import EngineError  # noqa: E402

FAST = dict(backoff_s=0.01, timeout=5.0)


class FakeLlamaServer:
    """Answers like llama-server for the tiny GGUF (its own tokenizer, uniform first-token probabilities), with
    faults to order: ``fail[path] = [status, ...]`` answers those statuses first, ``delay_s`` sleeps, ``n_vocab``
    and ``shift_ids`` lie about the vocabulary, ``key`` requires an API key."""

    def __init__(self, gguf, **faults):
        self.tokenizer = load_tokenizer(gguf)
        self.fail: dict[str, list[int]] = faults.pop("fail", {})
        self.delay_s = faults.pop("delay_s", 0.0)
        self.n_vocab = faults.pop("n_vocab", self.tokenizer.n_vocab)
        self.shift_ids = faults.pop("shift_ids", 0)
        self.key = faults.pop("key", None)
        self.owner = faults.pop("owner", "llamacpp")
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.handle(self, None)

            def do_POST(self):
                fake.handle(self, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A client that gave up (a timeout test) leaves a handler writing to a closed socket: no traceback on stderr.
        self.httpd.handle_error = lambda request, address: None
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.tokenizer.close()

    def handle(self, request, body):
        self.requests.append(request.path)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.key and request.headers.get("Authorization") != f"Bearer {self.key}":
            return self.send(request, 401, {"error": {"code": 401, "message": "Invalid API Key"}})
        queued = self.fail.get(request.path)
        if queued:
            status = queued.pop(0)
            return self.send(request, status, {"error": {"code": status, "message": f"injected {status}"}})
        if request.path == "/v1/models":
            return self.send(request, 200, {"data": [{"id": "tiny.gguf", "owned_by": self.owner,
                                                      "meta": {"n_vocab": self.n_vocab, "n_ctx": 256}}]})
        if request.path == "/props":
            return self.send(request, 200, {"total_slots": 2, "default_generation_settings": {"n_ctx": 256}})
        if request.path == "/tokenize":
            ids = self.tokenizer.tokenize(body["content"], special=body.get("parse_special", True))
            return self.send(request, 200, {"tokens": [t + self.shift_ids for t in ids]})
        if request.path == "/completion" and not body.get("stream"):
            return self.send(request, 200, {"completion_probabilities": [{"top_probs": self.top_probs(body)}],
                                            "tokens": [65], "timings": {"cache_n": 0, "prompt_ms": 1.0}})
        return self.send(request, 404, {"error": {"code": 404, "message": "no such route"}})

    def top_probs(self, body) -> list[dict]:
        """The top ``n_probs`` of softmax(logits + logit_bias) (uniform logits), as llama-server reports them with
        post_sampling_probs and samplers ["temperature"]."""
        z = np.zeros(self.tokenizer.n_vocab)
        for token, bias in body.get("logit_bias", []):
            z[token] += bias
        z /= body.get("temperature") or 1.0  # greedy (0) sampling: the probabilities are not asked for
        p = np.exp(z - z.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")[: body.get("n_probs", 1)]
        return [{"id": int(i), "prob": float(p[i])} for i in order]

    @staticmethod
    def send(request, status, payload):
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


def one_line_error(result, *words):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    for word in words:
        assert word in result.output, result.output


def test_a_fake_engine_that_behaves_connects(tiny_gguf):
    with FakeLlamaServer(tiny_gguf) as fake, RefusalModel.connect(fake.url, tiny_gguf, **FAST) as model:
        decision = model.decide("hello")
        assert decision.meta["scores"] == "exact" and model.engine.concurrency == 2


def test_an_unreachable_engine_is_one_line(tiny_gguf):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineError, match="is unreachable"):
        RefusalModel.connect(url, tiny_gguf, **FAST)
    one_line_error(CliRunner().invoke(main, ["decide", str(tiny_gguf), "hi", "--engine", url]),
                   f"engine {url} is unreachable")


@pytest.mark.parametrize("faults, words", [
    ({"n_vocab": 999}, "its vocabulary has 999 tokens"),
    ({"shift_ids": 1}, "the decision tokens"),
    ({"owner": "someone-else", "n_vocab": None}, "does not know (owned_by 'someone-else')"),
])
def test_another_model_or_engine_is_refused_at_connect(tiny_gguf, faults, words):
    with FakeLlamaServer(tiny_gguf, **faults) as fake:
        if faults.get("owner"):
            fake.handle = _without_meta(fake.handle)
        with pytest.raises(EngineError, match=words.replace("(", r"\(").replace(")", r"\)")):
            RefusalModel.connect(fake.url, tiny_gguf, **FAST)
        one_line_error(CliRunner().invoke(main, ["decide", str(tiny_gguf), "hi", "--engine", fake.url]), words)


def _without_meta(handle):
    def patched(request, body):
        if request.path == "/v1/models":
            return FakeLlamaServer.send(request, 200, {"data": [{"id": "m", "owned_by": "someone-else"}]})
        return handle(request, body)
    return patched


def test_5xx_is_retried_with_backoff_then_reported(tiny_gguf):
    with FakeLlamaServer(tiny_gguf, fail={"/v1/models": [503, 502]}) as fake:
        with RefusalModel.connect(fake.url, tiny_gguf, **FAST):  # two failures, then it answers
            pass
        assert fake.requests[:3] == ["/v1/models"] * 3
    with FakeLlamaServer(tiny_gguf, fail={"/v1/models": [500] * 10}) as fake:
        with pytest.raises(EngineError, match=r"failed: HTTP 500: injected 500 \(after 4 attempts\)"):
            RefusalModel.connect(fake.url, tiny_gguf, **FAST)
        assert fake.requests.count("/v1/models") == 4


def test_scoring_is_retried_but_generation_is_not(tiny_gguf):
    # top_k over the whole vocabulary: one scoring request, no bias-and-invert round, so the count is the retries
    with FakeLlamaServer(tiny_gguf) as fake, RefusalModel.connect(fake.url, tiny_gguf, top_k=1000, **FAST) as model:
        fake.requests.clear()  # connect's probe asked for probabilities twice
        fake.fail["/completion"] = [500, 500]
        assert model.decide("hello").token == "[respond]"
        assert fake.requests.count("/completion") == 3
        fake.requests.clear()
        fake.fail["/completion"] = [500]
        answer = model.engine.generate(model.prompt_tokens("hello"), SamplingParams(temperature=0.5),
                                       first_token_bias={model.spec.respond.id: 0.0})
        with pytest.raises(EngineError, match="HTTP 500"):
            next(answer)
        assert fake.requests == ["/completion"]  # one attempt: a retried sample could differ


def test_a_timeout_is_one_line(tiny_gguf):
    with FakeLlamaServer(tiny_gguf, delay_s=1.0) as fake:
        with pytest.raises(EngineError, match=r"did not answer within 0.2 s"):
            RefusalModel.connect(fake.url, tiny_gguf, timeout=0.2, retries=0)


def test_the_api_key_is_sent_and_a_wrong_one_is_named(tiny_gguf, monkeypatch):
    with FakeLlamaServer(tiny_gguf, key="sesame") as fake:
        with RefusalModel.connect(fake.url, tiny_gguf, api_key="sesame", **FAST) as model:
            assert model.decide("hi").meta["scores"] == "exact"
        monkeypatch.setenv("REFUSAL_EDGE_ENGINE_API_KEY", "wrong")
        one_line_error(CliRunner().invoke(main, ["decide", str(tiny_gguf), "hi", "--engine", fake.url]),
                       "refused the API key (HTTP 401)", "--engine-api-key")


def test_engine_options_without_an_engine_are_a_usage_error(tiny_gguf):
    result = CliRunner().invoke(main, ["decide", str(tiny_gguf), "hi", "--engine-model", "x"])
    assert result.exit_code == 2 and "--engine-model, --engine-api-key and --engine-timeout need --engine URL" in result.output
    result = CliRunner().invoke(main, ["eval", str(tiny_gguf), "data.jsonl", "--concurrency", "4"])
    assert result.exit_code == 2 and "--concurrency needs --engine URL" in result.output


def test_a_bad_url_and_a_missing_httpx_are_clear(tiny_gguf, monkeypatch):
    with pytest.raises(EngineError, match="must start with http:// or https://"):
        RefusalModel.connect("127.0.0.1:8080", tiny_gguf)
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(EngineError, match=r"pip install 'refusal-edge\[remote\]'"):
        RefusalModel.connect("http://127.0.0.1:1", tiny_gguf)
