"""Which tokens are the refusal tokens: discovered in the vocabulary, or named on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from refusal_edge.errors import MetadataError
from refusal_edge.metadata import CATEGORIES, RESPOND_TOKEN, RefusalSpec, category_token, discover, spec_from_tokens
from refusal_edge.policy import Policy

from .errors import ConversionError


def parse_categories(items: Sequence[str]) -> dict[str, str]:
    """``NAME=TOKEN`` pairs (``--category "Humanizing requests=[Humanizing requests]"``), in order."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, token = item.partition("=")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            raise ConversionError(f"--category {item!r}: expected NAME=TOKEN, e.g. \"refuse=[refuse]\"")
        if name in out:
            raise ConversionError(f"--category {name!r} is given twice")
        out[name] = token
    return out


def resolve_spec(
    tokens: Sequence[str],
    categories: Mapping[str, str] | None = None,
    respond: str | None = None,
    default_policy: str | Path | Mapping | None = None,
) -> RefusalSpec:
    """Explicit tokens when given (each must be one vocabulary entry), else the paper's tokens by discovery."""
    if categories or respond:
        if not categories:
            raise ConversionError("--respond needs at least one --category NAME=TOKEN (e.g. \"refuse=[refuse]\")")
        try:
            spec = spec_from_tokens(tokens, respond or RESPOND_TOKEN, categories)
        except MetadataError as exc:
            raise ConversionError(f"{exc}; refusal tokens must each be a single token (added to the tokenizer "
                                  "when the model was fine-tuned)") from None
    else:
        spec = discover(tokens)
        if spec is None:
            wanted = ", ".join([RESPOND_TOKEN, *(category_token(c) for c in CATEGORIES)])
            raise ConversionError(
                "no refusal tokens found in the vocabulary: expected [respond] with [refuse] or the five category "
                f"tokens ({wanted}). Name them with --respond TOKEN and --category NAME=TOKEN"
            )
    if default_policy is not None:
        if isinstance(default_policy, Mapping):
            policy = Policy.from_dict(default_policy, spec.category_names)
        else:
            policy = Policy.load(default_policy, spec.category_names)
        spec = spec.with_default_policy(policy.to_dict())
    return spec
