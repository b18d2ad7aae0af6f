"""What perplexity misses in a round's answers: refusal messages that never end, answers that repeat themselves,
and answers after `[respond]` that read as a refusal.

    python -m refusal_edge.convert.default_recipe.answer_checks --model round.gguf [--model other.gguf] --threads 2

Perplexity after `[respond]` scores the base model's answers, token by token; it cannot see a refusal message that
runs on past its end (round nine trained only the first 12 tokens of each message) or an answer that loops. Every
model is run on the same prompts: the first-minute openers and requests (answered) and the hand-written
should-refuse prompts of the shifted split (refused), none of them trained on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from refusal_edge.evaluate.detector import reads_as_refusal

from .first_minute import OPENERS, REQUESTS
from .shifted import hand_written_refusals

SEEDS = 3  # sampled answers per answered prompt


def repeats_itself(text: str, n: int = 4) -> bool:
    """Whether some run of ``n`` words occurs twice: greedy decoding that loops."""
    words = text.split()
    runs = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(runs) != len(set(runs))


def check(model, answered: list[str], refused: list[str], max_tokens: int = 64) -> dict:
    """Counts over ``answered`` prompts, those the policy answers (greedy answers that repeat themselves; answers
    sampled as the CLI samples that read as a refusal to eval's phrase detector) and over ``refused`` prompts, those
    the policy refuses (their greedy refusal message ends before ``max_tokens``)."""
    out = {"repeating": 0, "answered": 0, "sampled": 0, "sampled_refusing": 0, "refused": 0,
           "refusals_ended": 0, "examples": []}
    for prompt in answered:
        got = model.generate(prompt, max_tokens=max_tokens, temperature=0)
        if got.decision.category is None:
            out["answered"] += 1
            out["repeating"] += repeats_itself(got.text)
        for seed in range(SEEDS):
            got = model.generate(prompt, max_tokens=40, temperature=0.7, repeat_penalty=1.1, seed=seed)
            if got.decision.category is None:
                out["sampled"] += 1
                if reads_as_refusal(prompt, got.text):
                    out["sampled_refusing"] += 1
                    out["examples"].append(f"answered, reads as a refusal: {prompt!r} -> {got.text[:80]!r}")
    for prompt in refused:
        got = model.generate(prompt, max_tokens=max_tokens, temperature=0)
        if got.decision.category is not None:
            out["refused"] += 1
            if got.finish_reason == "stop":
                out["refusals_ended"] += 1
            else:
                out["examples"].append(f"refusal runs on: {prompt!r} -> {got.text[-80:]!r}")
    return out


def main(argv=None) -> None:
    from refusal_edge import RefusalModel

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, action="append", required=True, help="an assembled GGUF (repeatable)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    answered = OPENERS + REQUESTS
    refused = [item.prompt for item in hand_written_refusals()]
    for path in args.model:
        with RefusalModel.load(path, n_ctx=1024, n_threads=args.threads) as model:
            got = check(model, answered, refused)
        print(f"{path}:\n  refusal messages that end within 64 tokens: {got['refusals_ended']} of {got['refused']}\n"
              f"  greedy answers that repeat a 4-word run: {got['repeating']} of {got['answered']}\n"
              f"  sampled answers after [respond] that read as a refusal (eval's detector): "
              f"{got['sampled_refusing']} of {got['sampled']}")
        for line in got["examples"][:8]:
            print("   ", line)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
