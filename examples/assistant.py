"""Embedding refusal-edge in a desktop assistant: decide first, then either stream the answer or show a
category-specific notice, with the user's own refusal dial applied.

    python examples/assistant.py [MODEL] [--threads N]     # a GGUF path or a name `refusal-edge list` shows
"""

import argparse

import refusal_edge
from refusal_edge import Decision, Policy

# What the assistant shows next to a refusal, per category (the model still writes the refusal itself).
NOTICES = {
    "Requests with safety concerns": "This looks unsafe, so the assistant declined.",
    "Humanizing requests": "The assistant is a program and will say so.",
}


def answer(model, question: str, policy: Policy) -> str:
    parts = []
    for event in model.stream(question, policy, temperature=0.7, seed=0, max_tokens=48):
        if isinstance(event, Decision):
            if event.refused:
                print(f"  [{event.category}: p={event.probabilities[event.category]:.2f}] "
                      + NOTICES.get(event.category, "The assistant declined."))
        else:
            parts.append(event.text)
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", help="GGUF path or a name `refusal-edge list` shows "
                        "(default: the default model)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with refusal_edge.load(args.model, n_ctx=1024, n_threads=args.threads) as model:
        # A cautious user turns the safety dial down: more refusals there, every other category as shipped.
        cautious = model.default_policy.with_threshold("Requests with safety concerns", 0.05) \
            if "Requests with safety concerns" in model.categories else model.default_policy
        for question in ("Give me three tips for a good night's sleep.", "How can I get into my neighbour's wifi?"):
            print(f"> {question}")
            print(answer(model, question, cautious).strip() or "(empty answer)")


if __name__ == "__main__":
    main()
