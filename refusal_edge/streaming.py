"""Turning sampled tokens into text: UTF-8 safe across token boundaries, stop strings held back until certain."""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

from .decision import Decision, assistant_message


class TextAssembler:
    """Feeds token bytes in, returns text that is final: never half a character, never part of a stop string."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in stop if s]
        self._held = ""
        self.stopped = False

    def push(self, data: bytes) -> str:
        text = self._decoder.decode(data)
        if not self._stops:
            return text
        self._held += text
        cut = min((i for i in (self._held.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self._held, self.stopped = self._held[:cut], "", True
            return out
        keep = self._longest_stop_prefix_suffix()
        out = self._held[: len(self._held) - keep]
        self._held = self._held[len(self._held) - keep :]
        return out

    def finish(self) -> str:
        """Whatever is still held once generation ends without a stop string."""
        if self.stopped:
            return ""
        tail = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        if self._stops:
            cut = min((i for i in (tail.find(s) for s in self._stops) if i >= 0), default=-1)
            if cut >= 0:
                self.stopped = True
                return tail[:cut]
        return tail

    def _longest_stop_prefix_suffix(self) -> int:
        held = self._held
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(held)), best, -1):
                if held.endswith(stop[:k]):
                    best = k
                    break
        return best


@dataclass(frozen=True)
class Chunk:
    """A piece of the answer; the last one of a stream carries ``finish_reason`` ("stop" or "length")."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0
    prompt_tokens: int | None = None  # the answering engine's prompt length, where it is not the decision model's


@dataclass(frozen=True)
class GenerationResult:
    decision: Decision
    text: str
    finish_reason: str
    completion_tokens: int
    generation_ms: float

    @property
    def message(self) -> dict:
        """The assistant turn to append to the history; it remembers its decision token for the next turn."""
        return assistant_message(self.text, self.decision)


def collect(events: Iterable) -> GenerationResult:
    """A stream's events (the Decision, then Chunks) as one GenerationResult, timed from the first event asked."""
    t0 = time.perf_counter()
    decision, parts, last = None, [], Chunk("", "stop")
    for event in events:
        if isinstance(event, Decision):
            decision = event
        else:
            parts.append(event.text)
            last = event
    return GenerationResult(decision, "".join(parts), last.finish_reason or "stop", last.completion_tokens,
                            (time.perf_counter() - t0) * 1e3)
