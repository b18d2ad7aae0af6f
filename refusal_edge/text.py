"""One policy for text that is not valid Unicode: it is repaired where it enters, never a crash or a refusal.

Undecodable bytes (stdin, prompt and data files) are decoded with ``errors="replace"``, and lone surrogates (a
JSON ``"\\ud800"`` escape, or command-line bytes Python smuggled in with ``surrogateescape``) are replaced by
U+FFFD, the replacement character, before any text is tokenized, stored or printed.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD: always encodable as UTF-8."""
    return _SURROGATE.sub(REPLACEMENT, text)


def clean_json(value: object) -> object:
    """``clean`` applied to every string (keys included) of a parsed JSON value."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean_json(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value
