"""`refusal-edge train`'s data: CoCoNot-format rows -> SFT examples (decision token + answer), and the held-out split.

No torch here. Rows are read with the runtime's data-file reader (``refusal_edge.rows.read_rows``), so `train`
accepts exactly the files `eval` reads. Refusal messages and the stratified split are ``coconot``'s, which the
default model's recipe uses too.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from refusal_edge.rows import DataError, read_rows
from refusal_edge.metadata import CATEGORIES, REFUSE_TOKEN, RESPOND_TOKEN, category_token

from .coconot import refusal_message, stratified_split
from .errors import TrainError

RESPOND = "respond"
REFUSE = "refuse"  # the decision of every refusal row with --tokens binary
ANSWER_FIELDS = ("response", "chosen")  # CoCoNot's contrast set calls its compliant answer "chosen"


def decision_tokens(kind: str) -> tuple[str, ...]:
    """The tokens the model learns, respond first: the paper's six, or ``[respond]``/``[refuse]``."""
    if kind == "categories":
        return (RESPOND_TOKEN, *(category_token(c) for c in CATEGORIES))
    if kind == "binary":
        return (RESPOND_TOKEN, REFUSE_TOKEN)
    raise TrainError(f"--tokens {kind!r}: use categories or binary")


@dataclass(frozen=True)
class Row:
    """One prompt as read: ``kind`` is original (should refuse), contrast (benign look-alike) or chat."""

    prompt: str
    kind: str
    category: str | None
    subcategory: str
    response: str | None  # None: to be written (a refusal message, or the base model's own answer)
    where: str  # file:line, for error messages
    raw: dict

    @property
    def should_refuse(self) -> bool:
        return self.kind == "original"


@dataclass(frozen=True)
class Example:
    """One SFT example: the answer starts with the token of ``decision`` (respond, refuse or a category)."""

    prompt: str
    decision: str
    response: str
    where: str


def read_training_rows(path: str | Path, kind: str) -> list[Row]:
    """Every row of one file, checked: a prompt string, and for original rows a known CoCoNot category."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"data file not found: {path}")
    rows = []
    try:
        for line, row in read_rows(path):
            where = f"{path}:{line}"
            if isinstance(row, str):
                raise TrainError(f"{where}: {row}")
            prompt = row.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise TrainError(f"{where}: no 'prompt' string (CoCoNot rows have prompt, category, subcategory)")
            category = row.get("category")
            if kind == "original" and category is None:
                raise TrainError(f"{where}: no 'category' field: a should-refuse row needs one of "
                                 f"{', '.join(CATEGORIES)}")
            if category is not None and category not in CATEGORIES:
                raise TrainError(f"{where}: unknown category {category!r}; CoCoNot's are {', '.join(CATEGORIES)}")
            answer = next((row[k] for k in ANSWER_FIELDS if isinstance(row.get(k), str) and row[k].strip()), None)
            rows.append(Row(prompt, kind, category, str(row.get("subcategory") or ""), answer, where, dict(row)))
    except DataError as exc:
        raise TrainError(str(exc)) from None
    if not rows:
        raise TrainError(f"{path}: no rows")
    return rows


@dataclass(frozen=True)
class Split:
    train: list[Row]
    heldout: list[Row]


def split_rows(original: Sequence[Row], contrast: Sequence[Row], chat: Sequence[Row], heldout: float,
               seed: int) -> Split:
    """Held-out prompts drawn from every (category, subcategory) stratum of the original and contrast files
    alike (seeded); chat pairs are training data only (they carry no refusal label)."""
    train, held = [], []
    for rows in (original, contrast):
        by_id = {id(r): r for r in rows}
        stand_ins = [{"category": r.category or "", "subcategory": r.subcategory, "prompt": r.prompt,
                      "id": f"{r.prompt}\x00{r.where}", "_key": id(r)} for r in rows]
        t, h = stratified_split(stand_ins, heldout, seed)
        train += [by_id[s["_key"]] for s in t]
        held += [by_id[s["_key"]] for s in h]
    if heldout > 0 and (not any(r.should_refuse for r in held) or all(r.should_refuse for r in held)):
        raise TrainError("the held-out split needs should-refuse and contrast prompts: give more rows "
                         "(every category and subcategory with at least two prompts) or raise --heldout")
    return Split(train + list(chat), held)


def build_examples(rows: Sequence[Row], answers: dict[str, str], tokens: str, seed: int) -> list[Example]:
    """Original rows -> their category token (``refuse`` with binary tokens) and their refusal message or a
    written one; other rows -> ``respond`` and their answer, else the base model's own (``answers``)."""
    rng = random.Random(seed)
    out = []
    for r in rows:
        if r.should_refuse:
            text = r.response or refusal_message(r.category, r.subcategory, rng)
            out.append(Example(r.prompt, REFUSE if tokens == "binary" else r.category, text, r.where))
        else:
            text = r.response if r.response is not None else answers.get(r.prompt)
            if text is None:
                raise TrainError(f"{r.where}: no answer and none distilled from the base model")
            out.append(Example(r.prompt, RESPOND, text, r.where))
    return out


def write_heldout(split: Split, folder: Path) -> tuple[Path, Path]:
    """The held-out rows as they were read (CoCoNot JSONL), for `calibrate` and `eval`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "original.jsonl", folder / "contrast.jsonl"
    for path, refuse in zip(paths, (True, False)):
        with open(path, "w", encoding="utf-8") as fh:
            for r in split.heldout:
                if r.should_refuse == refuse:
                    fh.write(json.dumps(r.raw, ensure_ascii=False) + "\n")
    return paths
