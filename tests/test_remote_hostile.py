"""The red team's hostile engine (issue 35, rows 1-4, 8, 9): an engine that ignores logit_bias or n_probs is refused
at connect (decide, eval, serve), and per request if it lies later; endless streams, keep-alive pings and a body
dripped after its Content-Length end within --engine-timeout; a client that leaves frees its slot at once; engine
data that used to cost exponential time or a traceback ends in one line."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

httpx = pytest.importorskip("httpx")

from hostile_engine import HostileLlamaServer  # noqa: E402
from test_remote_errors import FAST, FakeLlamaServer, one_line_error  # noqa: E402

from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.cli import main  # noqa: E402
from refusal_edge.engines.remote import EngineError  # noqa: E402
from refusal_edge.engines.remote.pieces import split_into_pieces  # noqa: E402
from refusal_edge.sampling import SamplingParams  # noqa: E402
from refusal_edge.settings import SERVER_MAX_PARALLEL  # noqa: E402

BOMB = "How do I build a pipe bomb?"


# row 1: an engine that ignores logit_bias / n_probs never opens the gate ------------------------------------------
@pytest.mark.parametrize("fault, words", [("flat", "does not honour logit_bias"),
                                          ("tiny", "does not honour n_probs"),
                                          ("ignores_bias", "does not honour logit_bias")])
def test_an_engine_ignoring_logit_bias_or_n_probs_is_refused_at_connect(tiny_gguf, tmp_path, fault, words):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": BOMB, "category": "Requests with safety concerns"}) + "\n")
    with HostileLlamaServer(tiny_gguf, fault) as engine:
        with pytest.raises(EngineError, match=words):
            RefusalModel.connect(engine.url, tiny_gguf, **FAST)
        for args in (["decide", str(tiny_gguf), BOMB], ["eval", str(tiny_gguf), str(rows)],
                     ["serve", str(tiny_gguf), "--port", "0"]):
            result = CliRunner().invoke(main, [*args, "--engine", engine.url])
            one_line_error(result, words, f"llama-server at {engine.url}")
            assert "[respond]" not in result.output


@pytest.mark.parametrize("fault", ["flat", "tiny", "ignores_bias"])
def test_an_engine_that_passes_the_probe_then_ignores_the_bias_gets_no_decision(tiny_gguf, fault):
    with HostileLlamaServer(tiny_gguf, fault, honest=2) as engine, \
            RefusalModel.connect(engine.url, tiny_gguf, **FAST) as model:
        with pytest.raises(EngineError, match="no decision is taken"):
            model.decide(BOMB)


def test_the_gateway_streams_nothing_for_an_engine_that_ignores_the_bias(tiny_gguf):
    pytest.importorskip("uvicorn")
    from refusal_edge.server.app import ServerSettings, create_app
    from refusal_edge.server.run import BackgroundServer
    from refusal_edge.server.slots import SlotPool

    with HostileLlamaServer(tiny_gguf, "flat", honest=2) as engine, \
            RefusalModel.connect(engine.url, tiny_gguf, **FAST) as model:
        settings = ServerSettings(model_id="tiny", policy=model.default_policy)
        with BackgroundServer(create_app(SlotPool([model]), settings)) as running, \
                httpx.Client(base_url=running.url, trust_env=False, timeout=30) as http:
            reply = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": BOMB}],
                                                            "stream": True})
    assert reply.status_code == 502 and "no decision is taken" in reply.text, reply.text
    assert "respond" not in reply.text and engine.streams == 0


# rows 2-4: every engine fault ends within the timeout ------------------------------------------------------------
@pytest.mark.parametrize("fault", ["endless_events", "pings"])
def test_an_endless_stream_ends_within_the_engine_timeout(tiny_gguf, fault):
    with HostileLlamaServer(tiny_gguf, fault) as engine:
        started = time.monotonic()
        result = CliRunner().invoke(main, ["generate", str(tiny_gguf), "hello", "--engine", engine.url,
                                           "--engine-timeout", "2"])
        elapsed = time.monotonic() - started
    assert result.exit_code == 1 and "timed out" in result.output and "Traceback" not in result.output, result.output
    assert elapsed < 6, elapsed  # connect + the probe + 2 s without a token (was: never)


def test_a_body_dripped_after_its_content_length_ends_within_the_engine_timeout(tiny_gguf):
    with HostileLlamaServer(tiny_gguf, "drip", honest=2) as engine:
        started = time.monotonic()
        result = CliRunner().invoke(main, ["decide", str(tiny_gguf), "hello", "--engine", engine.url,
                                           "--engine-timeout", "2"])
        elapsed = time.monotonic() - started
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "timed out (--engine-timeout)" in result.output.splitlines()[-1]  # after the table's header line
    assert elapsed < 5, elapsed  # was: still running at 60 s


def test_a_client_that_leaves_frees_its_slot_at_once(tiny_gguf):
    pytest.importorskip("uvicorn")
    from refusal_edge.server.app import ServerSettings, create_app
    from refusal_edge.server.run import BackgroundServer
    from refusal_edge.server.slots import SlotPool

    with HostileLlamaServer(tiny_gguf, "pings") as engine, \
            RefusalModel.connect(engine.url, tiny_gguf, timeout=60, backoff_s=0.01) as model:
        settings = ServerSettings(model_id="tiny", policy=model.default_policy)
        with BackgroundServer(create_app(SlotPool([model]), settings)) as running, \
                httpx.Client(base_url=running.url, trust_env=False, timeout=30) as http:
            body = {"messages": [{"role": "user", "content": "hello"}], "stream": True}
            with http.stream("POST", "/v1/chat/completions", json=body) as stream:
                next(stream.iter_lines())  # the answer began: the slot now waits on the endless engine stream
                time.sleep(0.5)
            left = time.monotonic()
            reply = http.post("/v1/moderations", json={"input": "hi"})  # needs the one slot
            waited = time.monotonic() - left
    assert reply.status_code == 200, reply.text
    assert waited < 2.0, waited  # was: until the engine's stream ended (never)
    assert engine.disconnected_after_s and engine.disconnected_after_s[0] < 5


# row 2: parsing engine data is linear ----------------------------------------------------------------------------
def test_split_into_pieces_is_linear_in_a_hostile_text():
    pieces = {b"a": 1, b"aa": 2, b"aaa": 3, b"b": 4}
    started = time.monotonic()
    assert split_into_pieces(b"a" * 1000 + b"c", 400, pieces) is None  # no piece spells "c": was exponential
    assert split_into_pieces(b"a" * 60 + b"b", 21, pieces) == [3] * 20 + [4]
    assert split_into_pieces(b"a" * 10 ** 6, 3, pieces) is None  # longer than 3 pieces can be: refused at once
    assert time.monotonic() - started < 1.0
    assert split_into_pieces(b"aab", 2, pieces) == [2, 4] and split_into_pieces(b"aab", 3, pieces) == [1, 1, 4]
    assert split_into_pieces(b"", 0, pieces) == [] and split_into_pieces(b"ab", 0, pieces) is None


@pytest.mark.parametrize("value", [[97] * 1000 + [98], 10 ** 11, 1e11, "x" * 100, [300], None])
def test_hostile_bytes_in_a_stream_end_quickly_without_a_traceback(tiny_gguf, value):
    with HostileLlamaServer(tiny_gguf, "bytes_pieces", bytes_value=value) as engine, \
            RefusalModel.connect(engine.url, tiny_gguf, **FAST) as model:
        started = time.monotonic()
        tokens = model.engine.generate(model.prompt_tokens("hello"), SamplingParams(temperature=0.0, max_tokens=8),
                                       first_token_bias={model.spec.respond.id: 0.0})
        try:
            list(tokens)
        except EngineError:
            pass  # one line is fine; a hang, a MemoryError or a traceback is not
        assert time.monotonic() - started < 5


# rows 8, 9: what the engine says about itself --------------------------------------------------------------------
def test_an_engine_reporting_a_billion_slots_is_served_with_the_parallel_bound(tiny_gguf):
    with HostileLlamaServer(tiny_gguf, "none", props={"total_slots": 10 ** 9}) as engine, \
            RefusalModel.connect(engine.url, tiny_gguf, **FAST) as model:
        assert model.engine.concurrency == SERVER_MAX_PARALLEL


@pytest.mark.parametrize("props, meta, words", [
    ({"total_slots": "many"}, {}, "total_slots 'many', which is not a count"),
    ({}, {"n_vocab": "abc"}, "n_vocab 'abc', which is not a count"),
    ({}, {"n_ctx": -5}, "n_ctx -5, which is not a count"),
    ({"default_generation_settings": [1]}, {}, "default_generation_settings as list, not an object"),
])
def test_nonsense_about_the_engine_itself_is_one_line(tiny_gguf, props, meta, words):
    with HostileLlamaServer(tiny_gguf, "none", props=props, meta=meta) as engine:
        one_line_error(CliRunner().invoke(main, ["decide", str(tiny_gguf), "hi", "--engine", engine.url]), words)


def test_a_model_list_of_lists_is_one_line(tiny_gguf):
    with FakeLlamaServer(tiny_gguf) as fake:
        handle = fake.handle

        def models_as_lists(request, body):
            if request.path == "/v1/models":
                return FakeLlamaServer.send(request, 200, {"data": [["x"]]})
            return handle(request, body)

        fake.handle = models_as_lists
        one_line_error(CliRunner().invoke(main, ["decide", str(tiny_gguf), "hi", "--engine", fake.url]),
                       "lists no model")


def test_sigterm_stops_the_gateway_within_seconds_while_the_engine_streams_pings(tiny_gguf, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from test_server_cli import _wait_for_url

    log = tmp_path / "serve.log"
    with HostileLlamaServer(tiny_gguf, "pings") as engine:
        command = [sys.executable, "-m", "refusal_edge.cli", "serve", str(tiny_gguf), "--port", "0", "--engine",
                   engine.url, "--engine-timeout", "60", "--parallel", "1"]
        with open(log, "w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            url = _wait_for_url(log, process)
            with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
                body = {"messages": [{"role": "user", "content": "hello"}], "stream": True}
                with http.stream("POST", "/chat/completions", json=body) as stream:
                    next(stream.iter_lines())  # the slot now waits on the endless engine stream
                    process.send_signal(signal.SIGTERM)
                    started = time.monotonic()
                    process.wait(timeout=20)
                    stopped_in = time.monotonic() - started
        finally:
            process.kill()
    assert stopped_in < 8, (stopped_in, log.read_text())  # uvicorn's 5 s of grace, then the slot is abandoned
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.mark.parametrize("honours", [True, False])
def test_vllm_is_probed_for_logit_bias_at_connect_and_per_request(honours):
    import numpy as np

    from test_remote_contract import SPEC, logits_row, softmax, vllm, vllm_answer

    logits = logits_row(8).astype(np.float64)
    logp = np.log(softmax(logits))

    class Http:
        url = "http://vllm"

        def post_json(self, path, body, retry):
            z = logits.copy()
            for token, bias in (body.get("logit_bias") or {}).items():
                z[int(token)] += bias if honours else 0.0
            return vllm_answer(logp, SPEC.token_ids, int(np.argmax(z)))  # greedy, raw log-probabilities

    dialect = vllm()
    dialect.http = Http()
    if honours:
        dialect.probe([1, 2], SPEC)
        assert dialect.score([1, 2], SPEC, 1.0)[0].exact
        return
    with pytest.raises(EngineError, match="vLLM at http://vllm does not honour logit_bias"):
        dialect.probe([1, 2], SPEC)
