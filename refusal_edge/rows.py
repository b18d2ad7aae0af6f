"""Rows of a data file, whatever its format: CSV/TSV by extension, else JSON Lines (or one JSON array). Shared by
evaluation (``evaluate/data.py``), the CLI's ``--prompts`` files and the converter's training data."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator, Mapping

from .errors import RefusalEdgeError
from .text import clean_json


class DataError(RefusalEdgeError):
    """A data file cannot be read, or one of its rows is malformed (the message names file and line)."""


def read_rows(path: Path) -> Iterator[tuple[int, Mapping | str]]:
    """(line number, row mapping or the reason it is malformed).

    CSV/TSV by extension, else JSON Lines (a .json file holding one array is accepted too). Bytes that are not
    UTF-8 and lone surrogates from JSON escapes become U+FFFD (see ``refusal_edge.text``).
    """
    try:
        fh = open(path, encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    with fh:
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            yield from _csv_rows(fh, path, "\t" if suffix == ".tsv" else ",")
        elif suffix == ".json" and fh.read(1) == "[":
            fh.seek(0)
            yield from _json_array_rows(fh, path)
        else:
            fh.seek(0)
            yield from _jsonl_rows(fh)


def _jsonl_rows(fh) -> Iterator[tuple[int, Mapping | str]]:
    for number, text in enumerate(fh, 1):
        if not text.strip():
            continue
        try:
            row = clean_json(json.loads(text))
        except json.JSONDecodeError as exc:
            yield number, f"not valid JSON ({exc.msg}, column {exc.colno})"
            continue
        except RecursionError:
            yield number, "not valid JSON (nested too deeply)"
            continue
        yield number, row if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"


def _json_array_rows(fh, path: Path) -> Iterator[tuple[int, Mapping | str]]:
    try:
        rows = clean_json(json.load(fh))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise DataError(f"{path}: not valid JSON (nested too deeply)") from None
    for number, row in enumerate(rows, 1):  # "line" is the item number here
        yield number, row if isinstance(row, dict) else f"item {number} is not a JSON object"


def _csv_rows(fh, path: Path, delimiter: str) -> Iterator[tuple[int, Mapping | str]]:
    try:
        yield from _csv_rows_unchecked(fh, path, delimiter)
    except csv.Error as exc:  # a field over csv's limit (128 KiB), a NUL byte, ...
        raise DataError(f"{path}: not readable as CSV ({exc})") from None


def _csv_rows_unchecked(fh, path: Path, delimiter: str) -> Iterator[tuple[int, Mapping | str]]:
    reader = csv.reader(fh, delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise DataError(f"{path}: empty file, expected a header row")
    header = [h.strip() for h in header]
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield reader.line_num, f"{len(row)} columns, the header has {len(header)}"
            continue
        yield reader.line_num, dict(zip(header, row))
