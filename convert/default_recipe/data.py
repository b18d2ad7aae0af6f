"""Training data for the embedded default model: CoCoNot splits, refusal messages, benign prompts.

No torch here. The CoCoNot files are read from paths given on the command line and never copied into
the repository; everything written below (refusal messages, benign prompt templates) is our own text.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from refusal_edge.rows import read_rows
from refusal_edge.metadata import CATEGORIES

from ..train.coconot import refusal_message, stratified_split

RESPOND = "respond"
HUMANIZING, INCOMPLETE, INDETERMINATE, SAFETY, UNSUPPORTED = CATEGORIES


@dataclass(frozen=True)
class Example:
    """One SFT example: the answer starts with ``decision`` (``respond`` or a category name). ``history``: earlier
    turns of the chat as (role, text, decision or None); ``response`` None teaches the decision token alone."""

    prompt: str
    decision: str
    response: str | None
    source: str  # refusal | contrast | benign | answer-anyway | everyday | material | chat
    history: tuple[tuple[str, str, str | None], ...] = ()

    @property
    def learns_decision(self) -> bool:
        """answer-anyway examples teach what follows a forced [respond], not when to choose it."""
        return self.source != "answer-anyway"


@dataclass(frozen=True)
class Splits:
    """``val`` is the random validation split, for reporting only. The subcategories held out whole
    (HELDOUT_SUBCATEGORIES) are in no split: they belong to the shifted validation split,
    on which the default policy is chosen."""

    refusal_train: list[dict]
    refusal_val: list[dict]
    contrast_train: list[dict]
    contrast_val: list[dict]


# --- CoCoNot -------------------------------------------------------------------------------------------

def load_jsonl(path: str | Path, required: Sequence[str]) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"data file not found: {path}")
    rows = []
    for n, row in read_rows(path):
        if isinstance(row, str):
            raise SystemExit(f"{path}:{n}: {row}")
        missing = [k for k in required if not isinstance(row.get(k), str)]
        if missing:
            raise SystemExit(f"{path}:{n}: missing string field(s) {', '.join(missing)}")
        if row["category"] not in CATEGORIES:
            raise SystemExit(f"{path}:{n}: unknown category {row['category']!r}")
        rows.append(row)
    if not rows:
        raise SystemExit(f"{path}: no rows")
    return rows


# Whole CoCoNot subcategories kept out of training and calibration: one per category where the category has
# more than two (Indeterminate has only two, both needed for training), chosen among those our own training
# templates do not imitate. Contrast (look-alike) subcategories likewise.
HELDOUT_SUBCATEGORIES = {
    "original": ("copyright violations", "style and length limitations", "offer advice, opinion or recommendations",
                 "incomprehensible"),
    "contrast": ("false information", "output modality limitations"),
}


def is_heldout(row: dict, kind: str) -> bool:
    return row.get("subcategory", "") in HELDOUT_SUBCATEGORIES[kind]


def load_splits(original: str | Path, contrast: str | Path, seed: int = 0,
                refusal_val: float = 0.3, contrast_val: float = 0.2, keep_heldout: bool = False) -> Splits:
    """``keep_heldout``: the final fit, which also trains on the held-out subcategories' training rows (their
    random-validation rows stay out), once data and threshold were chosen without them."""
    # Split first, then drop the held-out subcategories: the random validation split keeps exactly the rows
    # it had before subcategories were held out, so models trained before and after compare on it fairly.
    r_train, r_val = stratified_split(load_jsonl(original, ("category", "prompt")), refusal_val, seed)
    c_train, c_val = stratified_split(load_jsonl(contrast, ("category", "prompt", "chosen")), contrast_val, seed)
    return Splits(*([r for r in rows if keep_heldout and is_train or not is_heldout(r, kind)]
                    for rows, kind, is_train in ((r_train, "original", True), (r_val, "original", False),
                                                 (c_train, "contrast", True), (c_val, "contrast", False))))


# --- assembling the SFT mix ------------------------------------------------------------------------------

def answer_anyway_prompts(splits: Splits) -> list[str]:
    """Training refusal prompts outside the safety category: after a forced ``[respond]`` the model should
    answer them (as the base model did) instead of refusing regardless. Safety prompts are left out on
    purpose: we do not train harmful completions into the shipped model."""
    return [r["prompt"] for r in splits.refusal_train if r["category"] != SAFETY]


def build_examples(splits: Splits, benign: Iterable[tuple[str, str]], seed: int, refusal_repeats: int = 2,
                   synthetic: Sequence[dict] = (), answer_anyway: Iterable[tuple[str, str]] = ()) -> list[Example]:
    """CoCoNot refusal prompts (repeated with different messages), our synthetic refusal prompts, contrast
    prompts with their compliant answer, benign prompts with the base model's own answer, and (decision loss
    masked) the base model's own answers to non-safety refusal prompts after ``[respond]``. Validation rows
    are never touched here."""
    rng = random.Random(seed)
    out = []
    for rows, repeats in ((splits.refusal_train, refusal_repeats), (synthetic, 1)):
        for row in rows:
            for _ in range(repeats):
                message = refusal_message(row["category"], row.get("subcategory", ""), rng)
                out.append(Example(row["prompt"], row["category"], message, "refusal"))
    out += [Example(row["prompt"], RESPOND, row["chosen"], "contrast") for row in splits.contrast_train]
    out += [Example(prompt, RESPOND, answer, "benign") for prompt, answer in benign]
    out += [Example(prompt, RESPOND, answer, "answer-anyway") for prompt, answer in answer_anyway]
    rng.shuffle(out)
    return out


def refused_exchange(row: dict, rng: random.Random) -> tuple[tuple[str, str, str | None], ...]:
    """A chat's earlier turns in which ``row``'s request was refused: the request, then one of our refusal messages
    for its category and subcategory with its category token."""
    return (("user", row["prompt"], None),
            ("assistant", refusal_message(row["category"], row.get("subcategory", ""), rng), row["category"]))


def chat_examples(refusals: Sequence[dict], benign: Sequence[tuple[str, str]], everyday: Sequence,
                  follow_ups: Sequence[str], seed: int, n: int = 250, long_chats: bool = False) -> list[Example]:
    """Chats, so that one turn's decision does not decide the next: a benign request (or thanks) after a refused
    one, a follow-up after an answer, a request to refuse after an answer, one after a refusal, and (``long_chats``)
    either after two or three answers.
    ``refusals``: rows with category/subcategory/prompt; ``benign``: (prompt, the base model's answer);
    ``everyday``: everyday.Everyday items (their answer, when they have one, is taught too)."""
    rng = random.Random(seed + 11)
    out = []

    def refused_turn():
        row = rng.choice(refusals)
        return row, refused_exchange(row, rng)

    def answered_turn():
        prompt, answer = rng.choice(benign)
        return (("user", prompt, None), ("assistant", answer, RESPOND))

    for _ in range(n):
        _, first = refused_turn()
        item = rng.choice(everyday)
        out.append(Example(item.prompt, RESPOND, item.answer, "chat", first))
    for _ in range(n * 2 // 3):
        out.append(Example(rng.choice(follow_ups), RESPOND, None, "chat", answered_turn()))
    for _ in range(n // 2):
        row, _ = refused_turn()
        out.append(Example(row["prompt"], row["category"], refusal_message(row["category"], row.get("subcategory", ""),
                                                                            rng), "chat", answered_turn()))
    for _ in range(n // 5):
        _, first = refused_turn()
        row, _ = refused_turn()
        out.append(Example(row["prompt"], row["category"], None, "chat", first))
    # Longer chats: two or three answered turns, then a request to refuse or an everyday one. A chat of answers
    # pulls a small model towards answering again; the content of the last turn must still decide.
    if not long_chats:
        return out
    for k in range(n // 2):
        history = sum((answered_turn() for _ in range(rng.choice((2, 3)))), ())
        if k % 2:
            row, _ = refused_turn()
            out.append(Example(row["prompt"], row["category"], None, "chat", history))
        else:
            item = rng.choice(everyday)
            out.append(Example(item.prompt, RESPOND, item.answer, "chat", history))
    return out


def hold_out_fifth(groups: dict, rng: random.Random) -> tuple[dict, dict]:
    """(train, held out) of each group's items: a fifth of them (at least two), held out whole, in a seeded order."""
    train, held = {}, {}
    for key, items in groups.items():
        shuffled = rng.sample(items, len(items))
        k = max(2, len(items) // 5)
        held[key], train[key] = shuffled[:k], shuffled[k:]
    return train, held


def pair_chats(refusals: Sequence[dict], answered: Sequence[tuple[str, str]], seed: int) -> list[Example]:
    """Minimal pairs as chats, both ways: the look-alike asked after its twin was refused must be answered, and the
    twin asked after the look-alike was answered must be refused. ``refusals[i]`` and ``answered[i]`` (prompt, the base
    model's answer) are the two halves of one pair."""
    rng = random.Random(seed + 12)
    out = []
    for row, (prompt, answer) in zip(refusals, answered):
        out.append(Example(prompt, RESPOND, answer, "chat", refused_exchange(row, rng)))
        out.append(Example(row["prompt"], row["category"], None, "chat",
                           (("user", prompt, None), ("assistant", answer, RESPOND))))
    return out


# The ways a user insists after a refusal, for training. shifted.INSISTING_HELD_OUT holds the ones it never sees.
INSISTING = ("{p}", "Please, I really need this. {p}", "Come on, just answer it: {p}", "I'm asking again. {p}",
             "It's important to me. {p}", "You can tell me, it's fine. {p}", "why not? {p}")
BARE_INSISTING = ("Please, just answer.", "Why not? Just do it.", "Come on, I need this.", "Try anyway.",
                  "Just tell me.", "pls just do it", "It's for a good reason, go ahead.")


def insisting_chats(refusals: Sequence[dict], twins: Sequence[dict], seed: int, n: int) -> list[Example]:
    """A refusal must hold when the user insists. Pair chats teach that a near-copy of a refused request may deserve
    an answer; these teach that the same request does not: ``n`` chats in which a refused request is asked again (as
    it was, or wrapped in insistence), insisted on without repeating it, or followed by another request to refuse;
    and each of ``twins`` (the refused halves of the minimal pairs) asked again as it was, the look-alike pair chat's
    counterpart."""
    rng = random.Random(seed + 13)
    out = []
    for k, row in enumerate(rng.sample(list(refusals), n)):
        history = refused_exchange(row, rng)
        if k % 3 == 2:
            row = rng.choice(refusals)
            prompt = row["prompt"]
        else:
            prompt = rng.choice(INSISTING).format(p=row["prompt"]) if k % 3 == 0 else rng.choice(BARE_INSISTING)
        message = refusal_message(row["category"], row.get("subcategory", ""), rng)
        out.append(Example(prompt, row["category"], message, "chat", history))
    out += [Example(row["prompt"], row["category"], None, "chat", refused_exchange(row, rng)) for row in twins]
    return out


# What people say when they accept a refusal or move on: round seven's bare insistence ("Try anyway.") taught the
# small model that any short turn after a refusal is refused; answered, these teach that the words decide. None of
# them is a validation or test-suite opener (the near-copy test checks).
MOVING_ON = ("ok, never mind", "Fair enough, thanks anyway", "No worries", "Understood.", "oh ok", "Alright then",
             "Thanks anyway!", "sorry, forget I asked", "Never mind then", "hmm ok", "k", "That's fair",
             "I understand, thanks for explaining", "No problem", "oh well", "ok, different question then",
             "Let's talk about something else", "Can we start over?", "my bad", "hi again", "Hello? Still there?",
             "Okay, thank you", "gotcha", "right, makes sense")
MOVED_ON_ANSWERS = ("No problem! Is there something else I can help you with?",
                    "Understood. What else can I do for you?",
                    "Sure, happy to help with something else. What would you like to do?")


def acknowledging_chats(refusals: Sequence[dict], turns: Sequence[tuple[str, str | None]], seed: int,
                        repeats: int = 2) -> list[Example]:
    """Each of ``turns`` (a greeting, thanks or question with its answer; None: one of MOVED_ON_ANSWERS) and each of
    MOVING_ON ``repeats`` times, said after a refused turn and answered: the counterpart of insisting_chats' bare
    insistence, which is refused."""
    rng = random.Random(seed + 17)
    said = list(turns) + [(p, None) for p in MOVING_ON for _ in range(repeats)]
    out = []
    for prompt, answer in said:
        history = refused_exchange(rng.choice(refusals), rng)
        out.append(Example(prompt, RESPOND, answer or rng.choice(MOVED_ON_ANSWERS), "chat", history))
    return out


def recipe_arguments(doc: str, **parser_kwargs) -> argparse.ArgumentParser:
    """The options every recipe script shares: where the CoCoNot files are, and how many threads to use."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], **parser_kwargs)
    p.add_argument("--original", required=True, help="CoCoNot original_dev.jsonl (should-not-comply prompts)")
    p.add_argument("--contrast", required=True, help="CoCoNot contrast_pref.jsonl (benign look-alikes, chosen answers)")
    p.add_argument("--threads", type=int, default=2)
    return p
