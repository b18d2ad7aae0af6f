"""The decision in response headers, for clients whose parsers drop unknown body fields (Ollama's Python client,
LangChain's ``include_response_headers``, proxies, ``curl -i``): every route that decides sends them, streams too,
since the decision is made before the first byte is.

- ``X-Refusal-Token``: the chosen decision token (``[respond]``, ``[Requests with safety concerns]``; empty when the
  model's own first token was ordinary text, under the ``natural`` rule);
- ``X-Refusal-Category``: the refusal category, empty for an answer;
- ``X-Refusal-Probability``: the summed probability of every refusal token (``Decision.refusal_probability``).

A call that decides several inputs (``/v1/moderations``, ``/v1/refusal/decisions``) lists one value per input, in
order, separated by commas; a batch whose three values would pass ``MAX_BYTES`` gets none (its body has them).
Header values are ASCII: a comma, ``%``, an outer space or any character outside printable ASCII in a token or
category name is percent-encoded (UTF-8), so ``urllib.parse.unquote`` of each item gives the name back.
"""

from __future__ import annotations

from typing import Sequence
from urllib.parse import quote

from ..decision import Decision

TOKEN = "X-Refusal-Token"
CATEGORY = "X-Refusal-Category"
PROBABILITY = "X-Refusal-Probability"
DECISION_HEADERS = (TOKEN, CATEGORY, PROBABILITY)  # what a browser page on an allowed origin may read (CORS)

# HTTP clients bound a response's header block (h11, under httpx and the OpenAI SDK: 16 KiB; browsers and proxies
# 8-64 KiB), so that a 256-input moderation call cannot make its own answer unreadable.
MAX_BYTES = 4096
_KEPT = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%,")


def decision_headers(decisions: Sequence[Decision]) -> dict[str, str]:
    """The three headers for one decision, or for a call's decisions in input order; none when they would pass
    ``MAX_BYTES`` (a long batch: its decisions are in the body)."""
    headers = {TOKEN: ",".join(_ascii(d.token if d.decision_token else "") for d in decisions),
               CATEGORY: ",".join(_ascii(d.category or "") for d in decisions),
               PROBABILITY: ",".join(repr(d.refusal_probability) for d in decisions)}
    return headers if sum(map(len, headers.values())) <= MAX_BYTES else {}


def _ascii(name: str) -> str:
    value = quote(name, safe=_KEPT)
    stripped = value.strip(" ")  # HTTP drops a value's outer spaces: keep them, encoded
    start = value.index(stripped) if stripped else len(value)
    return "%20" * start + stripped + "%20" * (len(value) - start - len(stripped))
