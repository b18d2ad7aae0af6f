"""Moderation throughput (inputs/s) of `refusal-edge serve` vs chat completions with max_tokens=1, and the
size of the dials page.

One server process, one run, modes interleaved in alternating blocks over the same prompts:

* chat:        POST /v1/chat/completions, one input per request, max_tokens=1, temperature 0 (the cheapest way an
               OpenAI client can get a decision out of a chat endpoint: prefill, decision, one decode step);
* moderation:  POST /v1/moderations with one input per call (decision only: prefill and decision, no decoding);
* batched:     POST /v1/moderations with --batch inputs per call (one HTTP round trip for many decisions).

Each mode keeps --concurrency requests in flight. Page size: the bytes of / and the files it loads, as served
(no compression), with their gzip size for reference.

    python benchmarks/moderation_bench.py                          # a tiny random model built on the fly
    python benchmarks/moderation_bench.py --model default          # the embedded SmolLM2-135M refusal model
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_bench import build_tiny_model, start_server, wait_for_url  # noqa: E402

# Ordinary requests of different lengths, written for this benchmark (no evaluation data).
PROMPTS = [
    "hello", "what is the capital of france?", "write a haiku about autumn leaves",
    "how do I reset my router without losing the settings?", "tell me a story about the sea",
    "can you help me write an email to my landlord about a broken heater?", "what are you?",
    "explain how vaccines train the immune system, in two sentences", "translate 'good morning' into german",
    "what will the weather be like next year?", "summarise the plot of a novel you like",
    "how many legs does a spider have?", "give me three tips for a job interview", "do you have feelings?",
    "what is 17 times 23?", "recommend a board game for four players",
]


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = resolve_model(args.model, Path(tmp))
        log = Path(tmp) / "serve.log"
        server = start_server(model, args, log)
        try:
            url = wait_for_url(log, server)
            results, page = asyncio.run(run(url.removesuffix("/v1"), args))
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(results, page, args, model)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a refusal-token GGUF, or 'default' [default: a tiny random-weight model]")
    p.add_argument("--inputs", type=int, default=256, help="inputs per mode")
    p.add_argument("--batch", type=int, default=16, help="inputs per call in the batched moderation mode")
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight at once")
    p.add_argument("--blocks", type=int, default=4, help="alternating blocks per mode (evens out drift)")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads of the server")
    p.add_argument("--parallel", type=int, default=1, help="server slots")
    p.add_argument("--ctx", type=int, default=1024)
    return p.parse_args()


def resolve_model(model: str | None, tmp: Path) -> str:
    if model == "default":
        from refusal_edge.default_model import ensure_default_model

        return str(ensure_default_model(progress=False))
    return model or build_tiny_model(tmp / "tiny.gguf")


async def run(base: str, args) -> tuple[dict, dict]:
    async with httpx.AsyncClient(base_url=base, timeout=300, trust_env=False,
                                 limits=httpx.Limits(max_connections=args.concurrency)) as http:
        page = {"/": (await http.get("/")).content}
        for path in re.findall(r'(?:src|href)="(/[^"]+)"', page["/"].decode()):  # what a browser loads next
            page[path] = (await http.get(path)).content
        modes = {"chat": (chat, 1), "moderation": (moderate, 1), "batched": (moderate, args.batch)}
        for call, batch in modes.values():  # warm-up: connections open, the template prefix cached
            await call(http, PROMPTS[:batch])
        seconds = {mode: 0.0 for mode in modes}
        done = {mode: 0 for mode in modes}
        per_block = max(1, args.inputs // args.blocks)
        for block in range(args.blocks):
            for mode, (call, batch) in modes.items():
                inputs = [PROMPTS[(block * per_block + i) % len(PROMPTS)] for i in range(per_block)]
                calls = [inputs[i:i + batch] for i in range(0, len(inputs), batch)]
                t0 = time.perf_counter()
                await in_flight(http, call, calls, args.concurrency)
                seconds[mode] += time.perf_counter() - t0
                done[mode] += len(inputs)
        return {mode: (done[mode], seconds[mode], modes[mode][1]) for mode in modes}, page


async def in_flight(http, call, calls: list[list[str]], concurrency: int) -> None:
    todo = iter(calls)

    async def worker() -> None:
        for inputs in todo:
            await call(http, inputs)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def chat(http, inputs: list[str]) -> None:
    (prompt,) = inputs
    response = await http.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": prompt}], "max_tokens": 1, "temperature": 0})
    response.raise_for_status()
    assert "refusal" in response.json()


async def moderate(http, inputs: list[str]) -> None:
    response = await http.post("/v1/moderations", json={"input": inputs})
    response.raise_for_status()
    assert len(response.json()["results"]) == len(inputs)


def report(results: dict, page: dict, args, model: str) -> None:
    print(f"model {model}; {args.inputs} inputs per mode in {args.blocks} interleaved blocks, {args.concurrency} "
          f"request(s) in flight, {args.parallel} slot(s), {args.threads} thread(s)")
    print(f"{'mode':<12}{'inputs/call':>12}{'inputs/s':>11}{'vs chat':>9}{'ms/input':>10}")
    rate = {mode: n / seconds for mode, (n, seconds, _) in results.items()}
    for mode, (n, seconds, batch) in results.items():
        print(f"{mode:<12}{batch:>12}{rate[mode]:>11.1f}{rate[mode] / rate['chat']:>8.2f}x{1e3 * seconds / n:>10.2f}")
    sizes = {path: len(body) for path, body in page.items()}
    total = sum(sizes.values())
    zipped = sum(len(gzip.compress(body)) for body in page.values())
    listing = ", ".join(f"{path} {size}" for path, size in sizes.items())
    print(f"page load: {total} bytes in {len(sizes)} requests ({listing}); {zipped} bytes gzipped")
    scripts = re.findall(rb'(?:src|href)="(https?:)?//', page["/"])
    print(f"third-party URLs in the page: {len(scripts)}; median input length {statistics.median(map(len, PROMPTS))} chars")


if __name__ == "__main__":
    main()
