"""The base GGUF's own greedy answers, as llama.cpp gives them to users: measure_default.py compares the
fine-tuned model's perplexity on them with the base model's. (Training distils with `train`'s batched decoding,
convert/train/distill.py.) Cached on disk."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from refusal_edge.engines.llama.vocab import load_llama

from ..chat_tokenizer import ChatTokenizer


def distill(base: Path, prompts: Sequence[str], *, max_tokens: int, threads: int, cache: Path | None = None
            ) -> list[tuple[str, str]]:
    """(prompt, base answer) pairs. An answer that reached end-of-turn keeps no marker; a truncated one is
    simply cut, and the trainer sees it as truncated because it is exactly ``max_tokens`` long."""
    done: dict[str, str] = {}
    key = f"{base.name}|{max_tokens}"
    if cache is not None and cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("key") == key:
                done[row["prompt"]] = row["answer"]
    todo = [p for p in dict.fromkeys(prompts) if p not in done]
    if todo:
        tok = ChatTokenizer(base)
        llm = load_llama(base, n_ctx=512, n_threads=threads, n_threads_batch=threads)
        t0 = time.perf_counter()
        fresh = []
        for i, prompt in enumerate(todo, 1):
            answer = []
            for token in llm.generate(tok.prompt(prompt), top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
                if token == tok.eos or len(answer) >= max_tokens:
                    break
                answer.append(token)
            done[prompt] = tok.decode(answer)
            fresh.append({"key": key, "prompt": prompt, "answer": done[prompt]})
            if i % 50 == 0 or i == len(todo):
                print(f"  distilled {i}/{len(todo)} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        llm.close()
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            old = cache.read_text(encoding="utf-8") if cache.is_file() else ""
            tmp.write_text(old + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh), encoding="utf-8")
            os.replace(tmp, cache)
    return [(p, done[p]) for p in prompts]
