"""A window over a long conversation: its oldest turns left out so that the prompt, and room for the answer, fit
the context, instead of every later turn failing once the history outgrows it.

Never left out: system messages (wherever they stand) and the current (last) message. ``drop="turns"`` leaves out
whole turns (a user message and the assistant replies after it), for chat and the page; ``drop="messages"`` one
message at a time, as Ollama's ``chatPrompt`` does. The KV cache reuses the window's prefix up to the cut (the
system prompt); a caller that keeps the cut for its next turns (chat does) reuses the whole window again then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .errors import PromptTooLongError, RefusalEdgeError

DROP_UNITS = ("turns", "messages")


@dataclass(frozen=True)
class Window:
    messages: list[dict]  # what to send: the system messages, the turns kept, the current message
    dropped_turns: int  # whole turns left out, oldest first (with drop="messages": turns touched by the cut)
    dropped_messages: int  # messages left out: always the first ones after setting system messages aside
    prompt_tokens: int  # the window's prompt length
    n_ctx: int  # the context it was fitted to

    @property
    def notice(self) -> str | None:
        """One line for a user, or None when nothing was left out."""
        if not self.dropped_messages:
            return None
        n = self.dropped_turns
        return f"(dropped {n} earlier turn{'s' if n != 1 else ''} to fit the {self.n_ctx}-token context)"


def fit(model, messages, max_tokens: int = 0, *, n_ctx: int | None = None, drop: str = "turns", spare: int = 0,
        option: str = "n_ctx") -> Window:
    """The window of ``messages`` that fits ``n_ctx`` (default: the engine's context) with ``max_tokens`` of room
    for the answer, at most half the context (so that a budget as large as the context still leaves history in).
    The fewest turns are left out; when some must be, ``spare`` more tokens are freed if the history allows, so
    that the next turns fit without another cut and reuse the KV cache (a caller keeping the cut, as chat does).
    When even the system messages and the current message leave less room than asked, they are sent alone (the
    answer may stop early, finish reason "length"); when they do not fit at all, PromptTooLongError names
    ``option``, the way to raise the context in the caller's interface."""
    if drop not in DROP_UNITS:
        raise ValueError(f"drop must be one of {DROP_UNITS}, got {drop!r}")
    if max_tokens < 0 or spare < 0:
        raise ValueError(f"max_tokens and spare must be >= 0, got {max_tokens} and {spare}")
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    messages = list(messages)
    if not messages:
        raise RefusalEdgeError("no messages to answer")
    n_ctx = min(n_ctx or model.engine.n_ctx, model.engine.n_ctx)
    room = max(1, min(max_tokens, n_ctx // 2))  # the engine needs one free cell after the prompt in any case
    units = _units(messages[:-1], drop)
    lengths: dict[int, int] = {}

    def length(k: int) -> int:
        if k not in lengths:
            lengths[k] = len(model.prompt_tokens(_without(messages, units[:k])))
        return lengths[k]

    def fewest(reserve: int) -> int | None:
        """Fewest units left out for the prompt to leave ``reserve`` free: a binary search, as the prompt shrinks
        with every unit left out (a few tokenizations instead of one per turn of a long history)."""
        low, high = 0, len(units)
        if length(high) + reserve > n_ctx:
            return None
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if length(middle) + reserve <= n_ctx else (middle + 1, high)
        return high

    k = 0
    if length(0) + room > n_ctx:
        k = (spare and fewest(room + spare)) or fewest(room) or len(units)
    if length(k) >= n_ctx:
        what = "the current message" + (" with the system prompt" if _has_system(messages) else "")
        raise PromptTooLongError.counts(length(k), n_ctx, option, what=what if units else "the prompt")
    dropped = units[:k]
    return Window(_without(messages, dropped), dropped_turns=_turns(messages, dropped),
                  dropped_messages=sum(len(u) for u in dropped), prompt_tokens=length(k), n_ctx=n_ctx)


def _units(history: Sequence[Mapping], drop: str) -> list[list[int]]:
    """Indices of the droppable messages (all but system ones), grouped into the units left out together."""
    units: list[list[int]] = []
    for i, message in enumerate(history):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role == "system":
            continue
        if not units or drop == "messages" or role == "user":
            units.append([i])
        else:
            units[-1].append(i)
    return units


def _without(messages: list, units: Sequence[Sequence[int]]) -> list:
    left_out = {i for unit in units for i in unit}
    return [m for i, m in enumerate(messages) if i not in left_out]


def _turns(messages: list, units: Sequence[Sequence[int]]) -> int:
    """Turns (groups starting at a user message) that lost at least one message."""
    return len(_units([messages[i] for unit in units for i in unit], "turns"))


def _has_system(messages: list) -> bool:
    return any(isinstance(m, Mapping) and m.get("role") == "system" for m in messages)
