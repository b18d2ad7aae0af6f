"""Requests/s and time-to-first-token of `refusal-edge serve`: decision-bearing requests vs plain generation.

Both kinds go through the same server process, in alternating blocks, as streaming requests at temperature 0;
time-to-first-token (first content delta; "1st chunk" is when the decision arrives) is measured with one client
at a time, requests/s with --concurrency:

* decision: no ``refusal`` object, so the server's policy (per-category thresholds) forces the first token;
* baseline: ``"refusal": {"rule": "natural"}``: the model picks its own first token and nothing is forced.
  The runtime still computes the full-vocabulary refusal probabilities for the baseline (they are reported
  in every response), so the ratio measures forcing the first token, and ``decision_ms`` (timed inside the
  server, in every response) shows what the probability computation itself costs. A forced control token
  produces no text, so the first visible token of a decision-bearing answer comes one decode step later.

    python benchmarks/server_bench.py                       # a tiny random model built on the fly
    python benchmarks/server_bench.py --model model.gguf --requests 100 --concurrency 4 --threads 2

The server runs in its own process so that the client's event loop does not share its GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

# Prompts for which the tiny model runs to max_tokens under both modes, so both generate equal token counts.
PROMPTS = ["tell me a story", "story about the sea", "can you help me", "you today? i am", "over the lazy dog."]
MODES = {"decision": None, "baseline": {"rule": "natural"}}


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_tiny_model(Path(tmp) / "tiny.gguf")
        log = Path(tmp) / "serve.log"
        server = start_server(model, args, log)
        try:
            url = wait_for_url(log, server)
            results = asyncio.run(run(url, args))
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(results, args, model)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a refusal-token GGUF [default: a tiny random-weight model built here]")
    p.add_argument("--requests", type=int, default=60, help="requests per mode")
    p.add_argument("--concurrency", type=int, default=4, help="clients in flight at once")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--blocks", type=int, default=4, help="alternating blocks per mode (evens out drift)")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads of the server")
    p.add_argument("--parallel", type=int, default=1, help="server slots")
    p.add_argument("--ctx", type=int, default=1024)
    return p.parse_args()


def build_tiny_model(path: Path) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tiny_model import build_tiny_gguf

    return str(build_tiny_gguf(path))


def start_server(model: str, args, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "refusal_edge.cli", "serve", model, "--port", "0", "--threads",
               str(args.threads), "--parallel", str(args.parallel), "--ctx", str(args.ctx),
               "--max-queue", str(max(64, args.concurrency * 2))]
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def wait_for_url(log: Path, server: subprocess.Popen, timeout: float = 300.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        text = log.read_text()
        found = re.search(r"at (http://[\d.]+:\d+/v1)", text)
        if found and "Application startup complete" in text:
            return found.group(1)
        time.sleep(0.05)
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


async def run(url: str, args) -> dict:
    """{phase: {mode: (rows, seconds)}} for a one-client latency phase and a --concurrency throughput phase."""
    async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False,
                                 limits=httpx.Limits(max_connections=args.concurrency)) as http:
        for mode in MODES:  # warm-up: load pages, fill caches, open connections
            await asyncio.gather(*(one(http, mode, i, args) for i in range(args.concurrency)))
        return {"latency": await alternate(http, args, clients=1),
                "throughput": await alternate(http, args, clients=args.concurrency)}


async def alternate(http, args, clients: int) -> dict:
    rows = {mode: [] for mode in MODES}
    seconds = {mode: 0.0 for mode in MODES}
    per_block = max(1, args.requests // args.blocks)
    for _ in range(args.blocks):
        for mode in MODES:
            t0 = time.perf_counter()
            rows[mode] += await block_of(http, mode, per_block, args, clients)
            seconds[mode] += time.perf_counter() - t0
    return {mode: (rows[mode], seconds[mode]) for mode in MODES}


async def block_of(http, mode: str, n: int, args, clients: int) -> list[dict]:
    todo = iter(range(n))
    out: list[dict] = []

    async def client() -> None:
        for i in todo:
            out.append(await one(http, mode, i, args))

    await asyncio.gather(*(client() for _ in range(clients)))
    return out


async def one(http, mode: str, i: int, args) -> dict:
    body = {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "temperature": 0,
            "max_tokens": args.max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    if MODES[mode] is not None:
        body["refusal"] = MODES[mode]
    t0 = time.perf_counter()
    first_chunk = first_token = None
    decision = usage = None
    async with http.stream("POST", "/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            now = time.perf_counter()
            if first_chunk is None:
                first_chunk, decision = now, chunk["refusal"]
            if first_token is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first_token = now
            usage = chunk.get("usage") or usage
    end = time.perf_counter()
    return {"ttfc": first_chunk - t0, "ttft": (first_token or end) - t0, "latency": end - t0,
            "tokens": usage["completion_tokens"], "decision_ms": decision["decision_ms"],
            "prefill_ms": decision["prefill_ms"], "forced": decision["forced"]}


def report(results: dict, args, model: str) -> None:
    print(f"model {model}; {args.requests} streaming requests per mode and phase, {args.parallel} slot(s), "
          f"{args.threads} thread(s), max_tokens {args.max_tokens}, temperature 0")
    print(f"{'mode':<10}{'1st chunk':>10}{'TTFT p50':>10}{'TTFT p90':>10}{'decision p50':>14}{'prefill p50':>13}"
          f"{f'req/s @{args.concurrency}':>11}{'tok/s':>8}{'tokens':>8}{'forced':>8}")
    ttft, rps, tokens = {}, {}, {}
    for mode in MODES:
        single, _ = results["latency"][mode]
        loaded, seconds = results["throughput"][mode]
        times = sorted(r["ttft"] * 1e3 for r in single)
        ttft[mode], rps[mode] = statistics.median(times), len(loaded) / seconds
        tokens[mode] = statistics.mean(r["tokens"] for r in loaded)
        chunk = statistics.median(r["ttfc"] for r in single) * 1e3
        print(f"{mode:<10}{chunk:>8.2f}ms{ttft[mode]:>8.2f}ms{times[int(0.9 * (len(times) - 1))]:>8.2f}ms"
              f"{statistics.median(r['decision_ms'] for r in single):>12.3f}ms"
              f"{statistics.median(r['prefill_ms'] for r in single):>11.3f}ms"
              f"{rps[mode]:>11.1f}{sum(r['tokens'] for r in loaded) / seconds:>8.0f}{tokens[mode]:>8.1f}"
              f"{sum(r['forced'] for r in loaded):>8}")
    print(f"decision/baseline: requests/s x{rps['decision'] / rps['baseline']:.3f}, "
          f"TTFT p50 x{ttft['decision'] / ttft['baseline']:.3f}")
    if abs(tokens["decision"] - tokens["baseline"]) > 0.01 * tokens["baseline"]:
        print("note: the modes generated different token counts per request; compare tok/s, not req/s")


if __name__ == "__main__":
    main()
