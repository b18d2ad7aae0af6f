"""End-to-end `RefusalModel.generate` against plain llama-cpp-python `create_completion`, and the decision cost.

Both sides evaluate exactly the same tokens: the baseline is given the rendered prompt plus the decision token
that refusal-edge chose, and both decode greedily for the same number of tokens, so the ratio isolates what the
refusal machinery costs (template, decision, streaming loop) over llama-cpp-python's own generation loop.
Runs are interleaved and each starts from an empty KV cache.

    python benchmarks/generate_overhead.py [MODEL.gguf] --runs 7 --max-tokens 64 --threads 2
"""

from __future__ import annotations

import statistics
import time

import click
import numpy as np

PROMPT = "Write a short paragraph about why the sky looks blue during the day."


@click.command()
@click.argument("model", required=False)
@click.option("--runs", default=7, show_default=True)
@click.option("--max-tokens", default=64, show_default=True)
@click.option("--threads", default=2, show_default=True)
def main(model, runs, max_tokens, threads):
    from refusal_edge import RefusalModel
    from refusal_edge.decision import FirstTokenScores, decide
    from refusal_edge.arguments import resolve_model_path
    from refusal_edge.engines.llama.vocab import load_llama

    path = resolve_model_path(model)
    ours = RefusalModel.load(path, n_ctx=2048, n_threads=threads)
    plain = load_llama(path, n_ctx=2048, n_threads=threads, n_threads_batch=threads)  # the same kernels
    policy = ours.default_policy
    prompt_tokens = ours.prompt_tokens(PROMPT)
    decision = ours.decide(PROMPT, policy)
    baseline_prompt = prompt_tokens + [decision.token_id]
    # Greedy on both sides; no stop on end-of-generation would make runs unequal, so fix the token count.
    probe = ours.generate(PROMPT, policy, temperature=0, max_tokens=max_tokens)
    n_tokens = max(1, probe.completion_tokens - (0 if probe.finish_reason == "length" else 1))

    def run_ours():
        ours.engine.reset()
        t = time.perf_counter()
        r = ours.generate(PROMPT, policy, temperature=0, max_tokens=n_tokens)
        return time.perf_counter() - t, r.text

    def run_plain(limit):
        plain.reset()
        t = time.perf_counter()
        r = plain.create_completion(baseline_prompt, max_tokens=limit, temperature=0, top_k=1)
        return time.perf_counter() - t, r["choices"][0]["text"], r["usage"]["completion_tokens"]

    # llama-cpp-python may count one token more than it was asked for: match the decoded token counts exactly.
    plain_limit = n_tokens - max(0, run_plain(n_tokens)[2] - n_tokens)

    run_ours(), run_plain(plain_limit)  # warm-up
    t_ours, t_plain, same = [], [], True
    for _ in range(runs):
        a, text_a = run_ours()
        b, text_b, _ = run_plain(plain_limit)
        t_ours.append(a)
        t_plain.append(b)
        # llama-cpp-python drops invalid UTF-8 where refusal-edge shows U+FFFD; compare the rest.
        same &= text_a.replace("\ufffd", "") == text_b

    # The same comparison on the other decision-token path (prediction forced the other way than the default).
    default_choice = ours.engine.prediction_choice(decision.token_id)
    ours.engine.predict_decision = not default_choice.on
    same_other = run_ours()[1].replace("\ufffd", "") == run_plain(plain_limit)[1]
    ours.engine.predict_decision = None

    logits = ours.engine.logits().copy()
    n = 2000
    t = time.perf_counter()
    for _ in range(n):
        decide(FirstTokenScores.from_logits(logits, ours.spec, policy.temperature), ours.spec, policy)
    decision_us = (time.perf_counter() - t) / n * 1e6

    # The paper's models have Llama-3's 128,256-entry vocabulary: time the decision at that size too.
    big = np.random.default_rng(0).normal(size=128_256).astype(np.float32)
    big_spec = _spec_for(ours.spec, 128_000)
    t = time.perf_counter()
    for _ in range(n // 4):
        decide(FirstTokenScores.from_logits(big, big_spec, policy.temperature), big_spec, policy)
    big_us = (time.perf_counter() - t) / (n // 4) * 1e6

    med_ours, med_plain = statistics.median(t_ours), statistics.median(t_plain)
    print(f"model: {path.name}  vocab {ours.tokenizer.n_vocab}  prompt {len(prompt_tokens)} tokens  "
          f"generated {n_tokens} tokens  threads {threads}  runs {runs}")
    print(f"refusal-edge generate      median {med_ours * 1e3:8.1f} ms")
    print(f"llama-cpp create_completion median {med_plain * 1e3:8.1f} ms")
    print(f"ratio generate / create_completion: {med_ours / med_plain:.3f}   (goal <= 1.02)")
    print(f"identical text on both sides: {same}; with decision-token prediction "
          f"{'off' if default_choice.on else 'on'} too: {same_other}  (default: {default_choice.describe()})")
    print(f"decision cost after prefill: {decision_us:.0f} us per decision over the full vocabulary (goal <= 1000 us)")
    print(f"decision cost at a Llama-3-sized vocabulary (128,256): {big_us:.0f} us")
    print(f"spread: ours {np.std(t_ours) * 1e3:.1f} ms, plain {np.std(t_plain) * 1e3:.1f} ms (std)")


def _spec_for(spec, first_id):
    from refusal_edge.metadata import RefusalSpec, TokenRef

    refs = spec.refs
    moved = [TokenRef(r.name, r.token, first_id + i) for i, r in enumerate(refs)]
    return RefusalSpec(moved[0], tuple(moved[1:]))


if __name__ == "__main__":
    main()
