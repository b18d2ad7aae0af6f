"""The remote engine: evaluation throughput in-process vs through llama.cpp's llama-server with N slots, and the
refusal gateway's (`serve --engine`) overhead on time-to-first-token and requests/s vs calling the engine directly.

Same GGUF, same machine, same thread count on both sides of each ratio; rounds alternate between the sides.

* eval: ``score_examples`` (the real evaluation path: score store, sorted prompts, shared system prompt) on P
  prompts, in-process (one context, prefix reuse) vs ``RefusalModel.connect`` to llama-server started with
  ``--parallel N --threads T`` and ``eval --concurrency N`` (N requests in flight; the server batches them).
* gateway: streaming chat requests at temperature 0, max_tokens M, straight to llama-server's own
  ``/v1/chat/completions`` vs through ``refusal-edge serve --engine`` (which scores the prompt, then streams the
  continuation after the forced decision token). TTFT with one client; requests/s with C clients.

    python benchmarks/remote_bench.py                      # the embedded default model, 2 threads, 2 slots
    python benchmarks/remote_bench.py --model m.gguf --prompts 64 --slots 4 --threads 2 --concurrency 4

Needs the llama-server binary of .ci/build-llama-server (or $REFUSAL_EDGE_LLAMA_SERVER).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
RESENT: dict[str, int] = {}  # requests sent again after the connection dropped before any answer, per target
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from eval_throughput import SYSTEM, benchmark_model, prompts  # noqa: E402
from llama_server import LlamaServer, binary  # noqa: E402
from server_bench import wait_for_url  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a refusal-token GGUF [default: the embedded default model]")
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3, help="alternating eval rounds per side")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--slots", type=int, default=2, help="llama-server --parallel (and eval --concurrency)")
    p.add_argument("--requests", type=int, default=40, help="gateway requests per side and phase")
    p.add_argument("--concurrency", type=int, default=2, help="gateway clients in flight")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--ctx", type=int, default=1024, help="context per slot")
    p.add_argument("--logs", type=Path, default=None, help="keep the engine's and the gateway's logs here")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    executable = binary()
    if executable is None:
        raise SystemExit("no llama-server: run .ci/build-llama-server or set $REFUSAL_EDGE_LLAMA_SERVER")
    from refusal_edge import RefusalModel

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        logs = args.logs or tmp
        logs.mkdir(parents=True, exist_ok=True)
        model, what = benchmark_model(args.model, tmp)
        # Every request gets a prompt no earlier request had (numbered synthetic prompts): llama-server keeps old
        # prompts' KV states (per slot and in its RAM cache), and a repeat would time the cache, not the engine.
        texts = prompts(2 * args.prompts * args.rounds + 4 * (args.requests + args.concurrency) + 8)
        print(f"model: {model.name} ({what}); {args.threads} thread(s) on each side; llama-server {args.slots} "
              f"slot(s), flash attention off (as in-process)")
        with LlamaServer(model, slots=args.slots, n_ctx=args.ctx, threads=args.threads, log=logs / "engine.log",
                         executable=executable) as engine:
            with RefusalModel.load(model, n_ctx=args.ctx, n_threads=args.threads) as local, \
                    RefusalModel.connect(engine.url, model, concurrency=args.slots) as remote:
                eval_rows = eval_rounds(local, remote, texts[: 2 * args.prompts * args.rounds], args, tmp)
            report_eval(eval_rows, args)
            gateway = start_gateway(model, engine.url, args, logs / "gateway.log")
            try:
                url = wait_for_url(logs / "gateway.log", gateway)
                served = asyncio.run(gateway_phases(engine.url, url.removesuffix("/v1"),
                                                    iter(texts[2 * args.prompts * args.rounds:]), args))
            finally:
                gateway.terminate()
                gateway.wait(timeout=30)
    report_gateway(served, args)


# eval throughput -------------------------------------------------------------------------------------
def eval_rounds(local, remote, texts, args, tmp: Path) -> dict:
    from refusal_edge.evaluate.data import Example
    from refusal_edge.evaluate.runner import score_examples
    from refusal_edge.evaluate.store import ScoreStore

    batches = iter([texts[i:i + args.prompts] for i in range(0, len(texts), args.prompts)])
    seconds = {"in-process": [], "llama-server": []}
    for _ in range(args.rounds):
        for side, model in (("in-process", local), ("llama-server", remote)):
            examples = [Example(t, i % 2 == 0, None, None, "bench", i) for i, t in enumerate(next(batches))]
            store = tmp / f"{side}.jsonl"
            store.unlink(missing_ok=True)
            t0 = time.perf_counter()
            with ScoreStore(store, "bench") as scores:
                run = score_examples(examples, scores, lambda: model, system=SYSTEM, progress=False)
            seconds[side].append(time.perf_counter() - t0)
            assert run.scored == args.prompts
    return seconds


# gateway overhead ------------------------------------------------------------------------------------
def start_gateway(model: Path, engine_url: str, args, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "refusal_edge.cli", "serve", str(model), "--engine", engine_url, "--port", "0",
               "--parallel", str(args.concurrency), "--rule", "binary", "--threshold", "1.0"]
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


async def gateway_phases(engine_url: str, gateway_url: str, texts, args) -> dict:
    targets = {"engine": engine_url, "gateway": gateway_url}
    # Idle connections expire before the servers' 5 s keep-alive closes them under us.
    async with httpx.AsyncClient(timeout=300, trust_env=False, limits=httpx.Limits(keepalive_expiry=2.0)) as http:
        for target in targets.values():  # warm-up: connections, the system prompt's cache
            await asyncio.gather(*(one(http, target, next(texts), args) for _ in range(args.concurrency)))
        latency = await alternate(http, targets, texts, args, clients=1)
        throughput = await alternate(http, targets, texts, args, clients=args.concurrency)
    return {"latency": latency, "throughput": throughput}


async def alternate(http, targets: dict, texts, args, clients: int, blocks: int = 4) -> dict:
    rows = {side: [] for side in targets}
    seconds = {side: 0.0 for side in targets}
    per_block = max(1, args.requests // blocks)
    for block in range(blocks):
        for side, url in targets.items():
            todo = [next(texts) for _ in range(per_block)]
            t0 = time.perf_counter()

            async def client():
                while todo:
                    rows[side].append(await one(http, url, todo.pop(), args))

            await asyncio.gather(*(client() for _ in range(clients)))
            seconds[side] += time.perf_counter() - t0
    return {side: (rows[side], seconds[side]) for side in targets}


async def one(http, base: str, text: str, args) -> dict:
    body = {"model": "m", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            "temperature": 0,
            "max_tokens": args.max_tokens, "stream": True}
    t0 = time.perf_counter()
    first = None
    try:
        response = await http.send(http.build_request("POST", base + "/v1/chat/completions", json=body), stream=True)
    except httpx.RemoteProtocolError:  # a kept-alive connection the server closed just then: never read, send again
        RESENT[base] = RESENT.get(base, 0) + 1
        response = await http.send(http.build_request("POST", base + "/v1/chat/completions", json=body), stream=True)
    try:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                first = time.perf_counter()
    finally:
        await response.aclose()
    end = time.perf_counter()
    return {"ttft": (first or end) - t0, "latency": end - t0}


def report_eval(eval_seconds: dict, args) -> None:
    best = {side: min(s) for side, s in eval_seconds.items()}
    print(f"\neval: {args.prompts} prompts (shared system prompt), best of {args.rounds} alternating rounds")
    for side, s in best.items():
        rounds = ", ".join(f"{x:.2f}" for x in eval_seconds[side])
        print(f"  {side:<13} {args.prompts / s:7.1f} prompts/s  ({rounds} s)")
    print(f"  llama-server / in-process: x{best['in-process'] / best['llama-server']:.2f} prompts/s "
          f"(--concurrency {args.slots})", flush=True)


def report_gateway(served: dict, args) -> None:
    print(f"\ngateway: streaming, temperature 0, max_tokens {args.max_tokens}; TTFT with 1 client, requests/s with "
          f"{args.concurrency}")
    ttft, rps = {}, {}
    for side in ("engine", "gateway"):
        single, _ = served["latency"][side]
        loaded, seconds = served["throughput"][side]
        times = sorted(r["ttft"] * 1e3 for r in single)
        ttft[side], rps[side] = statistics.median(times), len(loaded) / seconds
        print(f"  {side:<8} TTFT p50 {ttft[side]:7.1f} ms  p90 {times[int(0.9 * (len(times) - 1))]:7.1f} ms  "
              f"{rps[side]:6.2f} req/s")
    if RESENT:
        print(f"  requests sent again after a dropped keep-alive connection: {RESENT}")
    print(f"  gateway / engine: TTFT p50 x{ttft['gateway'] / ttft['engine']:.2f} "
          f"(+{ttft['gateway'] - ttft['engine']:.1f} ms), requests/s x{rps['gateway'] / rps['engine']:.2f}")


if __name__ == "__main__":
    main()
