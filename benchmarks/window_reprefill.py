"""What a window over a long chat costs in prefill: turns cut to fit the context vs turns that reuse the cache.

A scripted chat (the same long messages every run) goes on well past the context, as `refusal-edge chat` runs it:
each turn is fitted (model.fit, whole turns left out, the cut kept for the next turns), decided and answered
greedily. Two arms on the same model, one after the other from an empty cache:

- minimal  the fewest turns left out (spare=0): once the history is full, nearly every turn moves the cut
- spare    a cut frees a quarter of the context more (spare=n_ctx//4, what chat does): the next turns reuse it

Printed per arm: turns with a cut, tokens evaluated (prompt minus reused prefix) on turns with and without a cut,
and the prefill time of the whole chat; the ratio spare/minimal compares the arms within one run.

    python benchmarks/window_reprefill.py [MODEL.gguf] --ctx 512 --turns 30 --threads 1
"""

from __future__ import annotations

import statistics

import click

TOPICS = ["the sea and the sky", "a fox in a quiet forest", "baking bread at dawn", "a lighthouse keeper",
          "a robot learning to paint", "the first snow of winter"]


def message(i: int) -> str:
    return (f"Turn {i}: tell me a short story about {TOPICS[i % len(TOPICS)]}, with a name for every character "
            "and one surprising detail; keep it under three sentences please.")


def run_chat(model, turns: int, max_tokens: int, spare: int, system: str) -> dict:
    model.engine.reset()
    history: list[dict] = []
    cut, kept = [], []  # (evaluated tokens, prefill ms) on turns with and without a cut
    for i in range(turns):
        history.append({"role": "user", "content": message(i)})
        window = model.fit([{"role": "system", "content": system}, *history], max_tokens, spare=spare)
        del history[:window.dropped_messages]
        result = model.generate(window.messages, temperature=0, max_tokens=max_tokens)
        d = result.decision
        (cut if window.dropped_messages else kept).append((d.prompt_tokens - d.cached_tokens, d.prefill_ms))
        history.append(result.message)
    return {"cut": cut, "kept": kept}


def summary(rows: list[tuple[int, float]]) -> str:
    if not rows:
        return "none"
    return (f"{len(rows):3d} turns, {statistics.mean(r[0] for r in rows):6.1f} tokens evaluated, "
            f"{statistics.mean(r[1] for r in rows):7.1f} ms prefill (mean)")


@click.command()
@click.argument("model", required=False)
@click.option("--ctx", default=512, show_default=True)
@click.option("--turns", default=30, show_default=True)
@click.option("--max-tokens", default=24, show_default=True)
@click.option("--threads", default=1, show_default=True)
def main(model, ctx, turns, max_tokens, threads):
    from refusal_edge import RefusalModel
    from refusal_edge.arguments import resolve_model_path

    with RefusalModel.load(resolve_model_path(model), n_ctx=ctx, n_threads=threads) as m:
        system = "You are a helpful assistant. Answer briefly."
        run_chat(m, 3, max_tokens, 0, system)  # warm-up
        arms = {"minimal": run_chat(m, turns, max_tokens, 0, system),
                "spare": run_chat(m, turns, max_tokens, m.engine.n_ctx // 4, system)}
        totals = {}
        for name, arm in arms.items():
            rows = arm["cut"] + arm["kept"]
            totals[name] = (sum(r[0] for r in rows), sum(r[1] for r in rows))
            click.echo(f"{name:8s} cut:  {summary(arm['cut'])}")
            click.echo(f"{'':8s} kept: {summary(arm['kept'])}")
            click.echo(f"{'':8s} whole chat: {totals[name][0]} tokens evaluated, {totals[name][1]:.0f} ms prefill")
        tokens = totals["spare"][0] / totals["minimal"][0]
        time = totals["spare"][1] / totals["minimal"][1]
        click.echo(f"spare / minimal: {tokens:.3f}x tokens evaluated, {time:.3f}x prefill time "
                   f"({turns} turns, ctx {m.engine.n_ctx}, {threads} thread(s))")


if __name__ == "__main__":
    main()
