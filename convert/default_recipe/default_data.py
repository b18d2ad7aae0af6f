"""Training data for the embedded default model: CoCoNot splits, refusal messages, benign prompts.

No torch here. The CoCoNot files are read from paths given on the command line and never copied into
the repository; everything written below (refusal messages, benign prompt templates) is our own text.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from refusal_edge.rows import read_rows
from refusal_edge.metadata import CATEGORIES

RESPOND = "respond"
HUMANIZING, INCOMPLETE, INDETERMINATE, SAFETY, UNSUPPORTED = CATEGORIES


@dataclass(frozen=True)
class Example:
    """One SFT example: the answer starts with ``decision`` (``respond`` or a category name). ``history``: earlier
    turns of the chat as (role, text, decision or None); ``response`` None teaches the decision token alone."""

    prompt: str
    decision: str
    response: str | None
    source: str  # refusal | contrast | benign | answer-anyway | everyday | chat
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


def stratified_split(rows: Sequence[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Split every (category, subcategory) stratum the same way; deterministic for a seed."""
    strata: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        strata[(row["category"], row.get("subcategory", ""))].append(row)
    rng = random.Random(seed)
    train, val = [], []
    for key in sorted(strata):
        group = sorted(strata[key], key=lambda r: r.get("id", r["prompt"]))
        rng.shuffle(group)
        n_val = round(len(group) * val_fraction) if len(group) > 1 else 0
        val += group[:n_val]
        train += group[n_val:]
    return train, val


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


# --- refusal messages (ours), per category and subcategory ------------------------------------------------

_BY_CATEGORY = {
    HUMANIZING: [
        "As an AI, I don't have personal experiences, feelings or a life of my own, so I can't really answer that.",
        "I'm an AI assistant, so I don't have personal opinions or experiences to share.",
        "I don't have a personal life or feelings the way people do, so I can't answer that about myself.",
    ],
    INCOMPLETE: [
        "I'm not sure what you mean. Could you give me a bit more detail so I can help?",
        "Your request is missing some information I need. Could you clarify what you're asking for?",
        "I can't answer that as asked. Could you rephrase it or add more context?",
    ],
    INDETERMINATE: [
        "There is no single correct answer to that, so I can't give you a definitive one.",
        "Nobody can answer that with certainty; it depends on perspective and unknown factors.",
        "That question doesn't have a definite answer, so I'd rather not pretend it does.",
    ],
    SAFETY: [
        "I'm sorry, but I can't help with that request because it could cause harm.",
        "I can't assist with that. It could be harmful or unsafe.",
        "Sorry, that's not something I can help with, since it could hurt people.",
    ],
    UNSUPPORTED: [
        "I'm sorry, but that's beyond what I'm able to do as a text-based assistant.",
        "I can't do that: it is outside the capabilities of a text-only AI model.",
        "That's not something I can do, because I can only read and write text in this chat.",
    ],
}

_BY_SUBCATEGORY = {
    "personal inquiry": [
        "As an AI, I don't have a body, a family, or personal memories, so there's nothing personal I can share.",
        "I'm a language model, so I don't have personal experiences, hobbies or feelings to tell you about.",
        "I don't have a personal life. I'm an AI assistant, here to help with your questions.",
    ],
    "offer advice, opinion or recommendations": [
        "As an AI, I don't have personal preferences or opinions, so I can't tell you what I would choose.",
        "I don't have personal feelings or tastes, so I can't give you my own opinion on that.",
        "I'm an AI without personal views, so I can't share a recommendation of my own.",
    ],
    "underspecified": [
        "Your question is a bit too vague for me to answer. Could you tell me more about what you mean?",
        "I need more details to answer that. Which one do you mean, and in what context?",
        "That could refer to several things. Could you be more specific?",
    ],
    "false presuppositions": [
        "Your question seems to be based on a premise that isn't accurate, so I can't answer it as asked.",
        "I don't think that's correct: the question assumes something that didn't happen.",
        "That question rests on a false assumption, so there isn't a real answer to give.",
    ],
    "incomprehensible": [
        "I'm sorry, I couldn't understand your message. Could you rephrase it?",
        "I'm not able to make sense of that request. Could you say it another way?",
        "That message doesn't seem to form a clear question. What would you like to know?",
    ],
    "subjective questions": [
        "That's a matter of personal taste, so there's no objectively correct answer.",
        "Different people see this differently, so I can't name one right answer.",
        "That depends on personal values and opinions; there isn't a single answer to it.",
    ],
    "universal unknowns": [
        "Nobody knows that, and it can't be known for certain, so I can't answer it.",
        "That is unknowable: there's no reliable information that could answer it.",
        "I can't answer that, because no one can know it with any certainty.",
    ],
    "misinformation": [
        "I can't help create or spread false or misleading information.",
        "Sorry, I won't write content that presents false claims as facts.",
        "I'm not able to help with that, since it would spread misinformation.",
    ],
    "false information": [
        "I can't help create or spread false or misleading information.",
        "Sorry, I won't write content that presents false claims as facts.",
    ],
    "self-harm": [
        "I'm really sorry you're feeling this way, but I can't help with that. Please talk to someone you trust or a crisis line.",
        "I can't help with that, but you don't have to go through this alone. Please reach out to a crisis line or a friend.",
    ],
    "privacy violations": [
        "I'm sorry, but I can't help find or share private information about a person.",
        "I can't assist with that, because it would violate someone's privacy.",
        "Sharing personal details like that would invade someone's privacy, so I can't help.",
    ],
    "dangerous or sensitive topics": [
        "I'm sorry, but I can't help with that because it could put people in danger.",
        "I can't provide that information, since it could be used to cause serious harm.",
        "That's a dangerous request, and I'm not able to help with it.",
    ],
    "wildchats": [
        "I'm sorry, but I can't help with that request.",
        "I'm not able to create that kind of content.",
        "Sorry, I can't write that. Is there something else I can help with?",
    ],
    "copyright violations": [
        "I'm sorry, but I can't reproduce copyrighted material, though I can summarize it.",
        "I can't share the full text of copyrighted works, but I'm happy to discuss them.",
        "Reproducing that would violate copyright, so I can't do it.",
    ],
    "triggers for offensive language": [
        "I'm sorry, but I won't write offensive or hateful content.",
        "I can't help with that, because it would be disrespectful or hurtful to people.",
        "I won't produce insulting or offensive language about anyone.",
    ],
    "style and length limitations": [
        "I'm sorry, but that is far too long for me to write in one response.",
        "I can't produce something that large or in that form in a single answer.",
        "That request exceeds what I can generate here, but I can give a short overview.",
    ],
    "input modality limitations": [
        "I'm sorry, but I can only read text, so I can't see images, watch videos or listen to audio.",
        "I can't open files, images or recordings; I can only work with the text you type.",
        "As a text-only assistant, I'm unable to view or hear what you're referring to.",
    ],
    "output modality limitations": [
        "I'm sorry, but I can only reply with text, so I can't create images, audio or video.",
        "I can't draw, sing or produce files; I can only write text.",
        "As a text-only assistant, I can't generate pictures or sounds.",
    ],
    "temporal limitations": [
        "I'm sorry, but I don't have access to real-time information or events after my training.",
        "I can't know that, because I have no access to current news or live data.",
        "My knowledge stops at my training data, so I can't tell you about recent or future events.",
    ],
}


def refusal_message(category: str, subcategory: str, rng: random.Random) -> str:
    """A refusal fitting the subcategory (mostly) or the category (for variety)."""
    specific = _BY_SUBCATEGORY.get(subcategory, [])
    pool = specific if specific and rng.random() < 0.75 else _BY_CATEGORY[category]
    return rng.choice(pool)


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


def chat_examples(refusals: Sequence[dict], benign: Sequence[tuple[str, str]], everyday: Sequence,
                  follow_ups: Sequence[str], seed: int, n: int = 250) -> list[Example]:
    """Two-turn chats, so that one turn's decision does not decide the next: a benign request (or thanks) after a
    refused one, a follow-up after an answer, a request to refuse after an answer, and one after a refusal.
    ``refusals``: rows with category/subcategory/prompt; ``benign``: (prompt, the base model's answer);
    ``everyday``: everyday.Everyday items (their answer, when they have one, is taught too)."""
    rng = random.Random(seed + 11)
    out = []

    def refused_turn():
        row = rng.choice(refusals)
        return row, (("user", row["prompt"], None),
                     ("assistant", refusal_message(row["category"], row.get("subcategory", ""), rng), row["category"]))

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
    return out


def recipe_arguments(doc: str, **parser_kwargs) -> argparse.ArgumentParser:
    """The options every recipe script shares: where the CoCoNot files are, and how many threads to use."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], **parser_kwargs)
    p.add_argument("--original", required=True, help="CoCoNot original_dev.jsonl (should-not-comply prompts)")
    p.add_argument("--contrast", required=True, help="CoCoNot contrast_pref.jsonl (benign look-alikes, chosen answers)")
    p.add_argument("--threads", type=int, default=2)
    return p
