"""CPU kernel choices on this machine: decision-only throughput and time to first visible token with llama.cpp's
extra CPU buffer types (repacked/AMX kernels) on and off, each with decision-token prediction on and off, and what
the kernel canary costs the first time it runs.

Arms, interleaved round by round on the same prompts, each run from an empty KV cache (ratios are against the arm
refusal-edge chooses here, `kernels.choose()`, without prediction):

- decide   ``RefusalModel.decide`` on one prompt: one prefill and the decision (prompts/s)
- ttft     ``RefusalModel.stream`` up to the first visible answer token, the policy picking ``[respond]``

    python benchmarks/kernel_choice_bench.py [MODEL.gguf] --rounds 9 --threads 1
"""

from __future__ import annotations

import statistics
import tempfile
import time

import click

from ttft import PROMPTS, first_chunk  # the same benign prompts and timing (this script runs from benchmarks/)


@click.command()
@click.argument("model", required=False)
@click.option("--rounds", default=9, show_default=True)
@click.option("--threads", default=1, show_default=True)
def main(model, rounds, threads):
    import os

    from refusal_edge import Policy, RefusalModel
    from refusal_edge.arguments import resolve_model_path
    from refusal_edge.engines.llama import kernels

    path = resolve_model_path(model)
    facts = kernels.host_facts()
    with tempfile.TemporaryDirectory() as cache:  # a cold canary: what the first load on a new machine pays
        os.environ["REFUSAL_EDGE_CACHE"] = cache
        t0 = time.perf_counter()
        canary = kernels.run_canary(facts)
        canary_s = time.perf_counter() - t0
        del os.environ["REFUSAL_EDGE_CACHE"]
    chosen = kernels.decide(facts, "auto", lambda: canary)
    arms = {}
    for repack in ("on", "off"):
        for predict in (False, True):
            arms[(repack, predict)] = RefusalModel.load(path, n_ctx=2048, n_threads=threads, repack=repack,
                                                        predict_decision=predict)
    respond = Policy(rule="binary", threshold=1.0)  # never refuses: [respond], the predicted token

    def decide(m, prompt):
        m.engine.reset()
        t = time.perf_counter()
        m.decide(prompt)
        return time.perf_counter() - t

    def ttft(m, prompt):
        m.engine.reset()
        t = time.perf_counter()
        return first_chunk(m.stream(prompt, respond, temperature=0, max_tokens=8), t)

    times = {(arm, kind): [] for arm in arms for kind in ("decide", "ttft")}
    for m in arms.values():  # warm-up
        decide(m, PROMPTS[0])
        ttft(m, PROMPTS[1])
    for r in range(rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        for prompt in PROMPTS:
            for arm in order:
                times[(arm, "decide")].append(decide(arms[arm], prompt))
                times[(arm, "ttft")].append(ttft(arms[arm], prompt))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    base = ("on" if chosen.use_extra_bufts else "off", False)
    print(f"model: {path.name}; CPU: {facts.cpu_model} ({' '.join(facts.cpu_flags)}); llama-cpp-python "
          f"{facts.llama_cpp_python}; {threads} thread(s); median over {rounds} rounds x {len(PROMPTS)} prompts")
    print(f"extra buffer types in this build: {', '.join(facts.extra_buffer_types) or 'none'}; "
          f"cold canary: {canary.outcome} in {canary_s:.2f} s; chosen: {chosen.describe()}")
    for arm in arms:
        d, t = med[(arm, "decide")], med[(arm, "ttft")]
        print(f"  extra buffers {arm[0]:<3} prediction {'on ' if arm[1] else 'off'}: decide {d:7.2f} ms "
              f"({1e3 / d:6.1f} prompts/s, x{med[(base, 'decide')] / d:.3f} throughput)   TTFT {t:7.2f} ms "
              f"(x{t / med[(base, 'ttft')]:.3f})")
    for m in arms.values():
        m.close()


if __name__ == "__main__":
    main()
