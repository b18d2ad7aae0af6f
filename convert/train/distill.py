"""The base model's own answers to benign prompts that came without one (self-distillation: the trained model
keeps its voice). Greedy, computed once and cached as JSONL keyed by the base model's identity and the prompt."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import torch

from .model import Encoder


def cache_key(base_id: str, prompt: str, max_tokens: int) -> str:
    return hashlib.sha256(f"{base_id}\x00{max_tokens}\x00{prompt}".encode()).hexdigest()


def read_cache(path: Path) -> dict[str, str]:
    found = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                found[row["key"]] = row["answer"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by an interrupted run: that answer is simply computed again
    return found


def distill(model, tok, prompts: Sequence[str], *, base_id: str, cache: Path, max_tokens: int, encoder: Encoder,
            batch_size: int = 8, progress: bool = True) -> dict[str, str]:
    """prompt -> the base model's greedy answer (at most ``max_tokens`` tokens), cached."""
    stored = read_cache(cache)
    todo = list(dict.fromkeys(p for p in prompts if cache_key(base_id, p, max_tokens) not in stored))
    encoded = {p: encoder.prompt(p) for p in todo}
    todo.sort(key=lambda p: len(encoded[p]))  # similar lengths batched together: little padding
    if todo:
        from refusal_edge.progress import Progress

        cache.parent.mkdir(parents=True, exist_ok=True)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        model.eval()
        bar = Progress("distilling base answers", len(todo), unit="prompts", enabled=progress)
        with open(cache, "a", encoding="utf-8") as fh, torch.no_grad():
            for k in range(0, len(todo), batch_size):
                chunk = todo[k:k + batch_size]
                batch_ids = [encoded[p] for p in chunk]
                width = max(map(len, batch_ids))
                # left padding: every prompt ends where generation starts
                ids = torch.tensor([[pad] * (width - len(e)) + e for e in batch_ids])
                mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in batch_ids])
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens, do_sample=False,
                                     pad_token_id=pad, eos_token_id=tok.eos_token_id)
                for prompt, row in zip(chunk, out[:, width:].tolist()):
                    if tok.eos_token_id in row:
                        row = row[: row.index(tok.eos_token_id)]
                    answer = tok.decode(row, skip_special_tokens=True).strip()
                    key = cache_key(base_id, prompt, max_tokens)
                    stored[key] = answer
                    fh.write(json.dumps({"key": key, "answer": answer}, ensure_ascii=False) + "\n")
                fh.flush()
                bar.update(len(chunk))
        bar.finish()
    return {p: stored[cache_key(base_id, p, max_tokens)] for p in prompts}
