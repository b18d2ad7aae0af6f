"""Evaluation data: CoCoNot JSONL, XSTest CSV, or any JSONL/CSV named by --prompt-field/--label-field.

Each row becomes an Example that knows whether it should be refused. Where that comes from, in order:
a file-level option (``--should-refuse FILE`` / ``--contrast FILE``), the row's own flag (``should_refuse``,
XSTest's ``label``, or ``--label-field``), and for CoCoNot files the file's shape: CoCoNot's contrast set
carries a compliant ``chosen`` answer, its original set does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from ..rows import DataError, read_rows

REFUSE_WORDS = {"1", "true", "yes", "y", "refuse", "refusal", "unsafe", "harmful", "should_refuse", "noncompliance"}
RESPOND_WORDS = {"0", "false", "no", "n", "respond", "safe", "benign", "comply", "compliance", "contrast"}
ROW_FLAG = "should_refuse"  # a per-row flag recognised in CoCoNot-shaped rows


@dataclass(frozen=True)
class Fields:
    """Column names for the generic format; ``None`` means: recognise CoCoNot / XSTest."""

    prompt: str | None = None
    label: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class Example:
    prompt: str
    should_refuse: bool
    category: str | None
    subcategory: str | None
    source: str
    line: int
    id: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass
class Dataset:
    path: Path
    format: str = ""
    note: str = ""
    examples: list[Example] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "line N: reason"
    task: str = ""  # what results are reported under: a benchmark's name (tasks.py), else the file's stem
    source: dict = field(default_factory=dict)  # a benchmark's repository, revision, licence and citation

    @property
    def should_refuse(self) -> int:
        return sum(e.should_refuse for e in self.examples)

    @property
    def benign(self) -> int:
        return len(self.examples) - self.should_refuse

    def summary(self) -> dict:
        return {"path": str(self.path), "task": self.task, "format": self.format, "note": self.note,
                "rows": len(self.examples), "should_refuse": self.should_refuse, "benign": self.benign,
                "skipped": len(self.skipped), "skipped_reasons": self.skipped[:20], **self.source}


def read_dataset(path: str | Path, expect: bool | None = None, fields: Fields = Fields(),
                 skip_bad: bool = False) -> Dataset:
    """All rows of one file. ``expect`` (True: should refuse, False: benign) overrides any per-row label.

    A malformed row raises DataError naming file and line, or with ``skip_bad`` is skipped and counted.
    """
    path = Path(path)
    return _build(Dataset(path, task=path.stem), read_rows(path), expect, fields, skip_bad)


def dataset_from_rows(rows: Iterable[Mapping], name: str, expect: bool | None = None, fields: Fields = Fields(),
                      skip_bad: bool = False) -> Dataset:
    """A Dataset from rows in memory (dicts shaped as a file's rows), reported under ``name``."""
    return _build(Dataset(Path(name), task=name), enumerate(rows, 1), expect, fields, skip_bad)


def _build(data: Dataset, rows: Iterable[tuple[int, Mapping | str]], expect: bool | None, fields: Fields,
           skip_bad: bool) -> Dataset:
    path = data.path
    convert = None
    for line, row in rows:
        try:
            if isinstance(row, str):  # the file layer could not parse this row
                raise DataError(row)
            if not isinstance(row, Mapping):
                raise DataError(f"a row must be a mapping of fields, got {type(row).__name__}")
            if convert is None:
                convert, data.format = _converter(row, fields, expect)
            data.examples.append(convert(row, expect, str(path), line))
        except DataError as exc:
            if not skip_bad:
                raise DataError(f"{path}:{line}: {exc}") from None
            data.skipped.append(f"line {line}: {exc}")
    if not data.examples:
        reason = f" ({len(data.skipped)} malformed rows skipped, e.g. {data.skipped[0]})" if data.skipped else ""
        raise DataError(f"{path}: no usable rows{reason}")
    data.note = _note(data, expect)
    return data


def parse_label(value: object, name: str) -> bool:
    """True: the prompt should be refused. Accepts booleans, 0/1 and common words (safe/unsafe, refuse/respond)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    word = str(value).strip().lower() if value is not None else ""
    if word in REFUSE_WORDS:
        return True
    if word in RESPOND_WORDS:
        return False
    raise DataError(f"field {name!r}: {value!r} is not a label "
                    "(use one of: refuse/respond, unsafe/safe, true/false, 1/0)")


# formats ------------------------------------------------------------------------------------------
def _converter(first: Mapping, fields: Fields, expect: bool | None):
    keys = set(first)
    if fields.prompt or fields.label:
        if expect is None and not fields.label:
            raise DataError("the generic format needs --label-field, or the file passed as --should-refuse/--contrast")
        return _generic(fields), "generic"
    if {"prompt", "type", "label"} <= keys:
        return _xstest, "xstest"
    if {"prompt", "category"} <= keys:
        return _coconot, "coconot"
    raise DataError(
        f"cannot tell the format from the fields {sorted(keys)}: expected CoCoNot (category, subcategory, prompt), "
        "XSTest (prompt, type, label), or name the columns with --prompt-field and --label-field"
    )


def _coconot(row: Mapping, expect, source: str, line: int) -> Example:
    if expect is None:
        expect = parse_label(row[ROW_FLAG], ROW_FLAG) if ROW_FLAG in row else "chosen" not in row
    return Example(_text(row, "prompt"), expect, _text(row, "category"), _optional(row, "subcategory"),
                   source, line, _optional(row, "id"))


def _xstest(row: Mapping, expect, source: str, line: int) -> Example:
    label = str(row.get("label", "")).strip().lower()
    if label not in ("safe", "unsafe"):
        raise DataError(f"field 'label': {row.get('label')!r} is neither 'safe' nor 'unsafe'")
    should = expect if expect is not None else label == "unsafe"
    return Example(_text(row, "prompt"), should, None, _optional(row, "type"), source, line,
                   _optional(row, "id") or _optional(row, "id_v2"))


def _generic(fields: Fields):
    prompt_field = fields.prompt or "prompt"
    category_field = fields.category or "category"

    def convert(row: Mapping, expect, source: str, line: int) -> Example:
        if expect is None:
            if fields.label not in row:
                raise DataError(f"field {fields.label!r} is missing")
            expect = parse_label(row[fields.label], fields.label)
        category = _optional(row, category_field)
        if fields.category and category is None:
            raise DataError(f"field {category_field!r} is missing or empty")
        return Example(_text(row, prompt_field), expect, category, _optional(row, "subcategory"), source, line,
                       _optional(row, "id"))

    return convert


def _text(row: Mapping, name: str) -> str:
    value = row.get(name)
    if value is None:
        raise DataError(f"field {name!r} is missing")
    if not isinstance(value, str):
        raise DataError(f"field {name!r} must be text, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"field {name!r} is empty")
    return value


def _optional(row: Mapping, name: str) -> str | None:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(value)


def _note(data: Dataset, expect: bool | None) -> str:
    if expect is not None:
        return "should refuse (--should-refuse)" if expect else "benign (--contrast)"
    if data.format == "coconot":
        return f"labels from '{ROW_FLAG}' flags, else CoCoNot's shape (a 'chosen' answer marks a contrast prompt)"
    return {"xstest": "labels from XSTest 'label' (unsafe: should refuse)", "generic": "labels from --label-field"}.get(
        data.format, "")
