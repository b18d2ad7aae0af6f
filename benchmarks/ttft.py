"""Time to first visible token: refusal-edge ``stream()`` vs a plain model, and how often the prediction hits.

The baseline is what a user of the plain model sees: llama-cpp-python's ``create_completion(stream=True)`` on the
same GGUF, same threads, given the same rendered prompt WITHOUT a decision token. refusal-edge additionally
scores the first response position, applies the policy and feeds the chosen decision token; with the prediction
(the decision token evaluated together with the prompt) that last step disappears when the policy picks the
predicted token. Arms, interleaved round by round on the same prompt, each from an empty KV cache:

- plain      llama-cpp-python, no decision token
- default    refusal-edge as loaded, the policy picks [respond]: prediction on or off as timed on this machine
             (engines/llama/prediction.py; the choice is printed)
- hit        refusal-edge, the policy picks the predicted token ([respond])
- miss       refusal-edge, the policy picks a category token other than the predicted one
- no-predict refusal-edge with the prediction turned off (``predict_decision=False``): the path before it

The hit rate is measured separately: the default policy's decisions over a mix of prompts in random order (a data
file such as CoCoNot's original + contrast sets, else synthetic prompts), predicting each time the token the
policy chose last time.

    python benchmarks/ttft.py [MODEL.gguf] --runs 15 --threads 1 \\
        --data ../shared/data/coconot/original_dev.jsonl --data ../shared/data/coconot/contrast_pref.jsonl
"""

from __future__ import annotations

import random
import statistics
import time

import click

PROMPTS = ["Write a short paragraph about why the sky looks blue during the day.",
           "Give me three tips for keeping a sourdough starter alive.", "What is the capital of Australia?",
           "Explain recursion to a ten year old.", "Summarise the plot of Hamlet in two sentences.",
           "How do I convert Celsius to Fahrenheit?", "Suggest a name for a small bakery by the sea.",
           "List four uses of baking soda around the house."]


def first_chunk(events, t0: float | None = None) -> float:
    """Seconds from ``t0`` (default: now) to the first visible text of a ``RefusalModel.stream``, which is then
    closed. Shared with kernel_choice_bench.py."""
    from refusal_edge import Chunk

    t = time.perf_counter() if t0 is None else t0
    for event in events:
        if isinstance(event, Chunk) and event.text:
            break
    elapsed = time.perf_counter() - t
    events.close()
    return elapsed


@click.command()
@click.argument("model", required=False)
@click.option("--runs", default=15, show_default=True)
@click.option("--threads", default=1, show_default=True)
@click.option("--data", multiple=True, help="prompt files for the hit-rate mix (any format `eval` reads)")
@click.option("--mix", default=300, show_default=True, help="prompts in the hit-rate mix")
@click.option("--identity", default=24, show_default=True,
              help="prompts of the mix answered greedily (32 tokens) with and without the prediction")
def main(model, runs, threads, data, mix, identity):
    from refusal_edge import Policy, RefusalModel
    from refusal_edge.arguments import resolve_model_path
    from refusal_edge.engines.llama.vocab import load_llama

    path = resolve_model_path(model)
    ours = RefusalModel.load(path, n_ctx=2048, n_threads=threads)
    plain = load_llama(path, n_ctx=2048, n_threads=threads, n_threads_batch=threads)  # the same kernels
    engine = ours.engine
    respond = Policy(rule="binary", threshold=1.0)  # never refuses: [respond], the predicted token
    categories = ours.categories
    forced = [Policy(rule="per-category", threshold=1.0, thresholds={c: 0.0}) for c in categories[:2]]

    def run_plain(prompt):
        plain.reset()
        t = time.perf_counter()
        stream = plain.create_completion(ours.prompt_tokens(prompt), max_tokens=8, temperature=0, stream=True)
        for chunk in stream:
            if chunk["choices"][0]["text"]:
                break
        elapsed = time.perf_counter() - t
        stream.close()
        return elapsed

    def run_ours(prompt, policy, predict=True):
        engine.reset()
        engine.predict_decision = predict  # off: the path before the prediction existed; None: the default
        return first_chunk(ours.stream(prompt, policy, temperature=0, max_tokens=8))

    choice = engine.prediction_choice(ours.spec.token_ids[0])  # timed now, or read back: before any arm runs
    arms = {"plain": lambda p, i: run_plain(p),
            "default": lambda p, i: run_ours(p, respond, predict=None),
            "hit": lambda p, i: run_ours(p, respond),
            "miss": lambda p, i: run_ours(p, forced[i % 2]),  # alternating categories: never the predicted one
            "no-predict": lambda p, i: run_ours(p, respond, predict=False)}
    times = {name: [] for name in arms}
    for i in range(2):  # warm-up
        for arm in arms.values():
            arm(PROMPTS[i], i)
    order = list(arms)
    rng = random.Random(0)
    for i in range(runs):
        prompt = PROMPTS[i % len(PROMPTS)]
        rng.shuffle(order)
        for name in order:
            times[name].append(arms[name](prompt, i))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    n_prompt = statistics.mean(len(ours.prompt_tokens(p)) for p in PROMPTS)
    print(f"model: {path.name}; {threads} thread(s); median of {runs} interleaved rounds; "
          f"mean prompt {n_prompt:.0f} tokens; empty KV cache each run")
    print(f"default: {choice.describe()}")
    for k, v in med.items():
        print(f"  {k:<11} TTFT {v:7.2f} ms   ratio vs plain {v / med['plain']:.3f}")
    print(f"  miss cost over a hit: {med['miss'] - med['hit']:.2f} ms; "
          f"prediction saves {med['no-predict'] - med['hit']:.2f} ms on a hit")
    texts = mixed_prompts(data, mix)
    print(hit_rate(ours, texts))
    same = 0
    for text in texts[:identity]:
        answers = []
        for predict in (True, False):
            engine.reset()
            engine.predict_decision = predict
            r = ours.generate(text, temperature=0, max_tokens=32)
            answers.append((r.decision.token_id, r.text))
        same += answers[0] == answers[1]
    print(f"greedy answers (32 tokens, default policy) identical with and without the prediction: {same}/{identity}")
    ours.close()
    plain.close()


def mixed_prompts(data, n) -> list[str]:
    if data:
        from refusal_edge.evaluate.data import read_dataset

        texts = [e.prompt for d in data for e in read_dataset(d).examples]
    else:  # synthetic benign prompts
        texts = [p + f" ({i})" for i, p in enumerate(PROMPTS * (n // len(PROMPTS) + 1))]
    random.Random(1).shuffle(texts)
    return texts[:n]


def hit_rate(model, texts) -> str:
    """The default policy's decisions over a shuffled mix; a hit when the decision repeats the last one."""
    respond = model.spec.token_ids[0]
    predicted, hits, respond_hits, refused = respond, 0, 0, 0
    for text in texts:
        decision = model.decide(text)
        hits += decision.token_id == predicted
        respond_hits += decision.token_id == respond
        refused += decision.refused
        if decision.decision_token:
            predicted = decision.token_id
    return (f"hit rate with the default policy over {len(texts)} prompts in random order ("
            f"{refused / len(texts):.0%} refused): {hits / len(texts):.1%} predicting the last decision, "
            f"{respond_hits / len(texts):.1%} always predicting [respond]")


if __name__ == "__main__":
    main()
